import Analysis
@testable import Experiments
import Foundation
import PromptLearning
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif

/// `writeReport` on a synthetic results folder: few-shot (2 datasets x 2 methods x 2 shots x 3 seeds),
/// base-to-novel (2 seeds), an imbalance series (tau 1 / 0.25 / 0.06), one failed cell, NC history,
/// and NC measures with known correlations to accuracy.
final class ReportTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("report-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: - Synthetic records

    private let recipe = Recipe(epochs: 10, learningRate: 0.002, batchSize: 32, views: 1)

    /// Few-shot accuracy (fraction) of a cell before the seed's offset.
    private func fewShotBase(_ dataset: String, _ method: String, _ shots: Int) -> Double {
        (dataset == "dtd" ? 0.40 : 0.80) + (method == "coop" ? 0.05 : 0) + 0.02 * Double(shots)
    }

    /// Seed offsets: -1, 0, +1 points (mean 0, sample std 1); the (dtd, zeroshot, 2) cell gets
    /// 0, +2, +4 points (mean +2, sample std 2).
    private func offset(_ dataset: String, _ method: String, _ shots: Int, seed: Int) -> Double {
        dataset == "dtd" && method == "zeroshot" && shots == 2 ? 0.02 * Double(seed - 1) : 0.01 * Double(seed - 2)
    }

    private func ncReport(nc1: Double, nc3: Double) -> NeuralCollapseReport {
        NeuralCollapseReport(image: ImageCollapse(nc1: nc1, geometry: ClassGeometry(equinorm: 0.1, equiangularity: 0.2, maxAngle: 0.3, etfError: 0.4)),
                             text: ClassGeometry(equinorm: 0.1, equiangularity: 0.2, maxAngle: 0.3, etfError: 0.5),
                             nc3: nc3, nc4: 0.9, accuracy: 0.5)
    }

    private func epochs(_ values: [(Int, Double)]) throws -> [EpochRecord] {
        try values.map { epoch, loss in
            let json = #"{"epoch": \#(epoch), "learningRate": 0.002, "loss": \#(loss), "terms": {}, "accuracy": 0.5}"#
            return try JSONDecoder().decode(EpochRecord.self, from: Data(json.utf8))
        }
    }

    private func evaluation(_ name: String, _ dataset: String, _ accuracy: Double) -> EvaluationSummary {
        EvaluationSummary(name: name, dataset: dataset, classes: 10, count: 100, accuracy: accuracy, macroF1: accuracy, perClassAccuracy: [:])
    }

    private func makeRecords() throws -> [RunRecord] {
        var records: [RunRecord] = []
        for dataset in ["caltech101", "dtd"] {
            for method in ["zeroshot", "coop"] {
                for shots in [1, 2] {
                    for seed in 1...3 {
                        let spec = RunSpec(protocolKind: .fewShot, dataset: dataset, shots: shots, seed: seed, method: method, recipe: recipe)
                        var r = RunRecord(spec: spec, status: .ok)
                        // Rounded so that equal accuracies are equal bit for bit (exact rank ties).
                        let accuracy = ((fewShotBase(dataset, method, shots) + offset(dataset, method, shots, seed: seed)) * 1000).rounded() / 1000
                        r.accuracy = accuracy
                        r.evaluations = [evaluation("test", dataset, accuracy)]
                        // nc3 = 1 - accuracy: Pearson and Spearman exactly -1. nc1 = exp(-10 accuracy):
                        // monotone (Spearman -1), not linear. Text ETF error is constant: undefined.
                        r.nc = ["test": ncReport(nc1: exp(-10 * accuracy), nc3: 1 - accuracy), "train": ncReport(nc1: 0, nc3: 0)]
                        if dataset == "dtd" && method == "coop" && shots == 1 {
                            r.history = try epochs([(1, 2.0 + Double(seed)), (2, 1.0 + Double(seed))])
                            r.ncHistory = [0, 5, 10].map { e in
                                NCPoint(epoch: e, measures: ["test": ncReport(nc1: 1 / Double(e + 1), nc3: 0.5 - 0.01 * Double(e)),
                                                             "train": ncReport(nc1: 0, nc3: 0)])
                            }
                        }
                        records.append(r)
                    }
                }
            }
        }
        for (seed, (base, novel)) in [(1, (0.80, 0.60)), (2, (0.82, 0.62))] {
            let spec = RunSpec(protocolKind: .baseToNovel, dataset: "dtd", shots: 16, seed: seed, method: "coop", recipe: recipe)
            var r = RunRecord(spec: spec, status: .ok)
            r.base = base; r.novel = novel; r.hm = harmonicMean(base, novel); r.accuracy = r.hm
            r.evaluations = [evaluation("base", "dtd", base), evaluation("novel", "dtd", novel)]
            records.append(r)
        }
        for (tau, accuracy) in [(1.0, 0.70), (0.25, 0.65), (0.06, 0.55)] {
            let spec = RunSpec(protocolKind: .fewShot, dataset: "dtd", shots: 16, seed: 1, imbalance: tau, method: "coop", recipe: recipe)
            var r = RunRecord(spec: spec, status: .ok)
            r.accuracy = accuracy
            r.evaluations = [evaluation("test", "dtd", accuracy)]
            records.append(r)
        }
        let failed = RunSpec(protocolKind: .fewShot, dataset: "caltech101", shots: 4, seed: 1, method: "coop", recipe: recipe)
        records.append(RunRecord(spec: failed, status: .failed, error: "missing images: 3 files <a & b>"))
        return records
    }

    private func writeRecords(_ records: [RunRecord]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for r in records {
            let folder = directory.appendingPathComponent("runs").appendingPathComponent(r.spec.identifier)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try encoder.encode(r).write(to: folder.appendingPathComponent("record.json"))
        }
    }

    // MARK: - Tests

    func testReportNumbersPlotsAndWellFormedHTML() throws {
        try writeRecords(makeRecords())
        let summary = try writeReport(directory: directory)
        XCTAssertEqual(summary.records, 30)
        XCTAssertEqual(summary.succeeded, 29)
        XCTAssertEqual(summary.failed, 1)
        XCTAssertEqual(summary.written.map(\.lastPathComponent), ["results.md", "results.csv", "results.tex", "report.html"])

        // CSV: long format, one row per cell.
        let csv = try String(contentsOf: directory.appendingPathComponent("results.csv"), encoding: .utf8)
        let lines = csv.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "protocol,dataset,method,shots,tau,metric,mean,std,n,over,model,precision")
        var cells: [String: [String]] = [:]
        for line in lines.dropFirst() {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            cells[f[0..<6].joined(separator: ",")] = Array(f[6...])
        }
        func check(_ key: String, mean: Double, std: Double?, n: Int, over: String = "seeds", file: StaticString = #filePath, line: UInt = #line) {
            guard let row = cells[key] else { return XCTFail("no CSV row \(key)", file: file, line: line) }
            XCTAssertEqual(Double(row[0]) ?? .nan, mean, accuracy: 1e-3, key, file: file, line: line)
            if let std { XCTAssertEqual(Double(row[1]) ?? .nan, std, accuracy: 1e-3, key, file: file, line: line) }
            else { XCTAssertEqual(row[1], "", key, file: file, line: line) }
            XCTAssertEqual(row[2], "\(n)", key, file: file, line: line)
            XCTAssertEqual(row[3], over, key, file: file, line: line)
        }
        // caltech101 coop 1 shot: 85 + 2 = 87 +- 1 (seeds 86, 87, 88).
        check("few-shot,caltech101,coop,1,1,accuracy", mean: 87, std: 1, n: 3)
        // dtd zeroshot 2 shots: 44 + (0, 2, 4) -> 46 +- 2.
        check("few-shot,dtd,zeroshot,2,1,accuracy", mean: 46, std: 2, n: 3)
        // Average over the 2 datasets of coop at 2 shots: (89 + 49) / 2.
        check("few-shot,average,coop,2,1,accuracy", mean: 69, std: nil, n: 2, over: "datasets")
        check("few-shot,average,zeroshot,2,1,accuracy", mean: (84 + 46) / 2, std: nil, n: 2, over: "datasets")
        // coop's 16-shot run is on dtd only: no average.
        XCTAssertNil(cells["few-shot,average,coop,16,1,accuracy"])
        // Base-to-novel: base 80, 82 -> 81 +- sqrt(2); novel 60, 62 -> 61 +- sqrt(2); HM of the means.
        check("base-to-novel,dtd,coop,16,1,base", mean: 81, std: 2.0.squareRoot(), n: 2)
        check("base-to-novel,dtd,coop,16,1,novel", mean: 61, std: 2.0.squareRoot(), n: 2)
        check("base-to-novel,dtd,coop,16,1,hm", mean: 2 * 81 * 61 / 142.0, std: nil, n: 2)
        // One seed: no std.
        check("few-shot,dtd,coop,16,0.25,accuracy", mean: 65, std: nil, n: 1)
        check("few-shot,dtd,coop,16,0.06,accuracy", mean: 55, std: nil, n: 1)
        // The failed cell is not averaged.
        XCTAssertFalse(csv.contains("few-shot,caltech101,coop,4,"))

        // Markdown: the papers' layout, the std stated, the failed cell listed.
        let md = try String(contentsOf: directory.appendingPathComponent("results.md"), encoding: .utf8)
        XCTAssertEqual(md, renderMarkdownTables(records: try loadRunRecords(under: directory)))
        XCTAssertTrue(md.contains("### Few-shot: caltech101 (tau = 1)"), md)
        XCTAssertTrue(md.contains("| Method | 1 shot | 2 shots | 16 shots |"), md)
        XCTAssertTrue(md.contains("| coop | 87.00 ± 1.00 | 89.00 ± 1.00 | – |"), md)          // caltech101
        XCTAssertTrue(md.contains("| coop | 47.00 ± 1.00 | 49.00 ± 1.00 | 70.00 (n=1) |"), md)  // dtd
        XCTAssertTrue(md.contains("| zeroshot | 42.00 ± 1.00 | 46.00 ± 2.00 | – |"), md)
        XCTAssertTrue(md.contains("| coop | 67.00 | 69.00 | – |"), md)            // average table
        XCTAssertTrue(md.contains("sample std (n − 1) over n = 3 seeds"), md)
        XCTAssertTrue(md.contains("| coop | 81.00 ± 1.41 | 61.00 ± 1.41 | 69.59 |"), md)
        XCTAssertTrue(md.contains("harmonic mean of the seed-mean base and seed-mean novel"), md)
        XCTAssertTrue(md.contains("| Method | tau = 1 | tau = 0.25 | tau = 0.06 |"), md)
        XCTAssertTrue(md.contains("| coop | 70.00 | 65.00 | 55.00 |"), md)
        XCTAssertTrue(md.contains("Model: model not recorded, fp32."), md)
        XCTAssertTrue(md.contains("## Failed cells"), md)
        XCTAssertTrue(md.contains("few-shot_caltech101_coop_4shot_seed1"), md)
        XCTAssertTrue(md.contains("missing images: 3 files"), md)
        // NC against accuracy: trained runs only (the 12 coop runs), per dataset (6 each) and pooled.
        XCTAssertTrue(md.contains("### NC against test accuracy, dtd"), md)
        XCTAssertTrue(md.contains("| NC3 | 6 | -1.000 | -1.000 |"), md)
        XCTAssertTrue(md.contains("### NC against test accuracy, pooled over every dataset and evaluation set"), md)
        XCTAssertTrue(md.contains("| NC3 | 12 | -1.000 | -1.000 |"), md)
        XCTAssertTrue(md.contains("| text ETF error | 6 | constant (0.5) | constant (0.5) |"), md)
        XCTAssertTrue(md.contains("| image equinorm | 12 | constant within each dataset | constant within each dataset |"), md)
        XCTAssertTrue(md.hasSuffix("\n") && !md.hasSuffix("\n\n"), "results.md ends with exactly one newline")

        // HTML: well-formed XML, every plot present with a title and axis titles.
        let html = try Data(contentsOf: directory.appendingPathComponent("report.html"))
        let page = try PageScan(html)
        let expected = [
            "shots-caltech101-tau1", "shots-dtd-tau1", "shots-average-tau1", "shots-dtd-tau0-25",
            "b2n-dtd-16shot-tau1", "tau-few-shot-dtd-16shot",
            "loss-few-shot-dtd-1shot-tau1", "nc-epochs-nc3-few-shot-dtd-1shot-tau1", "nc-epochs-image-nc1-few-shot-dtd-1shot-tau1",
            "nc-epochs-train-image-nc1-few-shot-dtd-1shot-tau1",
            "nc-vs-accuracy-nc3-dtd-test", "nc-vs-accuracy-image-nc1-dtd-test", "nc-vs-accuracy-nc3-pooled",
        ]
        for id in expected {
            guard let svg = page.plots[id] else { XCTFail("no plot \(id); have \(page.plots.keys.sorted())"); continue }
            XCTAssertFalse(svg.title.isEmpty, id)
            XCTAssertEqual(svg.axisTitles.count, 2, id)
        }
        XCTAssertEqual(page.plots["shots-dtd-tau1"]?.axisTitles, ["shots per class (log scale)", "test accuracy (%)"])
        XCTAssertEqual(page.plots["tau-few-shot-dtd-16shot"]?.axisTitles.first, "imbalance tau (log scale)")
        XCTAssertEqual(page.plots["loss-few-shot-dtd-1shot-tau1"]?.axisTitles.first, "epochs trained")
        // The correlations are printed on the plot; a constant measure is not plotted.
        let nc3 = try XCTUnwrap(page.plots["nc-vs-accuracy-nc3-dtd-test"])
        XCTAssertTrue(nc3.texts.contains { $0.contains("Pearson r = -1.000") && $0.contains("Spearman ρ = -1.000") }, "\(nc3.texts)")
        XCTAssertNil(page.plots["nc-vs-accuracy-text-etf-error-dtd-test"])
        XCTAssertNil(page.plots["nc-vs-accuracy-image-equinorm-pooled"])
        let points = try loadRunRecords(under: directory).filter { $0.spec.protocolKind == .fewShot && $0.spec.method == "coop" && $0.nc["test"] != nil && $0.spec.dataset == "dtd" }
        let acc = points.map { 100 * $0.evaluations[0].accuracy }, nc1 = points.map { $0.nc["test"]!.image.nc1 }
        let pearson = try XCTUnwrap(Statistics.pearson(nc1, acc))
        XCTAssertTrue(page.plots["nc-vs-accuracy-image-nc1-dtd-test"]!.texts.contains { $0.contains(String(format: "Pearson r = %.3f", pearson)) })
        // Loss and NC over training share one epoch axis: the loss of epoch index 0 is plotted at 1.
        XCTAssertEqual(page.plots["loss-few-shot-dtd-1shot-tau1"]?.axisTitles.first,
                       page.plots["nc-epochs-nc3-few-shot-dtd-1shot-tau1"]?.axisTitles.first)
        XCTAssertTrue(page.text.contains("Spearman ρ = -1.000"))
        XCTAssertTrue(page.text.contains("missing images: 3 files <a & b>"))   // escaped in the file, text after parsing
    }

    private func record(_ dataset: String, _ method: String, protocol p: ProtocolKind = .fewShot, shots: Int = 16, seed: Int = 1, tau: Double = 1,
                        evaluations: [EvaluationSummary], model: String? = nil, digest: String? = nil, precision: String? = nil,
                        targets: [String] = []) -> RunRecord {
        let spec = RunSpec(protocolKind: p, dataset: dataset, targets: targets, shots: shots, seed: seed, imbalance: tau, method: method, recipe: recipe)
        var r = RunRecord(spec: spec, status: .ok)
        r.evaluations = evaluations
        r.model = model; r.precision = precision
        if let digest { r.digests["model"] = digest }
        // The headline numbers as the runner's `summarise` sets them.
        let targetsOnly = evaluations.filter { $0.name != dataset }.map(\.accuracy)
        switch p {
        case .fewShot, .longTailed: r.accuracy = evaluations.first?.accuracy
        case .baseToNovel: break
        case .crossDataset, .domainGeneralization: r.accuracy = targetsOnly.reduce(0, +) / Double(max(1, targetsOnly.count))
        }
        return r
    }

    /// Two models (and a bf16 run of one) in one folder: one table per model and precision, never
    /// merged or averaged together, and the model named in results.md, results.csv and report.html.
    func testRecordsOfTwoModelsAreNeverMerged() throws {
        var records: [RunRecord] = []
        for seed in 1...2 {
            records.append(record("dtd", "coop", seed: seed, evaluations: [evaluation("test", "dtd", 0.50 + 0.02 * Double(seed))],
                                  model: "tiny.pt", digest: "aaaaaaaa11112222"))
            records.append(record("dtd", "coop", seed: seed, evaluations: [evaluation("test", "dtd", 0.80 + 0.02 * Double(seed))],
                                  model: "model.pt", digest: "3f2a9c1b33334444"))
            records.append(record("dtd", "coop", seed: seed, evaluations: [evaluation("test", "dtd", 0.70)],
                                  model: "model.pt", digest: "3f2a9c1b33334444", precision: "bf16"))
        }
        // Same specs, different models: folders of both kinds side by side.
        let encoder = JSONEncoder()
        for (i, r) in records.enumerated() {
            let folder = directory.appendingPathComponent("runs/\(i)-\(r.spec.identifier)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try encoder.encode(r).write(to: folder.appendingPathComponent("record.json"))
        }
        let loaded = try loadRunRecords(under: directory)
        XCTAssertEqual(loaded.count, 6, "records of one spec under different models are all kept")
        try writeReport(directory: directory)
        let md = try String(contentsOf: directory.appendingPathComponent("results.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("## Model: model.pt (3f2a9c1b), fp32"), md)
        XCTAssertTrue(md.contains("## Model: model.pt (3f2a9c1b), bf16"), md)
        XCTAssertTrue(md.contains("## Model: tiny.pt (aaaaaaaa), fp32"), md)
        XCTAssertTrue(md.contains("| coop | 83.00 ± 1.41 |"), md)   // model.pt: 82, 84
        XCTAssertTrue(md.contains("| coop | 53.00 ± 1.41 |"), md)   // tiny.pt: 52, 54
        XCTAssertTrue(md.contains("| coop | 70.00 ± 0.00 |"), md)   // bf16
        XCTAssertFalse(md.contains("68.00"), "never the mean over both models")
        let csv = try String(contentsOf: directory.appendingPathComponent("results.csv"), encoding: .utf8)
        XCTAssertTrue(csv.contains("few-shot,dtd,coop,16,1,accuracy,83.0000,1.4142,2,seeds,model.pt (3f2a9c1b),fp32"), csv)
        XCTAssertTrue(csv.contains("few-shot,dtd,coop,16,1,accuracy,53.0000,1.4142,2,seeds,tiny.pt (aaaaaaaa),fp32"), csv)
        XCTAssertTrue(csv.contains(",model.pt (3f2a9c1b),bf16"), csv)
        let html = try Data(contentsOf: directory.appendingPathComponent("report.html"))
        let page = try PageScan(html)
        let svgs = String(decoding: html, as: UTF8.self).components(separatedBy: "<svg ").count - 1
        XCTAssertEqual(page.plots.count, svgs, "plot ids stay unique with several models")
        XCTAssertNotNil(page.plots["m1-shots-dtd-tau1"])
        XCTAssertTrue(page.text.contains("Model: tiny.pt (aaaaaaaa), fp32"))
        let tex = try String(contentsOf: directory.appendingPathComponent("results.tex"), encoding: .utf8)
        XCTAssertTrue(tex.contains("(tiny.pt (aaaaaaaa), fp32)"), tex)
    }

    /// NC against accuracy per dataset counts each distinct trained run once: 1-shot cells at
    /// tau < 1 repeat the tau = 1 run (same training inputs, same results), zero-shot is left out,
    /// constant image-side measures are reported as constant, and dapt's prompted image features
    /// appear beside the text-only methods.
    func testNCCorrelationPerDatasetCountsEachRunOnce() throws {
        var records: [RunRecord] = []
        var expected: [(x: Double, y: Double)] = []   // dtd's distinct trained runs: NC3, accuracy
        for method in ["zeroshot", "coop", "kgcoop"] {
            for shots in [1, 2] {
                for tau in [1.0, 0.25] {
                    for seed in 1...3 {
                        // 1 shot draws the same image at every tau: the same inputs and results.
                        let draw = shots == 1 ? 1.0 : tau
                        let acc = method == "zeroshot" ? 0.4
                            : ((0.5 + 0.03 * Double(shots) * draw + 0.01 * Double(seed) + (method == "coop" ? 0.05 : 0)) * 1000).rounded() / 1000
                        let nc3 = method == "zeroshot" ? 0.9 : 1 - acc + 0.002 * Double(seed * seed)
                        var r = record("dtd", method, shots: shots, seed: seed, tau: tau, evaluations: [evaluation("test", "dtd", acc)])
                        r.nc = ["test": ncReport(nc1: 0.3, nc3: nc3)]
                        r.digests["train_inputs"] = method == "zeroshot" ? "zs-\(shots)-\(tau)-\(seed)" : "draw-\(shots)-\(draw)-\(seed)"
                        r.digests["test_features"] = "dtd-test"
                        if method != "zeroshot" && !(shots == 1 && tau != 1) { expected.append((nc3, 100 * acc)) }
                        records.append(r)
                    }
                }
            }
        }
        // A second dataset with dapt, whose prompted image features move image NC1.
        for (i, method) in ["coop", "coop", "dapt", "dapt"].enumerated() {
            var r = record("eurosat", method, seed: i + 1, evaluations: [evaluation("test", "eurosat", 0.6 + 0.05 * Double(i))])
            r.nc = ["test": ncReport(nc1: method == "dapt" ? 0.1 + 0.05 * Double(i) : 0.3, nc3: 0.5 - 0.05 * Double(i))]
            r.digests["train_inputs"] = "eurosat-\(i)"
            records.append(r)
        }
        XCTAssertEqual(expected.count, 2 * 3 * 3)
        let md = renderMarkdownTables(records: records)
        let pearson = try XCTUnwrap(Statistics.pearson(expected.map(\.x), expected.map(\.y)))
        let spearman = try XCTUnwrap(Statistics.spearman(expected.map(\.x), expected.map(\.y)))
        XCTAssertTrue(md.contains(String(format: "| NC3 | 18 | %.3f | %.3f |", pearson, spearman)), md)
        XCTAssertTrue(md.contains("| image NC1 | 18 | constant (0.3) | constant (0.3) |"), md)
        XCTAssertTrue(md.contains("NC against test accuracy, pooled over every dataset and evaluation set"), md)
        XCTAssertTrue(md.contains("| NC3 | 22 |"), md)                       // pooled: 18 + 4
        // eurosat: image NC1 varies through dapt, so it has a correlation.
        XCTAssertTrue(md.contains("### NC against test accuracy, eurosat"), md)
        XCTAssertFalse(md.contains("| image NC1 | 4 | constant"), md)
        // The measures by method: dapt's prompted image NC1 beside coop's frozen one.
        XCTAssertTrue(md.contains("| coop | 2 | 0.3000 |"), md)
        XCTAssertTrue(md.contains("| dapt | 2 | 0.2250 |"), md)                // (0.2 + 0.25) / 2
        // The HTML plots NC3 for dtd but not the constant image NC1.
        try writeRecords(records)
        try writeReport(directory: directory)
        let page = try PageScan(Data(contentsOf: directory.appendingPathComponent("report.html")))
        XCTAssertNotNil(page.plots["nc-vs-accuracy-nc3-dtd-test"])
        XCTAssertNil(page.plots["nc-vs-accuracy-image-nc1-dtd-test"])
        XCTAssertNotNil(page.plots["nc-vs-accuracy-image-nc1-eurosat-test"])
        XCTAssertTrue(page.text.contains("18 points"))
    }

    /// Many / medium / few on a hand-made imbalanced draw: counts [1, 16, 5, 9, 1, 3, 1] in label
    /// order rank c1, c3, c2 (many: 3r < 7), c5, c0 (medium: 3r < 14; c0 before the tied c4, c6 by
    /// label), c4, c6 (few).
    func testManyMediumFewOnAHandMadeImbalancedCase() throws {
        let names = (0..<7).map { "c\($0)" }
        let counts = [1, 16, 5, 9, 1, 3, 1]
        let labels = counts.enumerated().flatMap { label, n in Array(repeating: label, count: n) }
        XCTAssertEqual(ShotGroups.trainCounts(classNames: names, labels: labels), Dictionary(uniqueKeysWithValues: zip(names, counts)))
        let groups = ShotGroups.assign(classNames: names, labels: labels)
        XCTAssertEqual(groups, ["c1": .many, "c3": .many, "c2": .many, "c5": .medium, "c0": .medium, "c4": .few, "c6": .few])
        let accuracy = ["c0": 0.5, "c1": 0.9, "c2": 0.7, "c3": 0.8, "c4": 0.2, "c5": 0.6, "c6": 0.1]
        var e = EvaluationSummary(name: "test", dataset: "dtd", classes: 7, count: 70, accuracy: 0.5, macroF1: 0.5, perClassAccuracy: accuracy)
        e.setShotGroups(groups)
        XCTAssertEqual(try XCTUnwrap(e.manyShot), (0.9 + 0.8 + 0.7) / 3, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(e.mediumShot), (0.6 + 0.5) / 2, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(e.fewShot), (0.2 + 0.1) / 2, accuracy: 1e-12)
        // Classes never trained on (novel) have no group.
        var novel = EvaluationSummary(name: "novel", dataset: "dtd", classes: 2, count: 20, accuracy: 0.5, macroF1: 0.5,
                                      perClassAccuracy: ["n0": 0.5, "n1": 0.4])
        novel.setShotGroups(groups)
        XCTAssertNil(novel.manyShot)
        // A balanced draw keeps the same classes in the same groups (label order).
        let balanced = ShotGroups.assign(classNames: names, labels: names.indices.flatMap { Array(repeating: $0, count: 4) })
        XCTAssertEqual(balanced.filter { $0.value == .many }.keys.sorted(), ["c0", "c1", "c2"])
        // The record's keys and the report's table.
        let json = String(decoding: try JSONEncoder().encode(e), as: UTF8.self)
        for key in ["\"many_shot\"", "\"medium_shot\"", "\"few_shot\""] { XCTAssertTrue(json.contains(key), json) }
        var r = record("dtd", "coop", tau: 0.25, evaluations: [e])
        r.trainCounts = ShotGroups.trainCounts(classNames: names, labels: labels)
        r.shotGroupsRule = ShotGroups.rule
        let md = renderMarkdownTables(records: [r])
        XCTAssertTrue(md.contains("| Method | tau | Many | Medium | Few | All |"), md)
        XCTAssertTrue(md.contains("| coop | 0.25 | 80.00 | 55.00 | 15.00 | 50.00 |"), md)
        XCTAssertTrue(md.contains("ties in label order"), md)
        try writeRecords([r])
        try writeReport(directory: directory)
        let page = try PageScan(Data(contentsOf: directory.appendingPathComponent("report.html")))
        let plot = try XCTUnwrap(page.plots["class-frequency-few-shot-dtd-16shot-tau0-25"])
        XCTAssertEqual(plot.axisTitles, ["training images of the class", "class accuracy (%)"])
    }

    /// results.tex: booktabs tables with escaped text, mean $\pm$ std, one block per dataset and
    /// the average, base-to-novel Base / Novel / HM, targets in the records' order with a dagger
    /// where an average misses a target; balanced braces; compiles where pdflatex is installed.
    func testLaTeXTablesAsThePapersPrintThem() throws {
        var records = try makeRecords()
        for seed in 1...2 {
            let targets = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
            for method in ["coop", "linear-probe"] {
                // The probe misses imagenet_a: its average is over fewer targets.
                let names = ["imagenet"] + targets.filter { method == "coop" || $0 != "imagenet_a" }
                var r = record("imagenet", method, protocol: .domainGeneralization, seed: seed,
                               evaluations: names.enumerated().map { evaluation($1, $1, 0.5 + 0.01 * Double($0 + seed)) },
                               targets: targets)
                if seed == 2 && method == "linear-probe" { r.targetsMissing = ["imagenet_a"] }   // as the runner records it
                records.append(r)
            }
        }
        let tex = renderLaTeXTables(records: records)
        XCTAssertEqual(tex.components(separatedBy: "\\begin{table}").count, tex.components(separatedBy: "\\end{table}").count)
        let tables = tex.components(separatedBy: "\\begin{tabular}").dropFirst()
        XCTAssertGreaterThanOrEqual(tables.count, 4)
        for t in tables {
            let body = t.components(separatedBy: "\\end{tabular}")[0]
            XCTAssertTrue(body.contains("\\toprule") && body.contains("\\midrule") && body.contains("\\bottomrule"), body)
            // Every row has as many cells as the column spec says.
            let spec = String(body.prefix { $0 != "}" }.dropFirst())
            for line in body.split(separator: "\n") where line.hasSuffix("\\\\") && !line.contains("multicolumn") {
                let amps = line.replacingOccurrences(of: "\\&", with: "").filter { $0 == "&" }.count
                XCTAssertEqual(amps, spec.count - 1, String(line))
            }
        }
        // Braces balance (escaped ones aside) and no raw special character is left.
        var depth = 0, previous: Character = " "
        for c in tex {
            if previous != "\\" { if c == "{" { depth += 1 } else if c == "}" { depth -= 1; XCTAssertGreaterThanOrEqual(depth, 0) } }
            previous = c
        }
        XCTAssertEqual(depth, 0)
        XCTAssertFalse(tex.contains("±") || tex.contains("–") || tex.contains("†"), "unicode left for LaTeX")
        XCTAssertTrue(tex.contains("Method & Base & Novel & HM \\\\"), tex)
        XCTAssertTrue(tex.contains("coop & 81.00 $\\pm$ 1.41 & 61.00 $\\pm$ 1.41 & 69.59 \\\\"), tex)
        XCTAssertTrue(tex.contains("\\multicolumn{4}{l}{\\textit{average over 2 datasets}}"), tex)
        XCTAssertTrue(tex.contains("coop & 67.00 & 69.00 & -- \\\\"), tex)   // few-shot average row: 1, 2, 16 shots
        // DG: targets in the records' order, escaped, the short average marked.
        XCTAssertTrue(tex.contains("imagenet (source) & imagenetv2 & imagenet\\_sketch & imagenet\\_a & imagenet\\_r & Average over targets"), tex)
        XCTAssertTrue(tex.contains("$^\\dagger$"), tex)
        XCTAssertTrue(tex.contains("without imagenet\\_a"), tex)

        // Compiles as a fragment where TeX is installed (not needed for CI).
        guard let pdflatex = ["/usr/bin/pdflatex", "/usr/local/bin/pdflatex"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("pdflatex not installed: the compile check is skipped")
        }
        try tex.write(to: directory.appendingPathComponent("results.tex"), atomically: true, encoding: .utf8)
        let doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{results.tex}\n\\end{document}\n"
        try doc.write(to: directory.appendingPathComponent("doc.tex"), atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: pdflatex)
        process.arguments = ["-interaction=nonstopmode", "-halt-on-error", "doc.tex"]
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, (try? String(contentsOf: directory.appendingPathComponent("doc.log"), encoding: .utf8)) ?? "")
    }

    /// 16 series are told apart by colour and marker (colours repeat after 10), and the styles
    /// reach the plot: markers of several shapes, dashed lines from the 11th series.
    func testPaletteTellsSixteenSeriesApart() throws {
        let styles = (0..<16).map(SeriesStyle.at)
        XCTAssertEqual(Set(styles.map { "\($0.colour)|\($0.marker)" }).count, 16)
        XCTAssertEqual(Set((0..<30).map(SeriesStyle.at)).count, 30)
        let series = (0..<16).map { i in PlotSeries(name: "method\(i)", points: [PlotPoint(x: 1, y: Double(i)), PlotPoint(x: 2, y: Double(i) + 1)]) }
        let svg = SVGPlot.lineChart(id: "p", title: "t", x: PlotAxis(title: "x"), y: PlotAxis(title: "y"), series: series)
        XCTAssertTrue(svg.contains("<polygon") && svg.contains("<circle") && svg.contains("stroke-dasharray"), svg)
        let lines = svg.components(separatedBy: "<polyline").dropFirst().map { $0.prefix { $0 != ">" } }
        let drawn = Set(lines.map { l in l.components(separatedBy: " points=")[0] })
        XCTAssertEqual(drawn.count, 16, "each series' line differs in colour or dash")
        // Base-to-novel with 14 methods: horizontal bars, one label per method, error bars inside the plot.
        let methods = (0..<14).map { "a-rather-long-method-name-\($0)" }
        let bars = SVGPlot.horizontalBars(id: "b", title: "t", groups: methods, bars: ["Base", "Novel", "HM"],
                                          values: methods.map { _ in [PlotPoint(x: 0, y: 99, error: 5), PlotPoint(x: 0, y: 2, error: 5), nil] },
                                          x: PlotAxis(title: "accuracy (%)"))
        XCTAssertEqual(methods.filter { bars.contains(">\($0)<") }.count, 14)
        let page = try PageScan(Data(("<html>" + bars + "</html>").utf8))
        XCTAssertEqual(page.plots["b"]?.axisTitles.first, "accuracy (%)")
        let xs = bars.components(separatedBy: "<line x1=\"").dropFirst().compactMap { Double($0.prefix { $0 != "\"" }) }
        let frame = bars.components(separatedBy: "<rect x=\"").dropFirst().compactMap { Double($0.prefix { $0 != "\"" }) }
        XCTAssertGreaterThanOrEqual(xs.min() ?? 0, (frame.first ?? 0) - 0.01, "no error bar left of the plot")
    }

    func testEmptyFolderNamesItself() throws {
        XCTAssertThrowsError(try writeReport(directory: directory)) { error in
            XCTAssertEqual(error as? ReportError, .noRecords(directory))
        }
        let missing = directory.appendingPathComponent("absent")
        XCTAssertThrowsError(try writeReport(directory: missing)) { error in
            XCTAssertEqual(error as? ReportError, .notADirectory(missing))
        }
    }
}

/// The page as an XML parser reads it: each <svg>'s id, <title>, axis titles and texts.
private final class PageScan: NSObject, XMLParserDelegate {
    struct Plot {
        var title = ""
        var axisTitles: [String] = []
        var texts: [String] = []
    }

    var plots: [String: Plot] = [:]
    /// All character data of the page.
    var text = ""
    private var svgID: String?
    private var stack: [(name: String, cls: String?)] = []
    private var buffer = ""

    init(_ data: Data) throws {
        super.init()
        let parser = XMLParser(data: data)
        parser.delegate = self
        guard parser.parse() else {
            throw parser.parserError ?? NSError(domain: "PageScan", code: 1, userInfo: [NSLocalizedDescriptionKey: "not well-formed"])
        }
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if name == "svg", let id = attributes["id"] { svgID = id; plots[id] = Plot() }
        stack.append((name, attributes["class"]))
        buffer = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        buffer += string
        text += string
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        let top = stack.removeLast()
        if let id = svgID {
            if name == "title" && stack.last?.name == "svg" { plots[id]?.title = buffer }
            if name == "text" {
                plots[id]?.texts.append(buffer)
                if top.cls == "axis-title" { plots[id]?.axisTitles.append(buffer) }
            }
            if name == "svg" { svgID = nil }
        }
        buffer = ""
    }
}
