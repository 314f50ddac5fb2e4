import ArgumentParser
import Datasets
import Foundation

/// `prompttune datasets`: every supported dataset with its class count and template and, under a
/// data root, whether it is there and its split sizes (or what is missing).
struct DatasetsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "datasets",
        abstract: "List the supported datasets and, under a data root, which are there.",
        discussion: """
        The root is the folder CoOp calls $DATA, holding its layout (oxford_pets/, imagenet/, ...: \
        see DATASETS.md of CoOp). Fashion-MNIST is also looked for in Debian's \
        /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist). For imagefolder, \
        the root is the image folder itself, so it is checked only when named with --dataset. The \
        long-tailed benchmarks (imagenet_lt, places_lt: OLTR's split files; cifar100_lt, \
        cifar100_lt_r50, cifar100_lt_r10: the cifar-100-python pickles) have their own layout: see \
        docs/EXPERIMENTS.md.
        """)

    @Option(help: ArgumentHelp("The data root (default: $DATA when set).", valueName: "dir"))
    var root: String?

    @Option(name: .customLong("dataset"), parsing: .singleValue,
            help: ArgumentHelp("Only these datasets (repeatable; CoOp's names such as OxfordPets are accepted too).",
                               valueName: "name"))
    var only: [DatasetName] = []

    @Flag(help: "Check that every image the split files list exists (not only the first of each split).")
    var verify = false

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Row {
        var name: DatasetName
        var counts: (train: Int, val: Int, test: Int, classes: Int)?
        var imageRoot: String?
        var problem: String?
        /// The dataset's folder is simply not under the root (and nothing near it is).
        var absent = false
    }

    func run() throws {
        let rootURL = (root ?? ProcessInfo.processInfo.environment["DATA"]).map {
            URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath)
        }
        let names = only.isEmpty ? DatasetName.allCases : only
        var rows: [Row] = []
        for name in names {
            var row = Row(name: name)
            let checkable = name == .fashionMNIST || (rootURL != nil && (name != .imageFolder || only.contains(.imageFolder)))
            if checkable {
                do {
                    let s = try loadDataset(name, root: rootURL ?? URL(fileURLWithPath: "/nonexistent"), verifyImages: verify)
                    row.counts = (s.train.count, s.val.count, s.test.count, s.classNames.count)
                    row.imageRoot = s.imageRoot.path
                } catch {
                    row.problem = "\(error)"
                    if let e = error as? DatasetError, e.kind == .missingFolder, let rootURL, let folder = name.folder,
                       name != .fashionMNIST, !FileManager.default.fileExists(atPath: rootURL.appendingPathComponent(folder).path),
                       !e.message.contains(". There is"), !e.message.contains("looks like the dataset folder") {
                        row.absent = true
                    }
                }
            }
            rows.append(row)
        }
        if json {
            try printJSON(rows, root: rootURL)
        } else {
            printRows(rows, root: rootURL)
        }
    }

    private func printJSON(_ rows: [Row], root: URL?) throws {
        let items: [[String: Any]] = rows.map { r in
            var o: [String: Any] = [
                "name": r.name.rawValue, "displayName": r.name.displayName, "template": r.name.template,
                "expected": r.name.expectedContents,
            ]
            o["coopName"] = r.name.coopName ?? NSNull()
            o["folder"] = r.name.folder ?? NSNull()
            o["classes"] = r.name.classCount ?? NSNull()
            o["testOnly"] = r.name.isTestOnly
            if let c = r.counts {
                o["found"] = true
                o["imageRoot"] = r.imageRoot
                o["counts"] = ["train": c.train, "val": c.val, "test": c.test, "classes": c.classes]
            } else {
                o["found"] = r.problem == nil ? NSNull() : false
                if let p = r.problem { o["problem"] = p }
                if r.absent { o["absent"] = true }
            }
            return o
        }
        print(try jsonText(["root": root?.path ?? NSNull(), "verified": verify, "datasets": items]))
    }

    private func printRows(_ rows: [Row], root: URL?) {
        print(root.map { "Datasets under \($0.path) (CoOp's layout):" } ?? "Supported datasets (pass --root to look for them):")
        let header = ("name", "classes", "template", "status")
        let table: [(String, String, String, String)] = rows.map { r in
            let classes = r.name.classCount.map(String.init) ?? "any"
            let status: String
            if let c = r.counts {
                let mismatch = r.name.classCount.map { $0 != c.classes } ?? false
                status = "found: train \(c.train), val \(c.val), test \(c.test)"
                    + (mismatch || r.name.classCount == nil ? ", \(c.classes) classes" : "")
                    + (mismatch ? " (expected \(r.name.classCount!))" : "")
            } else if r.absent {
                status = "absent (no \(r.name.folder!)/)"
            } else if r.problem != nil {
                status = "not usable:"
            } else if r.name == .imageFolder {
                status = "any <dir>/<class>/<image> (--dataset imagefolder --root <dir>)"
            } else {
                status = (r.name.folder.map { $0 + "/" } ?? "") + " " + r.name.expectedContents.joined(separator: ", ")
            }
            return (r.name.rawValue, classes, r.name.template, status)
        }
        let w0 = max(header.0.count, table.map(\.0.count).max() ?? 0)
        let w1 = max(header.1.count, table.map(\.1.count).max() ?? 0)
        let w2 = max(header.2.count, table.map(\.2.count).max() ?? 0)
        func pad(_ s: String, _ w: Int) -> String { s.padding(toLength: w, withPad: " ", startingAt: 0) }
        print("  " + [pad(header.0, w0), pad(header.1, w1), pad(header.2, w2), header.3].joined(separator: "  "))
        for (row, r) in zip(table, rows) {
            print("  " + [pad(row.0, w0), pad(row.1, w1), pad(row.2, w2), row.3].joined(separator: "  "))
            if let p = r.problem, !r.absent { print("      " + p) }
        }
        if rows.contains(where: { $0.counts != nil && $0.name.isTestOnly }) {
            print("ImageNet variants are test sets only (CoOp evaluates on them without training).")
        }
    }
}

extension DatasetName: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}
