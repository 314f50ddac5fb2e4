// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "PromptTune",
    products: [
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "TensorIO", targets: ["TensorIO"]),
        .library(name: "CLIP", targets: ["CLIP"]),
        .library(name: "PromptLearning", targets: ["PromptLearning"]),
        .library(name: "Imaging", targets: ["Imaging"]),
        .library(name: "Datasets", targets: ["Datasets"]),
        .library(name: "Features", targets: ["Features"]),
        .library(name: "Analysis", targets: ["Analysis"]),
        .library(name: "Experiments", targets: ["Experiments"]),
        .library(name: "Cluster", targets: ["Cluster"]),
        .library(name: "Pretraining", targets: ["Pretraining"]),
        .executable(name: "prompttune", targets: ["prompttune"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // MARK: Public targets. One-way: TensorCore <- TensorIO <- CLIP <- PromptLearning (methods);
        // Imaging <- Datasets beside them; Features (the image-feature cache) joins CLIP and data;
        // the CLI on top.
        .target(name: "TensorCore", dependencies: ["CDNNL", "COpenBLAS", "CKernels"]),
        .target(name: "TensorIO", dependencies: ["TensorCore", "CZlib"]),
        .target(name: "CLIP", dependencies: ["TensorCore", "TensorIO"], resources: [.copy("Resources/bpe_simple_vocab_16e6.txt")]),
        .target(name: "PromptLearning", dependencies: ["TensorCore", "TensorIO", "CLIP"]),
        .target(name: "Imaging", dependencies: ["TensorCore", "CPNG", "CJPEG", "CCodecs"]),
        .target(name: "Datasets", dependencies: ["TensorCore", "TensorIO", "Imaging", "CZlib"]),
        .target(name: "Features", dependencies: ["TensorCore", "TensorIO", "CLIP", "Imaging", "Datasets"]),
        // Analysis (neural-collapse measures, statistics, the linear probe) beside the model.
        .target(name: "Analysis", dependencies: ["TensorCore"]),
        // Experiments: runs, grids, protocols, recipes and reports, above methods, data and analysis.
        .target(name: "Experiments", dependencies: [
            "TensorCore", "TensorIO", "CLIP", "PromptLearning", "Datasets", "Features", "Analysis",
            .product(name: "Yams", package: "Yams"),
        ]),
        // Cluster: grids as Slurm job arrays (submission, status), above the experiments.
        .target(name: "Cluster", dependencies: ["TensorIO", "Experiments"]),
        // Pretraining: contrastive training of CLIP itself (the demo model), beside the methods.
        .target(name: "Pretraining", dependencies: ["TensorCore", "TensorIO", "CLIP", "Imaging", "Datasets"]),
        .executableTarget(name: "prompttune", dependencies: [
            "TensorCore", "TensorIO", "CLIP", "PromptLearning", "Imaging", "Datasets", "Features", "Analysis", "Experiments", "Cluster", "Pretraining",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Implementation details: C libraries and kernels
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // oneDNN (GEMM; Debian ships no pkg-config file for it, its headers are in /usr/include).
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg62-turbo-dev"])]),
        .target(name: "CCodecs", dependencies: ["CJPEG", "CPNG"]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "CKernels"),

        // MARK: Tests mirror the library targets
        // Helpers shared by the test targets (repoRoot, temporary folders, gradient checks,
        // assertions). A plain target because test targets cannot depend on each other; no product
        // exposes it.
        .target(name: "TestSupport", dependencies: ["TensorCore"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "TestSupport"]),
        .testTarget(name: "TensorIOTests", dependencies: ["TensorIO", "TensorCore", "TestSupport"]),
        .testTarget(name: "CLIPTests", dependencies: ["CLIP", "TensorCore", "TestSupport"]),
        .testTarget(name: "PromptLearningTests", dependencies: ["PromptLearning", "CLIP", "TensorIO", "TensorCore", "Features", "TestSupport"]),
        .testTarget(name: "ImagingTests", dependencies: ["Imaging", "TensorCore", "TestSupport"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "TensorIO", "TensorCore", "TestSupport"]),
        .testTarget(name: "FeaturesTests", dependencies: ["Features", "Datasets", "CLIP", "Imaging", "TensorIO", "TensorCore", "TestSupport"]),
        .testTarget(name: "AnalysisTests", dependencies: ["Analysis", "TensorCore", "TestSupport"]),
        .testTarget(name: "PretrainingTests", dependencies: ["Pretraining", "CLIP", "TensorIO", "TensorCore", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["Experiments", "Analysis", "PromptLearning", "Datasets", "Features", "CLIP", "TensorCore", "TestSupport"]),
        .testTarget(name: "ExperimentsTests", dependencies: ["Experiments", "Analysis", "PromptLearning", "Datasets", "Features", "TensorCore", "TestSupport"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Experiments", "TestSupport"]),
        .testTarget(name: "prompttuneTests", dependencies: ["prompttune", "Features", "Cluster", "Experiments", "TestSupport"]),
    ]
)
