// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "PromptTune",
    products: [
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "TensorIO", targets: ["TensorIO"]),
        .library(name: "CLIP", targets: ["CLIP"]),
        .library(name: "Imaging", targets: ["Imaging"]),
        .executable(name: "prompttune", targets: ["prompttune"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: Public targets (one-way: TensorCore <- TensorIO <- CLIP; Imaging beside; CLI on top)
        .target(name: "TensorCore", dependencies: ["COpenBLAS", "CKernels"]),
        .target(name: "TensorIO", dependencies: ["TensorCore"]),
        .target(name: "CLIP", dependencies: ["TensorCore", "TensorIO"], resources: [.copy("Resources/bpe_simple_vocab_16e6.txt")]),
        .target(name: "Imaging", dependencies: ["TensorCore", "CPNG"]),
        .executableTarget(name: "prompttune", dependencies: [
            "TensorCore", "TensorIO", "CLIP", "Imaging",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Implementation details: C libraries and kernels
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .target(name: "CKernels"),

        // MARK: Tests mirror the library targets
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"]),
        .testTarget(name: "TensorIOTests", dependencies: ["TensorIO", "TensorCore"]),
        .testTarget(name: "CLIPTests", dependencies: ["CLIP", "TensorCore"]),
        .testTarget(name: "ImagingTests", dependencies: ["Imaging", "TensorCore"]),
    ]
)
