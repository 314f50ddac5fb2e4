import Foundation

// The results tables, laid out like the papers' (rows = methods), and their markdown and CSV forms.

/// One table: a title, a caption saying what the numbers are, a header and rows of text.
struct ReportTable {
    var title: String
    var caption: String
    var header: [String]
    var rows: [[String]]
}

/// A protocol's tables under one heading.
struct TableSection {
    var heading: String
    var tables: [ReportTable]
}

// MARK: - Building

/// Every results table of `data`, by protocol; imbalance tables (by tau) where a protocol has several taus.
func resultTables(_ data: ReportData) -> [TableSection] {
    var sections: [TableSection] = []
    let fewShot = data.taus(.fewShot).flatMap { fewShotTables(data, tau: $0) }
    if !fewShot.isEmpty { sections.append(TableSection(heading: "Few-shot", tables: fewShot)) }
    let b2n = data.taus(.baseToNovel).flatMap { baseToNovelTables(data, tau: $0) }
    if !b2n.isEmpty { sections.append(TableSection(heading: "Base-to-novel", tables: b2n)) }
    let imbalance = imbalanceTables(data, .fewShot) + imbalanceTables(data, .baseToNovel)
    if !imbalance.isEmpty { sections.append(TableSection(heading: "Class imbalance", tables: imbalance)) }
    for (p, heading) in [(ProtocolKind.crossDataset, "Cross-dataset"), (.domainGeneralization, "Domain generalisation")] {
        let tables = transferTables(data, p)
        if !tables.isEmpty { sections.append(TableSection(heading: heading, tables: tables)) }
    }
    return sections
}

/// " (tau = 0.25)" where the protocol has several taus or an imbalanced one; "" otherwise.
func tauSuffix(_ tau: Double, of taus: [Double]) -> String {
    taus.count > 1 || tau != 1 ? " (tau = \(tauLabel(tau)))" : ""
}

/// The title part naming a dataset or the average.
func datasetTitle(_ dataset: String, datasets: Int) -> String {
    dataset == averageDatasetName ? "average over \(datasets) datasets" : dataset
}

/// Shots settings run at several taus (the only ones an imbalance table or plot is drawn for).
func imbalancedShots(_ rows: [ResultRow]) -> [Int] {
    ReportData.shots(rows).filter { k in Set(rows.filter { $0.shots == k }.map(\.tau)).count > 1 }
}

/// The number of seeds most cells of a table have; other cells show their own n.
private func typicalSeeds(_ rows: [ResultRow]) -> Int {
    rows.filter { $0.over == .seeds && $0.metric != "hm" }.map(\.n).max() ?? 1
}

/// "72.35 ± 1.20", "72.35" (one seed, HM of means, averages), "–" (no run).
func formatCell(_ row: ResultRow?, typicalN: Int) -> String {
    guard let row else { return "–" }
    var text = String(format: "%.2f", row.mean)
    if let std = row.std { text += String(format: " ± %.2f", std) }
    if row.over == .seeds && row.n != typicalN && row.metric != "hm" { text += " (n=\(row.n))" }
    return text
}

/// What a seed-aggregated number is.
private func seedCaption(_ n: Int) -> String {
    n > 1 ? "mean ± sample std (n − 1) over n = \(n) seeds (cells with another n say so)"
        : "one seed per cell, so no std"
}

private let averageCaption =
    "Mean over the datasets of the per-dataset seed means, for methods run on every dataset; no std."

private func fewShotTables(_ data: ReportData, tau: Double) -> [ReportTable] {
    let rows = data.rows(.fewShot, tau: tau)
    let shots = ReportData.shots(rows), methods = ReportData.methods(rows)
    let datasets = ReportData.datasets(rows)
    let n = typicalSeeds(rows), suffix = tauSuffix(tau, of: data.taus(.fewShot))
    return datasets.map { ds in
        let body: [[String]] = methods.compactMap { m in
            let cells = shots.map { data.row(.fewShot, ds, m, shots: $0, tau: tau, "accuracy") }
            return cells.allSatisfy({ $0 == nil }) ? nil : [m] + cells.map { formatCell($0, typicalN: n) }
        }
        let caption = ds == averageDatasetName ? "Test accuracy (%) by shots per class. " + averageCaption
            : "Test accuracy (%) by shots per class; \(seedCaption(n))."
        return ReportTable(title: "Few-shot: \(datasetTitle(ds, datasets: datasets.count - 1))\(suffix)", caption: caption,
                           header: ["Method"] + shots.map { $0 == 1 ? "1 shot" : "\($0) shots" }, rows: body)
    }
}

private func baseToNovelTables(_ data: ReportData, tau: Double) -> [ReportTable] {
    let all = data.rows(.baseToNovel, tau: tau)
    let shotList = ReportData.shots(all)
    let suffix = tauSuffix(tau, of: data.taus(.baseToNovel))
    return shotList.flatMap { k -> [ReportTable] in
        let rows = all.filter { $0.shots == k }
        let methods = ReportData.methods(rows), datasets = ReportData.datasets(rows)
        let n = typicalSeeds(rows)
        let shotsPart = shotList.count > 1 ? ", \(k) shots" : ""
        return datasets.map { ds in
            let body: [[String]] = methods.compactMap { m in
                let cells = ["base", "novel", "hm"].map { data.row(.baseToNovel, ds, m, shots: k, tau: tau, $0) }
                return cells.allSatisfy({ $0 == nil }) ? nil : [m] + cells.map { formatCell($0, typicalN: n) }
            }
            let caption = ds == averageDatasetName
                ? "Accuracy (%) on base and novel classes. " + averageCaption
                    + " HM = harmonic mean of the average base and average novel accuracies."
                : "Accuracy (%) on base classes (base names) and novel classes (novel names); \(seedCaption(n)). "
                    + "HM = harmonic mean of the seed-mean base and seed-mean novel accuracies, as the papers compute it, hence no std."
            return ReportTable(title: "Base-to-novel: \(datasetTitle(ds, datasets: datasets.count - 1))\(shotsPart)\(suffix)",
                               caption: caption, header: ["Method", "Base", "Novel", "HM"], rows: body)
        }
    }
}

/// Accuracy (few-shot) or HM (base-to-novel) by tau, for shots settings run at several taus.
private func imbalanceTables(_ data: ReportData, _ p: ProtocolKind) -> [ReportTable] {
    let taus = data.taus(p)
    guard taus.count > 1 else { return [] }
    let metric = p == .fewShot ? "accuracy" : "hm"
    let all = data.rows(p).filter { $0.metric == metric }
    return imbalancedShots(all).flatMap { k -> [ReportTable] in
        let rows = all.filter { $0.shots == k }
        let methods = ReportData.methods(rows), datasets = ReportData.datasets(rows)
        let n = typicalSeeds(rows)
        return datasets.map { ds in
            let body: [[String]] = methods.compactMap { m in
                let cells = taus.map { data.row(p, ds, m, shots: k, tau: $0, metric) }
                return cells.allSatisfy({ $0 == nil }) ? nil : [m] + cells.map { formatCell($0, typicalN: n) }
            }
            let what = p == .fewShot ? "Test accuracy (%)" : "Base-to-novel HM (%) of the seed-mean base and novel accuracies"
            let spread = ds == averageDatasetName ? averageCaption : (p == .fewShot ? "\(seedCaption(n))." : "no std.")
            return ReportTable(title: "Imbalance, \(p.rawValue), \(k) shots: \(datasetTitle(ds, datasets: datasets.count - 1))",
                               caption: "\(what) by imbalance tau (1 = balanced; head classes keep \(k) shots); \(spread)",
                               header: ["Method"] + taus.map { "tau = \(tauLabel($0))" }, rows: body)
        }
    }
}

/// Cross-dataset and domain generalisation: the source and each target, per source, shots and tau.
private func transferTables(_ data: ReportData, _ p: ProtocolKind) -> [ReportTable] {
    var groups: [String: [ResultRow]] = [:]
    for row in data.rows(p) { groups["\(row.dataset)|\(row.shots)|\(row.tau)", default: []].append(row) }
    let taus = data.taus(p)
    return groups.values.sorted { ReportData.precedes($0[0], $1[0]) }.map { rows in
        let (source, k, tau) = (rows[0].dataset, rows[0].shots, rows[0].tau)
        let metrics = Array(Set(rows.map(\.metric))).sorted { a, b in
            (a == source) != (b == source) ? a == source : metricPrecedes(a, b)
        }
        let n = typicalSeeds(rows)
        let body: [[String]] = ReportData.methods(rows).map { m in
            [m] + metrics.map { formatCell(data.row(p, source, m, shots: k, tau: tau, $0), typicalN: n) }
        }
        let header = metrics.map { metric in
            metric == "average" ? "Average over targets" : (metric == source || metric == "test") ? "\(source) (source)" : metric
        }
        let name = p == .crossDataset ? "Cross-dataset" : "Domain generalisation"
        return ReportTable(title: "\(name): \(source) → targets, \(k) shots\(tauSuffix(tau, of: taus))",
                           caption: "Test accuracy (%) on the source and on each target; \(seedCaption(n)).",
                           header: ["Method"] + header, rows: body)
    }
}

// MARK: - Markdown and CSV

/// results.md: every table, the NC-accuracy correlations and the failed cells.
func renderMarkdown(_ data: ReportData) -> String {
    var out = "# PromptTune results\n\n"
    out += "\(data.ok.count + data.failed.count) runs: \(data.ok.count) finished, \(data.failed.count) failed. "
    out += "Accuracies in percent; ± is the sample standard deviation (n − 1) over seeds.\n"
    for section in resultTables(data) {
        out += "\n## \(section.heading)\n"
        for table in section.tables { out += "\n" + markdownTable(table) }
    }
    let correlations = ncCorrelations(data.ok).filter { $0.points.count >= 2 }
    if !correlations.isEmpty {
        out += "\n## Neural collapse against test accuracy\n\n" + markdownTable(correlationTable(correlations))
    }
    if !data.failed.isEmpty {
        out += "\n## Failed cells\n\n" + data.failed.map { "- " + failedLine($0) }.joined(separator: "\n") + "\n"
    }
    return out
}

func markdownTable(_ t: ReportTable) -> String {
    func line(_ cells: [String]) -> String {
        "| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |\n"
    }
    // Numbers right-aligned, words (the method, a definition) left-aligned.
    let numeric = t.header.indices.map { c in
        c > 0 && t.rows.allSatisfy { row in c >= row.count || row[c].first.map { "0123456789-–u".contains($0) } ?? true }
    }
    var out = "### \(t.title)\n\n\(t.caption)\n\n" + line(t.header)
    out += "|" + numeric.map { $0 ? " ---: |" : " :--- |" }.joined() + "\n"
    for row in t.rows { out += line(row) }
    return out
}

/// The NC measures' correlations with test accuracy, one row per measure.
func correlationTable(_ correlations: [NCCorrelation]) -> ReportTable {
    ReportTable(title: "Correlation of each NC measure with test accuracy",
                caption: "One point per finished run and evaluation set (the measure on that set's features against its accuracy); "
                    + "Pearson r and Spearman rank correlation over all points. \"undefined\" means the measure did not vary: "
                    + "the image-side measures depend only on the frozen image features, so they are the same for every run on one test set.",
                header: ["Measure", "Points", "Pearson r", "Spearman ρ", "What it measures"],
                rows: correlations.map { c in
                    [c.measure.name, "\(c.points.count)", formatCorrelation(c.pearson), formatCorrelation(c.spearman), c.measure.definition]
                })
}

func formatCorrelation(_ r: Double?) -> String { r.map { String(format: "%.3f", $0) } ?? "undefined" }

/// "`few-shot_dtd_coop_4shot_seed1`: few-shot, dtd, coop, 4 shots, seed 1, tau 1: the error".
func failedLine(_ r: RunRecord) -> String {
    let s = r.spec
    return "`\(s.identifier)`: \(s.protocolKind.rawValue), \(s.dataset), \(s.method), \(s.shots) shots, seed \(s.seed), "
        + "tau \(tauLabel(s.imbalance)): \(r.error ?? "no error recorded")"
}

/// results.csv: one row per (protocol, dataset, method, shots, tau, metric), long format.
func renderCSV(_ rows: [ResultRow]) -> String {
    func field(_ s: String) -> String {
        s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
    var out = "protocol,dataset,method,shots,tau,metric,mean,std,n,over\n"
    for r in rows {
        let cells = [r.protocolKind.rawValue, r.dataset, r.method, "\(r.shots)", tauLabel(r.tau), r.metric,
                     String(format: "%.4f", r.mean), r.std.map { String(format: "%.4f", $0) } ?? "", "\(r.n)", r.over.rawValue]
        out += cells.map(field).joined(separator: ",") + "\n"
    }
    return out
}
