import Foundation

/// Every dataset PromptTune reads: the 11 of the CoOp papers, the four ImageNet variants of their
/// domain-generalisation tables, the long-tailed benchmarks (ImageNet-LT, Places-LT, CIFAR-100-LT at
/// imbalance ratios 100, 50 and 10), any folder of class subfolders, and Fashion-MNIST (the built-in
/// default, from Debian's `dataset-fashion-mnist` package).
///
/// Raw values are the CLI names: CoOp's config file names (`configs/datasets/<name>.yaml`), snake
/// case. ``init(parsing:)`` also accepts CoOp's `DATASET.NAME` values (`OxfordFlowers`,
/// `DescribableTextures`), the papers' names (`Flowers102`, `ImageNet-Sketch`) and CoOp's folder
/// names (`caltech-101`, `imagenet-adversarial`), in any case, with `-`, `_` or spaces.
public enum DatasetName: String, CaseIterable, Sendable, Codable {
    case imageNet = "imagenet"
    case caltech101 = "caltech101"
    case oxfordPets = "oxford_pets"
    case stanfordCars = "stanford_cars"
    case flowers102 = "oxford_flowers"
    case food101 = "food101"
    case fgvcAircraft = "fgvc_aircraft"
    case sun397 = "sun397"
    case dtd = "dtd"
    case euroSAT = "eurosat"
    case ucf101 = "ucf101"
    case imageNetV2 = "imagenetv2"
    case imageNetSketch = "imagenet_sketch"
    case imageNetA = "imagenet_a"
    case imageNetR = "imagenet_r"
    case imageNetLT = "imagenet_lt"
    case placesLT = "places_lt"
    /// CIFAR-100-LT at imbalance ratio 100 (LIFT's `cifar100_ir100`), the usual one.
    case cifar100LT = "cifar100_lt"
    case cifar100LT50 = "cifar100_lt_r50"
    case cifar100LT10 = "cifar100_lt_r10"
    case imageFolder = "imagefolder"
    case fashionMNIST = "fashion_mnist"

    /// The 11 datasets of CoOp / CoCoOp / MaPLe's few-shot and base-to-novel tables, in their order.
    public static let coopEleven: [DatasetName] = [
        .imageNet, .caltech101, .oxfordPets, .stanfordCars, .flowers102, .food101, .fgvcAircraft,
        .sun397, .dtd, .euroSAT, .ucf101,
    ]

    /// The ImageNet variants (test sets only) of the domain-generalisation tables.
    public static let imageNetVariants: [DatasetName] = [.imageNetV2, .imageNetSketch, .imageNetA, .imageNetR]

    /// The long-tailed benchmarks (METHODS.md section 4): trained on their long-tailed train split,
    /// tested on their balanced test split.
    public static let longTailed: [DatasetName] = [.imageNetLT, .placesLT, .cifar100LT, .cifar100LT50, .cifar100LT10]

    public var isLongTailed: Bool { DatasetName.longTailed.contains(self) }

    /// CIFAR-100-LT's imbalance ratio (largest over smallest class: 100, 50, 10; the imbalance
    /// factor of LIFT's rule is its inverse); nil for every other dataset.
    public var imbalanceRatio: Int? {
        switch self {
        case .cifar100LT: return 100
        case .cifar100LT50: return 50
        case .cifar100LT10: return 10
        default: return nil
        }
    }

    /// OLTR's split-file prefix (`ImageNet_LT`, `Places_LT`: `<prefix>_{train,val,test}.txt`).
    public var oltrPrefix: String? {
        switch self {
        case .imageNetLT: return "ImageNet_LT"
        case .placesLT: return "Places_LT"
        default: return nil
        }
    }

    /// Parses a CLI name, CoOp name, paper name or CoOp folder name; nil if none matches.
    public init?(parsing text: String) {
        let key = DatasetName.normalized(text)
        if let hit = DatasetName.allCases.first(where: { DatasetName.normalized($0.rawValue) == key }) {
            self = hit
            return
        }
        if let hit = DatasetName.allCases.first(where: { $0.aliases.contains { DatasetName.normalized($0) == key } }) {
            self = hit
            return
        }
        return nil
    }

    static func normalized(_ s: String) -> String {
        String(s.lowercased().unicodeScalars.filter { !"-_ ./".unicodeScalars.contains($0) }.map(Character.init))
    }

    /// Other spellings ``init(parsing:)`` accepts.
    public var aliases: [String] {
        var names = [displayName]
        if let c = coopName { names.append(c) }
        // The three CIFAR-100-LT ratios share one folder, whose name means the usual ratio, 100.
        if let f = folder, self != .cifar100LT50, self != .cifar100LT10 { names.append(f) }
        switch self {
        case .flowers102: names.append("flowers")
        case .imageFolder: names.append("image_folder")
        case .cifar100LT: names += ["cifar100_lt_r100", "cifar100_ir100", "CIFAR-100-LT"]
        case .cifar100LT50: names.append("cifar100_ir50")
        case .cifar100LT10: names.append("cifar100_ir10")
        case .imageNetLT: names.append("ImageNet-LT")
        case .placesLT: names.append("Places-LT")
        default: break
        }
        return names
    }

    /// The name in the papers' tables (`Flowers102`, `DTD`); `DatasetSplits.name`.
    public var displayName: String {
        switch self {
        case .imageNet: return "ImageNet"
        case .caltech101: return "Caltech101"
        case .oxfordPets: return "OxfordPets"
        case .stanfordCars: return "StanfordCars"
        case .flowers102: return "Flowers102"
        case .food101: return "Food101"
        case .fgvcAircraft: return "FGVCAircraft"
        case .sun397: return "SUN397"
        case .dtd: return "DTD"
        case .euroSAT: return "EuroSAT"
        case .ucf101: return "UCF101"
        case .imageNetV2: return "ImageNetV2"
        case .imageNetSketch: return "ImageNetSketch"
        case .imageNetA: return "ImageNetA"
        case .imageNetR: return "ImageNetR"
        case .imageNetLT: return "ImageNetLT"
        case .placesLT: return "PlacesLT"
        case .cifar100LT: return "CIFAR100LT"
        case .cifar100LT50: return "CIFAR100LT-r50"
        case .cifar100LT10: return "CIFAR100LT-r10"
        case .imageFolder: return "ImageFolder"
        case .fashionMNIST: return "FashionMNIST"
        }
    }

    /// CoOp's `DATASET.NAME` (its Dassl registry name, also the key of its `CUSTOM_TEMPLATES`);
    /// nil for the two datasets CoOp does not have.
    public var coopName: String? {
        switch self {
        case .flowers102: return "OxfordFlowers"
        case .dtd: return "DescribableTextures"
        case .imageFolder, .fashionMNIST, .imageNetLT, .placesLT, .cifar100LT, .cifar100LT50, .cifar100LT10: return nil
        default: return displayName
        }
    }

    /// The dataset's folder under the data root (CoOp's `dataset_dir`). nil for ``imageFolder``,
    /// whose root is the image folder itself. The three CIFAR-100-LT ratios share the folder the
    /// CIFAR-100 python archive unpacks to (torchvision's `root/cifar-100-python`).
    public var folder: String? {
        switch self {
        case .imageNet: return "imagenet"
        case .caltech101: return "caltech-101"
        case .oxfordPets: return "oxford_pets"
        case .stanfordCars: return "stanford_cars"
        case .flowers102: return "oxford_flowers"
        case .food101: return "food-101"
        case .fgvcAircraft: return "fgvc_aircraft"
        case .sun397: return "sun397"
        case .dtd: return "dtd"
        case .euroSAT: return "eurosat"
        case .ucf101: return "ucf101"
        case .imageNetV2: return "imagenetv2"
        case .imageNetSketch: return "imagenet-sketch"
        case .imageNetA: return "imagenet-adversarial"
        case .imageNetR: return "imagenet-rendition"
        case .imageNetLT: return "imagenet_lt"
        case .placesLT: return "places_lt"
        case .cifar100LT, .cifar100LT50, .cifar100LT10: return "cifar-100-python"
        case .imageFolder: return nil
        case .fashionMNIST: return "fashion-mnist"
        }
    }

    /// The folder image paths are relative to, inside ``folder`` (CoOp's `image_dir`; empty for
    /// StanfordCars, whose split paths start with `cars_train/` or `cars_test/`). For ImageNet the
    /// paths start with `train/` or `val/`.
    public var imageSubfolder: String {
        switch self {
        case .imageNet, .oxfordPets, .food101, .fgvcAircraft, .dtd, .imageNetSketch, .imageNetLT, .placesLT: return "images"
        case .caltech101: return "101_ObjectCategories"
        case .stanfordCars, .imageFolder, .fashionMNIST, .cifar100LT, .cifar100LT50, .cifar100LT10: return ""
        case .flowers102: return "jpg"
        case .sun397: return "SUN397"
        case .euroSAT: return "2750"
        case .ucf101: return "UCF-101-midframes"
        case .imageNetV2: return "imagenetv2-matched-frequency-format-val"
        case .imageNetA: return "imagenet-a"
        case .imageNetR: return "imagenet-r"
        }
    }

    /// CoOp's fixed split file (`split_zhou_<CoOpName>.json`, in ``folder``); nil for the datasets
    /// read otherwise (ImageNet and its variants from folders, FGVCAircraft from its own txt files).
    public var splitFile: String? {
        switch self {
        case .caltech101, .oxfordPets, .stanfordCars, .flowers102, .food101, .sun397, .dtd, .euroSAT, .ucf101:
            return "split_zhou_\(coopName!).json"
        default: return nil
        }
    }

    /// The number of classes (METHODS.md section 5; ImageNet-A and -R use 200-class subsets). nil for
    /// ``imageFolder``.
    public var classCount: Int? {
        switch self {
        case .imageNet, .imageNetV2, .imageNetSketch, .imageNetLT: return 1000
        case .caltech101, .fgvcAircraft, .cifar100LT, .cifar100LT50, .cifar100LT10: return 100
        case .placesLT: return 365
        case .oxfordPets: return 37
        case .stanfordCars: return 196
        case .flowers102: return 102
        case .food101, .ucf101: return 101
        case .sun397: return 397
        case .dtd: return 47
        case .euroSAT, .fashionMNIST: return 10
        case .imageNetA, .imageNetR: return 200
        case .imageFolder: return nil
        }
    }

    /// The hand-written zero-shot template (CoOp's `CUSTOM_TEMPLATES`), `{}` for the class name.
    public var template: String {
        switch self {
        case .oxfordPets: return "a photo of a {}, a type of pet."
        case .flowers102: return "a photo of a {}, a type of flower."
        case .food101: return "a photo of {}, a type of food."
        case .fgvcAircraft: return "a photo of a {}, a type of aircraft."
        case .dtd: return "{} texture."
        case .euroSAT: return "a centered satellite photo of {}."
        case .ucf101: return "a photo of a person doing {}."
        default: return "a photo of a {}."
        }
    }

    /// True for the ImageNet variants, which CoOp uses for testing only: their splits have only `test`.
    public var isTestOnly: Bool { DatasetName.imageNetVariants.contains(self) }

    /// What must exist inside ``folder`` (CoOp's DATASETS.md), for messages and `prompttune datasets`.
    public var expectedContents: [String] {
        let images = imageSubfolder.isEmpty ? [] : [imageSubfolder + "/"]
        switch self {
        case .imageNet: return ["images/train/<wnid>/", "images/val/<wnid>/", "classnames.txt"]
        case .fgvcAircraft:
            return ["images/", "variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt"]
        case .stanfordCars: return ["cars_train/", "cars_test/", splitFile!]
        case .imageNetV2: return [imageSubfolder + "/0/ ... /999/", "classnames.txt"]
        case .imageNetSketch, .imageNetA, .imageNetR: return [imageSubfolder + "/<wnid>/", "classnames.txt"]
        case .imageFolder: return ["<class>/<image>", "or train/<class>/, val/<class>/, test/<class>/"]
        case .imageNetLT:
            return ["images/train/<wnid>/", "images/val/<wnid>/", "ImageNet_LT_train.txt", "ImageNet_LT_test.txt",
                    "ImageNet_LT_val.txt (optional)", "classnames.txt"]
        case .placesLT:
            return ["images/ (the Places365 root the split files' paths start in)", "Places_LT_train.txt", "Places_LT_test.txt",
                    "Places_LT_val.txt (optional)", "categories_places365.txt"]
        case .cifar100LT, .cifar100LT50, .cifar100LT10: return CIFAR100LT.fileNames
        case .fashionMNIST: return FashionMNIST.fileNames.map { $0 + ".gz" }
        default: return images + [splitFile!]
        }
    }

    /// Where to get what CoOp's DATASETS.md says to download for the split file or class names.
    var downloadHint: String? {
        switch self {
        case .imageNet, .imageNetV2, .imageNetSketch, .imageNetA, .imageNetR:
            return "classnames.txt (`<wnid> <class name>` per line) is CoOp's, from https://drive.google.com/file/d/1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF/view; the variants use a copy of imagenet/classnames.txt"
        case .caltech101: return gdrive("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN")
        case .oxfordPets: return gdrive("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs")
        case .stanfordCars: return gdrive("1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT")
        case .flowers102: return gdrive("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT")
        case .food101: return gdrive("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl")
        case .sun397: return gdrive("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq")
        case .dtd: return gdrive("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x")
        case .euroSAT: return gdrive("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o")
        case .ucf101: return gdrive("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y")
        case .fgvcAircraft:
            return "the txt files come with https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz (its data/ folder, renamed fgvc_aircraft/)"
        case .fashionMNIST: return "install them with `apt-get install dataset-fashion-mnist` (to /usr/share/datasets/fashion-mnist)"
        case .imageNetLT:
            return "OLTR's split files ImageNet_LT_{train,val,test}.txt are linked from the README of https://github.com/zhmiao/OpenLongTailRecognition-OLTR (also in shijxcs/LIFT, datasets/ImageNet_LT/); classnames.txt is CoOp's imagenet/classnames.txt (copy or link it); images/ is the ImageNet-2012 folder holding train/ and val/ (CoOp's imagenet/images: `ln -s ../imagenet/images imagenet_lt/images`)"
        case .placesLT:
            return "OLTR's split files Places_LT_{train,val,test}.txt are linked from the README of https://github.com/zhmiao/OpenLongTailRecognition-OLTR (also in shijxcs/LIFT, datasets/Places_LT/); categories_places365.txt comes with Places365's development kit (http://places2.csail.mit.edu/download.html, filelist_places365-standard.tar); images/ is the Places365-Standard folder the split files' paths start in (link it)"
        case .cifar100LT, .cifar100LT50, .cifar100LT10:
            return "they are the CIFAR-100 python version, https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked in the data root (torchvision's CIFAR100(root, download=True) puts them there too)"
        case .imageFolder: return nil
        }
    }

    private func gdrive(_ id: String) -> String {
        "CoOp's fixed split \(splitFile!) is at https://drive.google.com/file/d/\(id)/view"
    }
}
