import Analysis
import Foundation
import TensorCore
import TensorIO

// `prompttune report DIR`: reads every `record.json` under a results folder, aggregates the runs
// over seeds into the papers' tables (Tables.swift, TeX.swift) and plots (HTML.swift), one model
// and precision at a time, and writes results.md, results.csv, results.tex and report.html into
// the folder.
//
// Conventions, stated in the tables' captions as well:
// - Accuracies are shown in percent (records hold fractions).
// - Spread over seeds is the sample standard deviation (n - 1); a single seed shows no std.
// - Base-to-novel HM is the harmonic mean of the seed-mean base and seed-mean novel accuracies,
//   as the papers compute it (not the mean of per-seed HMs), so it carries no std.
// - "average" over datasets is the mean of the per-dataset means, shown only for a method that has
//   the cell on every dataset of its protocol and tau; base-to-novel's average HM is the HM of the
//   average base and average novel accuracies (the papers' "average over 11 datasets").

/// Why a report could not be written.
public enum ReportError: Error, Equatable, CustomStringConvertible {
    /// The results folder does not exist or is not a folder.
    case notADirectory(URL)
    /// No file named `record.json` anywhere under the folder.
    case noRecords(URL)
    /// A `record.json` that does not decode as a `RunRecord`.
    case unreadableRecord(URL, reason: String)

    public var description: String {
        switch self {
        case .notADirectory(let url): "\(url.path) is not a folder"
        case .noRecords(let url): "no record.json found under \(url.path)"
        case .unreadableRecord(let url, let reason): "cannot read \(url.path): \(reason)"
        }
    }
}

/// A `record.json` that could not be read: listed in the report, left out of its tables.
public struct UnreadableRecord: Equatable, Sendable {
    public var url: URL
    /// One line: which field is missing or wrong, or why the file could not be read.
    public var reason: String
}

/// What `writeReport` wrote.
public struct ReportSummary: Equatable, Sendable {
    /// Records that could not be read, left out of the tables (listed in results.md and report.html).
    public var unreadable: [UnreadableRecord] = []
    /// results.md, results.csv, results.tex and report.html, in that order.
    public var written: [URL]
    /// Records read (after dropping older duplicates of the same spec).
    public var records: Int
    public var succeeded: Int
    public var failed: Int
}

/// One number of the results: a (protocol, dataset, method, shots, tau, metric) cell aggregated
/// over seeds, or over datasets for dataset "average".
public struct ResultRow: Equatable, Sendable {
    public enum Over: String, Sendable { case seeds, datasets }

    public var protocolKind: ProtocolKind
    /// The training dataset, or "average" for the mean over datasets.
    public var dataset: String
    public var method: String
    public var shots: Int
    public var tau: Double
    /// `accuracy` (few-shot), `base` / `novel` / `hm` (base-to-novel), or an evaluation's name and
    /// `average` over the targets (cross-dataset, domain generalisation).
    public var metric: String
    /// Percent.
    public var mean: Double
    /// Sample std (n - 1) over seeds; nil for one seed, HM of means and averages over datasets.
    public var std: Double?
    /// Seeds (or datasets, for averages) behind the mean.
    public var n: Int
    public var over: Over
    /// The model's file name and short digest ("model.pt (3f2a9c1b)"); rows of different models or
    /// precisions are never averaged together.
    public var model: String = ""
    /// "fp32" or "bf16".
    public var precision: String = "fp32"
}

/// The model and precision of a group of records: a report tabulates each group on its own.
public struct ModelLabel: Hashable, Sendable {
    /// The checkpoint's file name (nil in records older than the field).
    public var name: String?
    /// `digests["model"]`.
    public var digest: String?
    /// "fp32" for records without a precision.
    public var precision: String

    public init(_ r: RunRecord) {
        name = r.model; digest = r.digests["model"]; precision = r.precision ?? "fp32"
    }

    /// "model.pt (3f2a9c1b)": the file name and the digest's first 8 characters.
    public var model: String {
        switch (name, digest) {
        case let (n?, d?): "\(n) (\(d.prefix(8)))"
        case let (n?, nil): n
        case let (nil, d?): "model \(d.prefix(8))"
        case (nil, nil): "model not recorded"
        }
    }

    /// "model.pt (3f2a9c1b), fp32".
    public var text: String { "\(model), \(precision)" }

    /// What keeps two groups apart: the digest (else the name) and the precision.
    var identity: String { "\(digest ?? name ?? "")|\(precision)" }
}

/// The name of the per-dataset average in rows, tables and plots.
public let averageDatasetName = "average"

// MARK: - Loading

/// Every `record.json` under `directory` (searched recursively), decoded; where two records have
/// the same spec, the later-finished one is kept.
public func loadRunRecords(under directory: URL) throws -> [RunRecord] {
    try readRunRecords(under: directory).records
}

/// The readable records under `directory` (as `loadRunRecords`) and the unreadable ones with why:
/// one damaged `record.json` no longer blocks the report (and `run`'s final one) with a decoder
/// dump. Throws only when the folder is missing or holds no record at all.
public func readRunRecords(under directory: URL) throws -> (records: [RunRecord], unreadable: [UnreadableRecord]) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw ReportError.notADirectory(directory)
    }
    var files: [URL] = []
    if let walker = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil) {
        for case let url as URL in walker where url.lastPathComponent == "record.json" { files.append(url) }
    }
    guard !files.isEmpty else { throw ReportError.noRecords(directory) }
    // Records of different models or precisions are different runs even under one spec.
    struct Key: Hashable { var spec: RunSpec; var model: String }
    var bySpec: [Key: RunRecord] = [:]
    var unreadable: [UnreadableRecord] = []
    for file in files.sorted(by: { $0.path < $1.path }) {
        let record: RunRecord
        do {
            record = try decodeRecord(file)
        } catch {
            unreadable.append(UnreadableRecord(url: file, reason: "\(error)"))
            continue
        }
        let key = Key(spec: record.spec, model: ModelLabel(record).identity)
        if let kept = bySpec[key], kept.finishedAt > record.finishedAt { continue }
        bySpec[key] = record
    }
    let records = bySpec.values.sorted {
        $0.spec.identifier != $1.spec.identifier ? $0.spec.identifier < $1.spec.identifier : ModelLabel($0).text < ModelLabel($1).text
    }
    return (records, unreadable)
}

/// A record as `writeJSON` wrote it (non-finite numbers as "nan", "inf", "-inf"); the error is one
/// line naming the field.
func decodeRecord(_ file: URL) throws -> RunRecord {
    if let kind = nonRegularFileKind(file.path) { throw ExperimentError(.unreadableFile, "is \(kind), not a regular file") }
    let data: Data
    do { data = try Data(contentsOf: file) } catch { throw ExperimentError(.unreadableFile, "cannot be read (\(error.localizedDescription))") }
    do { return try decodeJSON(RunRecord.self, from: data) } catch let e as DecodingError {
        throw ExperimentError(.unreadableFile, "not a record: \(describe(e))")
    }
}

// MARK: - Writing

/// Reads the records under `directory` and writes results.md, results.csv, results.tex and report.html into it.
public func writeReport(directory: URL) throws -> ReportSummary {
    let (records, unreadable) = try readRunRecords(under: directory)
    return try writeReport(records: records, unreadable: unreadable, directory: directory)
}

/// Writes the report of `records` into `directory`.
public func writeReport(records: [RunRecord], unreadable: [UnreadableRecord] = [], directory: URL) throws -> ReportSummary {
    let report = Report(records: records, unreadable: unreadable)
    let files: [(String, String)] = [
        ("results.md", renderMarkdown(report)),
        ("results.csv", renderCSV(report.rows)),
        ("results.tex", renderTeX(report)),
        ("report.html", renderHTML(report)),
    ]
    var written: [URL] = []
    for (name, text) in files {
        let url = directory.appendingPathComponent(name)
        try writeAtomically(Data(text.utf8), to: url)
        written.append(url)
    }
    return ReportSummary(unreadable: unreadable, written: written, records: records.count, succeeded: report.ok, failed: report.failed.count)
}

/// The markdown tables of `records` (what results.md holds); ends with one newline.
public func renderMarkdownTables(records: [RunRecord]) -> String {
    renderMarkdown(Report(records: records))
}

/// The LaTeX tables of `records` (what results.tex holds).
public func renderLaTeXTables(records: [RunRecord]) -> String {
    renderTeX(Report(records: records))
}

/// The aggregated rows of `records` (what results.csv holds).
public func resultRows(records: [RunRecord]) -> [ResultRow] {
    Report(records: records).rows
}

// MARK: - Models

/// The finished records split by model and precision (one `ReportData` each, nothing averaged
/// across them), and the failed cells.
struct Report {
    let groups: [ReportData]
    let failed: [RunRecord]
    var unreadable: [UnreadableRecord] = []
    var ok: Int { groups.map(\.ok.count).reduce(0, +) }
    var rows: [ResultRow] { groups.flatMap(\.rows) }
    /// More than one model or precision: every heading names its group.
    var several: Bool { groups.count > 1 }

    init(records: [RunRecord], unreadable: [UnreadableRecord] = []) {
        self.unreadable = unreadable
        failed = records.filter { $0.status == .failed }
        var byModel: [String: (ModelLabel, [RunRecord])] = [:]
        for r in records where r.status == .ok {
            let label = ModelLabel(r)
            byModel[label.identity, default: (label, [])].1.append(r)
        }
        groups = byModel.isEmpty ? [ReportData(records: [])]   // no finished run: each section says so
            : byModel.values.sorted { $0.0.text < $1.0.text }.map { ReportData(records: $0.1, model: $0.0) }
    }
}

// MARK: - Aggregation

/// A cell of the results: everything but the seed.
struct RowKey: Hashable {
    var protocolKind: ProtocolKind
    var dataset: String
    var method: String
    var shots: Int
    var tau: Double
    var metric: String
}

/// The records of a report and the rows aggregated from them, with the orderings tables use.
struct ReportData {
    let ok: [RunRecord]
    let failed: [RunRecord]
    let rows: [ResultRow]
    /// One style (colour, marker, dash) per method, the same in every plot.
    let methodStyles: [String: SeriesStyle]
    private let index: [RowKey: ResultRow]

    /// The model and precision of every record (nil for a report without finished records).
    let model: ModelLabel?
    /// Evaluation names in order of first appearance (the papers' target order).
    let evaluationOrder: [String]
    /// Cross-dataset / DG rows (dataset|method|shots|tau) whose average over targets misses a
    /// target in some seed, with the missing targets.
    let missingTargets: [String: [String]]

    init(records: [RunRecord], model: ModelLabel? = nil) {
        ok = records.filter { $0.status == .ok }
        failed = records.filter { $0.status == .failed }
        self.model = model ?? ok.first.map(ModelLabel.init)
        var order: [String] = []
        for r in ok { for e in r.evaluations where !order.contains(e.name) { order.append(e.name) } }
        evaluationOrder = order
        var missing: [String: [String]] = [:]
        for r in ok where r.spec.protocolKind == .crossDataset || r.spec.protocolKind == .domainGeneralization {
            // The record's own `targets_missing`, else the spec's targets without an evaluation (older records).
            let have = Set(r.evaluations.map(\.name))
            let lost = r.targetsMissing ?? r.spec.targets.filter { !have.contains($0) }
            let key = ReportData.transferKey(r.spec.dataset, r.spec.reportMethod, r.spec.shots, r.spec.imbalance)
            for t in lost where !(missing[key] ?? []).contains(t) { missing[key, default: []].append(t) }
        }
        missingTargets = missing
        let methods = Array(Set(records.map(\.spec.reportMethod))).sorted(by: methodPrecedes)
        methodStyles = Dictionary(uniqueKeysWithValues: methods.enumerated().map { ($1, SeriesStyle.at($0)) })
        var values: [RowKey: [Double]] = [:]
        for record in ok {
            let s = record.spec
            for (metric, value) in headlineMetrics(record) {
                values[RowKey(protocolKind: s.protocolKind, dataset: s.dataset, method: s.reportMethod, shots: s.shots,
                              tau: s.imbalance, metric: metric), default: []].append(100 * value)
            }
        }
        var index: [RowKey: ResultRow] = [:]
        for (key, v) in values {
            index[key] = ResultRow(key: key, mean: Statistics.mean(v)!, std: Statistics.sampleStd(v), n: v.count, over: .seeds)
        }
        ReportData.addHarmonicMeans(&index, over: .seeds)
        // Averages over the datasets of each (protocol, tau), for methods that have all of them.
        let averaged: Set<ProtocolKind> = [.fewShot, .baseToNovel]
        var datasets: [String: Set<String>] = [:]  // "protocol|tau" -> datasets
        for key in index.keys where averaged.contains(key.protocolKind) {
            datasets["\(key.protocolKind.rawValue)|\(key.tau)", default: []].insert(key.dataset)
        }
        var groups: [RowKey: [Double]] = [:]
        for (key, row) in index where averaged.contains(key.protocolKind) && key.metric != "hm" {
            var k = key
            k.dataset = averageDatasetName
            groups[k, default: []].append(row.mean)
        }
        for (key, means) in groups {
            let all = datasets["\(key.protocolKind.rawValue)|\(key.tau)"]?.count ?? 0
            guard all >= 2, means.count == all else { continue }
            index[key] = ResultRow(key: key, mean: Statistics.mean(means)!, std: nil, n: all, over: .datasets)
        }
        ReportData.addHarmonicMeans(&index, over: .datasets)
        self.index = index
        let (modelText, precision) = (self.model?.model ?? "", self.model?.precision ?? "fp32")
        rows = index.values.sorted(by: ReportData.precedes).map { row in
            var r = row
            r.model = modelText; r.precision = precision
            return r
        }
    }

    static func transferKey(_ dataset: String, _ method: String, _ shots: Int, _ tau: Double) -> String {
        "\(dataset)|\(method)|\(shots)|\(tau)"
    }

    /// HM rows from the base and novel means of every base-to-novel cell aggregated `over`.
    private static func addHarmonicMeans(_ index: inout [RowKey: ResultRow], over: ResultRow.Over) {
        for (key, base) in index where key.protocolKind == .baseToNovel && key.metric == "base" && base.over == over {
            var k = key
            k.metric = "novel"
            guard let novel = index[k] else { continue }
            k.metric = "hm"
            index[k] = ResultRow(key: k, mean: harmonicMean(base.mean, novel.mean), std: nil, n: min(base.n, novel.n), over: over)
        }
    }

    func row(_ p: ProtocolKind, _ dataset: String, _ method: String, shots: Int, tau: Double, _ metric: String) -> ResultRow? {
        index[RowKey(protocolKind: p, dataset: dataset, method: method, shots: shots, tau: tau, metric: metric)]
    }

    /// The rows of one protocol (any dataset), optionally of one tau.
    func rows(_ p: ProtocolKind, tau: Double? = nil) -> [ResultRow] {
        rows.filter { $0.protocolKind == p && (tau == nil || $0.tau == tau) }
    }

    /// Taus of a protocol, balanced first (1, 0.25, 0.06).
    func taus(_ p: ProtocolKind) -> [Double] { Array(Set(rows(p).map(\.tau))).sorted(by: >) }

    /// Datasets of the rows, alphabetically, the average last.
    static func datasets(_ rows: [ResultRow]) -> [String] {
        let names = Set(rows.map(\.dataset))
        return names.subtracting([averageDatasetName]).sorted() + (names.contains(averageDatasetName) ? [averageDatasetName] : [])
    }

    /// Methods of the rows: baselines first, then alphabetically.
    static func methods(_ rows: [ResultRow]) -> [String] { Array(Set(rows.map(\.method))).sorted(by: methodPrecedes) }

    static func shots(_ rows: [ResultRow]) -> [Int] { Array(Set(rows.map(\.shots))).sorted() }

    static func precedes(_ a: ResultRow, _ b: ResultRow) -> Bool {
        let order = ProtocolKind.allCases
        if a.protocolKind != b.protocolKind { return order.firstIndex(of: a.protocolKind)! < order.firstIndex(of: b.protocolKind)! }
        if a.dataset != b.dataset {
            if a.dataset == averageDatasetName || b.dataset == averageDatasetName { return b.dataset == averageDatasetName }
            return a.dataset < b.dataset
        }
        if a.method != b.method { return methodPrecedes(a.method, b.method) }
        if a.shots != b.shots { return a.shots < b.shots }
        if a.tau != b.tau { return a.tau > b.tau }
        return metricPrecedes(a.metric, b.metric)
    }
}

extension ResultRow {
    init(key: RowKey, mean: Double, std: Double?, n: Int, over: Over) {
        self.init(protocolKind: key.protocolKind, dataset: key.dataset, method: key.method, shots: key.shots,
                  tau: key.tau, metric: key.metric, mean: mean, std: std, n: n, over: over)
    }
}

/// The numbers a record contributes to the tables (fractions), by metric name.
func headlineMetrics(_ r: RunRecord) -> [(String, Double)] {
    func evaluation(_ name: String) -> Double? { r.evaluations.first { $0.name == name }?.accuracy }
    switch r.spec.protocolKind {
    case .fewShot, .longTailed:
        return [(r.accuracy ?? evaluation("test")).map { ("accuracy", $0) }].compactMap { $0 } + shotGroupMetrics(r)
    case .baseToNovel:
        return [(r.base ?? evaluation("base")).map { ("base", $0) }, (r.novel ?? evaluation("novel")).map { ("novel", $0) }]
            .compactMap { $0 } + shotGroupMetrics(r)
    case .crossDataset, .domainGeneralization:
        var out = r.evaluations.map { ($0.name, $0.accuracy) }
        if let mean = r.accuracy { out.append(("average", mean)) }
        return out + shotGroupMetrics(r)
    }
}

/// The metric names of many / medium / few-shot accuracy (on the training dataset's own test set).
let shotGroupMetricNames = ["many_shot", "medium_shot", "few_shot"]

/// The test set of the training classes: `test`, `base`, or the source's own test set.
func ownEvaluation(_ r: RunRecord) -> EvaluationSummary? {
    let name = r.spec.protocolKind == .fewShot || r.spec.protocolKind == .longTailed ? "test"
        : r.spec.protocolKind == .baseToNovel ? "base" : r.spec.dataset
    return r.evaluations.first { $0.name == name }
}

/// Many / medium / few-shot accuracy of the record's own test set, where recorded.
func shotGroupMetrics(_ r: RunRecord) -> [(String, Double)] {
    guard let e = ownEvaluation(r) else { return [] }
    return zip(shotGroupMetricNames, [e.manyShot, e.mediumShot, e.fewShot]).compactMap { name, v in v.map { (name, $0) } }
}

/// Baselines first (zero-shot, linear probe), then the prompt methods alphabetically.
func methodPrecedes(_ a: String, _ b: String) -> Bool {
    let rank = ["zeroshot": 0, "linear-probe": 1]
    let (ra, rb) = (rank[a] ?? 2, rank[b] ?? 2)
    return ra != rb ? ra < rb : a < b
}

/// Base, novel, HM; the source's own test set before the targets; the average over targets last.
func metricPrecedes(_ a: String, _ b: String) -> Bool {
    let rank = ["accuracy": 0, "test": 0, "base": 1, "novel": 2, "hm": 3, "many_shot": 6, "medium_shot": 7, "few_shot": 8, "average": 9]
    let (ra, rb) = (rank[a] ?? 5, rank[b] ?? 5)
    return ra != rb ? ra < rb : a < b
}

/// "1", "0.25", "0.06".
func tauLabel(_ tau: Double) -> String { formatNumber(tau) }
