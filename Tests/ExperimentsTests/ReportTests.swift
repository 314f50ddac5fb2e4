import Analysis
import Experiments
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
        XCTAssertEqual(summary.written.map(\.lastPathComponent), ["results.md", "results.csv", "report.html"])

        // CSV: long format, one row per cell.
        let csv = try String(contentsOf: directory.appendingPathComponent("results.csv"), encoding: .utf8)
        let lines = csv.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "protocol,dataset,method,shots,tau,metric,mean,std,n,over")
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
        XCTAssertTrue(md.contains("## Failed cells"), md)
        XCTAssertTrue(md.contains("few-shot_caltech101_coop_4shot_seed1"), md)
        XCTAssertTrue(md.contains("missing images: 3 files"), md)
        XCTAssertTrue(md.contains("| NC3 | 24 | -1.000 | -1.000 |"), md)
        XCTAssertTrue(md.contains("| text ETF error | 24 | undefined | undefined |"), md)       // constant
        XCTAssertTrue(md.contains("| image equinorm | 24 | undefined | undefined |"), md)

        // HTML: well-formed XML, every plot present with a title and axis titles.
        let html = try Data(contentsOf: directory.appendingPathComponent("report.html"))
        let page = try PageScan(html)
        let expected = [
            "shots-caltech101-tau1", "shots-dtd-tau1", "shots-average-tau1", "shots-dtd-tau0-25",
            "b2n-dtd-16shot-tau1", "tau-few-shot-dtd-16shot",
            "loss-few-shot-dtd-1shot-tau1", "nc-epochs-nc3-few-shot-dtd-1shot-tau1", "nc-epochs-image-nc1-few-shot-dtd-1shot-tau1",
            "nc-vs-accuracy-nc3", "nc-vs-accuracy-image-nc1",
        ]
        for id in expected {
            guard let svg = page.plots[id] else { XCTFail("no plot \(id); have \(page.plots.keys.sorted())"); continue }
            XCTAssertFalse(svg.title.isEmpty, id)
            XCTAssertEqual(svg.axisTitles.count, 2, id)
        }
        XCTAssertEqual(page.plots["shots-dtd-tau1"]?.axisTitles, ["shots per class (log scale)", "test accuracy (%)"])
        XCTAssertEqual(page.plots["tau-few-shot-dtd-16shot"]?.axisTitles.first, "imbalance tau (log scale)")
        XCTAssertEqual(page.plots["loss-few-shot-dtd-1shot-tau1"]?.axisTitles.first, "epoch")
        // The constant measure has no fit but still a plot; the correlations are printed on it.
        let nc3 = try XCTUnwrap(page.plots["nc-vs-accuracy-nc3"])
        XCTAssertTrue(nc3.texts.contains { $0.contains("Pearson r = -1.000") && $0.contains("Spearman ρ = -1.000") }, "\(nc3.texts)")
        let points = try loadRunRecords(under: directory).filter { $0.spec.protocolKind == .fewShot && $0.nc["test"] != nil }
        let acc = points.map { 100 * $0.evaluations[0].accuracy }, nc1 = points.map { $0.nc["test"]!.image.nc1 }
        let pearson = try XCTUnwrap(Statistics.pearson(nc1, acc))
        XCTAssertTrue(page.plots["nc-vs-accuracy-image-nc1"]!.texts.contains { $0.contains(String(format: "Pearson r = %.3f", pearson)) })
        XCTAssertTrue(page.text.contains("Spearman ρ = -1.000"))
        XCTAssertTrue(page.text.contains("missing images: 3 files <a & b>"))   // escaped in the file, text after parsing
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
