import Analysis
import Foundation

// The results tables, laid out like the papers' (rows = methods), and their markdown and CSV forms.

/// One table: a title, a caption saying what the numbers are, a header and rows of text.
struct ReportTable {
    var title: String
    var caption: String
    var header: [String]
    var rows: [[String]]
    /// Tables of one kind that differ only in their dataset (same `group`) print as one LaTeX
    /// table with a block per dataset (`block`), as the papers lay them out.
    var group: String? = nil
    var block: String? = nil
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
    let groups = ProtocolKind.allCases.flatMap { shotGroupTables(data, $0) }
    if !groups.isEmpty { sections.append(TableSection(heading: "Many / medium / few-shot classes", tables: groups)) }
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
                           header: ["Method"] + shots.map { $0 == 1 ? "1 shot" : "\($0) shots" }, rows: body,
                           group: "Few-shot\(suffix)", block: datasetTitle(ds, datasets: datasets.count - 1))
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
        let shotsPart = shotList.count > 1 ? ", \(shotsText(k))" : ""
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
                               caption: caption, header: ["Method", "Base", "Novel", "HM"], rows: body,
                               group: "Base-to-novel\(shotsPart)\(suffix)", block: datasetTitle(ds, datasets: datasets.count - 1))
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
            return ReportTable(title: "Imbalance, \(p.rawValue), \(shotsText(k)): \(datasetTitle(ds, datasets: datasets.count - 1))",
                               caption: "\(what) by imbalance tau (1 = balanced; head classes keep \(shotsText(k))); \(spread)",
                               header: ["Method"] + taus.map { "tau = \(tauLabel($0))" }, rows: body,
                               group: "Imbalance, \(p.rawValue), \(shotsText(k))", block: datasetTitle(ds, datasets: datasets.count - 1))
        }
    }
}

/// "1 shot", "16 shots".
func shotsText(_ k: Int) -> String { k == 0 ? "all training images" : k == 1 ? "1 shot" : "\(k) shots" }

/// Many / medium / few-shot accuracy on the training dataset's own test set (and the whole set's),
/// per dataset and shots, one row per method and tau, where the records hold it (`ShotGroups.rule`).
private func shotGroupTables(_ data: ReportData, _ p: ProtocolKind) -> [ReportTable] {
    let all = data.rows(p).filter { shotGroupMetricNames.contains($0.metric) }
    guard !all.isEmpty else { return [] }
    let set = p == .fewShot ? "test set" : p == .longTailed ? "balanced test set"
        : p == .baseToNovel ? "base test set (novel classes were not trained on: no group)" : "source's test set"
    let overall = p == .fewShot || p == .longTailed ? "accuracy" : p == .baseToNovel ? "base" : nil
    let taus = data.taus(p)
    var out: [ReportTable] = []
    for k in ReportData.shots(all) {
        let rows = all.filter { $0.shots == k }
        let datasets = ReportData.datasets(rows), n = typicalSeeds(rows)
        for ds in datasets {
            var body: [[String]] = []
            for m in ReportData.methods(rows) {
                for tau in taus {
                    let cells = shotGroupMetricNames.map { data.row(p, ds, m, shots: k, tau: tau, $0) }
                    guard !cells.allSatisfy({ $0 == nil }) else { continue }
                    let whole = overall.map { data.row(p, ds, m, shots: k, tau: tau, $0) } ?? data.row(p, ds, m, shots: k, tau: tau, ds)
                    // The long-tailed protocol has no tau: its datasets are long-tailed as they are.
                    body.append([m] + (p == .longTailed ? [] : [tauLabel(tau)]) + (cells + [whole]).map { formatCell($0, typicalN: n) })
                }
            }
            guard !body.isEmpty else { continue }
            let seeds = seedCaption(n)
            let spread = ds == averageDatasetName ? averageCaption : seeds.prefix(1).uppercased() + seeds.dropFirst() + "."
            // The long-tailed protocol names its rule in every record; the tau protocol has one rule.
            let rules = Set(data.ok.filter { $0.spec.protocolKind == p && $0.spec.dataset == ds && $0.spec.shots == k }.compactMap(\.shotGroupsRule))
            let caption = p == .longTailed
                ? "Class-mean accuracy (%) on the \(set) of the many-, medium- and few-shot classes, and the whole set's accuracy. "
                    + "Rule: \(rules.sorted().joined(separator: "; and for some runs: ")). "
                : "Class-mean accuracy (%) on the \(set) of the many-, medium- and few-shot classes, and the whole set's accuracy, "
                    + "by imbalance tau. Rule: \(ShotGroups.rule). At tau = 1 every class has the same count, so its groups are the "
                    + "same classes trained balanced. "
            out.append(ReportTable(
                title: "Many / medium / few, \(p.rawValue), \(shotsText(k)): \(datasetTitle(ds, datasets: datasets.count - 1))",
                caption: caption + spread,
                header: ["Method"] + (p == .longTailed ? [] : ["tau"]) + ["Many", "Medium", "Few", "All"], rows: body,
                group: "Many / medium / few, \(p.rawValue), \(shotsText(k))", block: datasetTitle(ds, datasets: datasets.count - 1)))
        }
    }
    return out
}

/// The columns of a cross-dataset / DG table: the source, the targets in the order the records
/// evaluate them (the papers' order), the average last.
func transferMetrics(_ data: ReportData, _ rows: [ResultRow], source: String) -> [String] {
    let present = Set(rows.map(\.metric)).subtracting(shotGroupMetricNames)
    let order = [source] + data.evaluationOrder.filter { $0 != source }
    return order.filter(present.contains) + present.subtracting(order).subtracting(["average"]).sorted()
        + (present.contains("average") ? ["average"] : [])
}

/// Footnote of a transfer table whose average misses targets in some run; nil where none does.
func missingTargetsNote(_ data: ReportData, _ methods: [String], source: String, shots: Int, tau: Double) -> String? {
    let lines = methods.compactMap { m -> String? in
        data.missingTargets[ReportData.transferKey(source, m, shots, tau)].map { "\(m) (without \($0.joined(separator: ", ")))" }
    }
    return lines.isEmpty ? nil : "† average over fewer targets than the others: " + lines.joined(separator: "; ") + "."
}

/// Cross-dataset and domain generalisation: the source and each target, per source, shots and tau.
private func transferTables(_ data: ReportData, _ p: ProtocolKind) -> [ReportTable] {
    var groups: [String: [ResultRow]] = [:]
    for row in data.rows(p) { groups["\(row.dataset)|\(row.shots)|\(row.tau)", default: []].append(row) }
    let taus = data.taus(p)
    return groups.values.sorted { ReportData.precedes($0[0], $1[0]) }.map { rows in
        let (source, k, tau) = (rows[0].dataset, rows[0].shots, rows[0].tau)
        let metrics = transferMetrics(data, rows, source: source)
        let n = typicalSeeds(rows)
        let methods = ReportData.methods(rows)
        let body: [[String]] = methods.map { m in
            [m] + metrics.map { metric in
                let cell = formatCell(data.row(p, source, m, shots: k, tau: tau, metric), typicalN: n)
                let short = metric == "average" && data.missingTargets[ReportData.transferKey(source, m, k, tau)] != nil
                return short ? cell + " †" : cell
            }
        }
        let header = metrics.map { metric in
            metric == "average" ? "Average over targets" : (metric == source || metric == "test") ? "\(source) (source)" : metric
        }
        let name = p == .crossDataset ? "Cross-dataset" : "Domain generalisation"
        let note = missingTargetsNote(data, methods, source: source, shots: k, tau: tau).map { " " + $0 } ?? ""
        return ReportTable(title: "\(name): \(source) → targets, \(shotsText(k))\(tauSuffix(tau, of: taus))",
                           caption: "Test accuracy (%) on the source and on each target; \(seedCaption(n)).\(note)",
                           header: ["Method"] + header, rows: body)
    }
}

// MARK: - Markdown and CSV

/// results.md: every table, the NC-accuracy correlations and the failed cells, one part per model
/// and precision where there are several. Ends with exactly one newline.
func renderMarkdown(_ report: Report) -> String {
    var out = "# PromptTune results\n\n"
    out += "\(report.ok + report.failed.count) runs: \(report.ok) finished, \(report.failed.count) failed. "
    out += "Accuracies in percent; ± is the sample standard deviation (n − 1) over seeds.\n"
    if report.several {
        out += "\nRecords of \(report.groups.count) models or precisions: each has its own tables; nothing is averaged across them.\n"
    } else if let model = report.groups.first?.model {
        out += "\nModel: \(markdownEscape(model.text)).\n"
    }
    let h = report.several ? "###" : "##"
    for data in report.groups {
        if report.several, let model = data.model { out += "\n## Model: \(markdownEscape(model.text))\n" }
        for section in resultTables(data) {
            out += "\n\(h) \(markdownEscape(section.heading))\n"
            for table in section.tables { out += "\n" + markdownTable(table, level: h + "#") }
        }
        let nc = ncTables(data)
        if !nc.isEmpty {
            out += "\n\(h) Neural collapse against test accuracy\n"
            for table in nc { out += "\n" + markdownTable(table, level: h + "#") }
        }
    }
    if !report.failed.isEmpty {
        out += "\n## Failed cells\n\n" + report.failed.map { "- " + markdownEscape(failedLine($0)) }.joined(separator: "\n") + "\n"
    }
    if !report.unreadable.isEmpty {
        out += "\n## Unreadable records\n\nLeft out of every table:\n\n"
            + report.unreadable.map { "- " + markdownEscape("\($0.url.path): \($0.reason)") }.joined(separator: "\n") + "\n"
    }
    return out
}

/// `s` as literal Markdown text: names from records (methods, datasets, model files, errors) may
/// hold characters that Markdown or the HTML it allows would read as markup.
func markdownEscape(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "\\", "|", "*", "`", "[", "]", "#": out += "\\\(c)"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "&": out += "&amp;"
        case "\n", "\r": out += " "
        default: out.append(c)
        }
    }
    return out
}

func markdownTable(_ t: ReportTable, level: String = "###") -> String {
    func line(_ cells: [String]) -> String {
        "| " + cells.map(markdownEscape).joined(separator: " | ") + " |\n"
    }
    // Numbers right-aligned, words (the method, a definition) left-aligned.
    let numeric = t.header.indices.map { c in
        c > 0 && t.rows.allSatisfy { row in c >= row.count || row[c].first.map { "0123456789-–u".contains($0) } ?? true }
    }
    var out = "\(level) \(markdownEscape(t.title))\n\n\(markdownEscape(t.caption))\n\n" + line(t.header)
    out += "|" + numeric.map { $0 ? " ---: |" : " :--- |" }.joined() + "\n"
    for row in t.rows { out += line(row) }
    return out
}

/// The neural-collapse tables of a group: per dataset and evaluation set, the pooled correlations,
/// and the measures per method.
func ncTables(_ data: ReportData) -> [ReportTable] {
    let points = ncPoints(data.ok)
    var out: [ReportTable] = []
    for g in ncGroups(points) { out.append(correlationTable(ncCorrelations(g.points), title: g.title, pooled: false)) }
    let pooled = ncCorrelations(points).filter { $0.points.count >= 2 }
    if !pooled.isEmpty && ncGroups(points).count > 1 { out.append(correlationTable(pooled, title: "pooled over every dataset and evaluation set", pooled: true)) }
    out += ncByMethodTables(points)
    return out
}

/// The NC measures' correlations with test accuracy, one row per measure.
func correlationTable(_ correlations: [NCCorrelation], title: String, pooled: Bool) -> ReportTable {
    let scope = pooled
        ? "Pooled: one point per distinct trained run and evaluation set of every dataset, so differences between datasets "
            + "dominate; the per-dataset tables are the NPT paper's analysis."
        : "One point per distinct trained run (zero-shot and the linear probe have no prompt and are left out; "
            + "cells that repeat a run, such as 1 shot at every tau, count once)."
    return ReportTable(title: "NC against test accuracy, \(title)",
                caption: scope + " Pearson r and Spearman rank correlation of the measure on the set's features against its accuracy. "
                    + "\"constant\" means every run has the same value (the image-side measures of frozen features), so there is no correlation.",
                header: ["Measure", "Points", "Pearson r", "Spearman ρ", "What it measures"],
                rows: correlations.map { c in
                    let constant = c.constant.map { "constant (\(String(format: "%.4g", $0)))" }
                        ?? (c.constantWithinDatasets ? "constant within each dataset" : nil)
                    return [c.measure.name, "\(c.points.count)", constant ?? formatCorrelation(c.pearson),
                            constant ?? formatCorrelation(c.spearman), c.measure.definition]
                })
}

/// The measures of each method on each (dataset, evaluation set), mean over its distinct runs: the
/// image side of `dapt` / `vpt` (prompted features) beside the frozen features of the text-only methods.
func ncByMethodTables(_ points: [NCRunPoint]) -> [ReportTable] {
    let shown = NCMeasure.shown(points.map(\.nc)).filter {
        ["image-nc1", "image-etf-error", "text-etf-error", "nc3", "nc4", NCMeasure.clusterETF.key].contains($0.key)
    }
    return ncGroups(points).map { g in
        let methods = Array(Set(g.points.map(\.method))).sorted(by: methodPrecedes)
        let rows = methods.map { m -> [String] in
            let mine = g.points.filter { $0.method == m }
            let values = shown.map { measure in
                Statistics.mean(mine.map { measure.value($0.nc) }.filter(\.isFinite)).map { String(format: "%.4f", $0) } ?? "–"
            }
            return [m, "\(mine.count)"] + values + [String(format: "%.2f", Statistics.mean(mine.map(\.accuracy)) ?? .nan)]
        }
        return ReportTable(title: "NC measures by method, \(g.title)",
                           caption: "Mean over each method's distinct trained runs. The image side (NC1, image ETF error) is the same "
                               + "for every method on frozen features; dapt and vpt measure the features of their prompted image tower.",
                           header: ["Method", "Runs"] + shown.map(\.name) + ["Accuracy (%)"], rows: rows)
    }
}

func formatCorrelation(_ r: Double?) -> String { r.map { String(format: "%.3f", $0) } ?? "undefined" }

/// "`few-shot_dtd_coop_4shot_seed1`: few-shot, dtd, coop, 4 shots, seed 1, tau 1 (model.pt (3f2a9c1b)): the error".
func failedLine(_ r: RunRecord) -> String {
    let s = r.spec
    let model = r.model != nil || r.digests["model"] != nil ? " (\(ModelLabel(r).text))" : ""
    return "\(s.identifier): \(s.protocolKind.rawValue), \(s.dataset), \(s.method), \(shotsText(s.shots)), seed \(s.seed), "
        + "tau \(tauLabel(s.imbalance))\(model): \(r.error ?? "no error recorded")"
}

/// results.csv: one row per (protocol, dataset, method, shots, tau, metric, model, precision), long format.
func renderCSV(_ rows: [ResultRow]) -> String {
    func field(_ s: String) -> String {
        s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
    var out = "protocol,dataset,method,shots,tau,metric,mean,std,n,over,model,precision\n"
    for r in rows {
        let cells = [r.protocolKind.rawValue, r.dataset, r.method, "\(r.shots)", tauLabel(r.tau), r.metric,
                     String(format: "%.4f", r.mean), r.std.map { String(format: "%.4f", $0) } ?? "", "\(r.n)", r.over.rawValue,
                     r.model, r.precision]
        // Text cells that a spreadsheet would run as a formula (=, +, -, @, tab, CR) start with '.
        let text: Set<Int> = [0, 1, 2, 5, 10, 11]
        out += cells.enumerated().map { i, c in
            field(text.contains(i) && c.first.map { "=+-@\t\r".contains($0) } == true ? "'" + c : c)
        }.joined(separator: ",") + "\n"
    }
    return out
}
