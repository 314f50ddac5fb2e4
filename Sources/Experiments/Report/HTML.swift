import Analysis
import Foundation

// report.html: one self-contained page (inline CSS and SVG, no scripts, no external assets) in
// XHTML-compatible markup, so any XML parser reads it. Every plot is an <svg> with an id and a
// <title>, inside a <figure> whose caption says what it shows; a section without data says so in
// one line instead of drawing an empty plot.

private let style = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1600px; color: #222; padding: 0 1.5em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; } h3 { font-size: 1.2em; } h4 { font-size: 1em; margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; font-size: 0.9em; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: 0.85em; padding-top: 0.3em; max-width: 60em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; } td { text-align: right; } td:first-child, th:first-child { text-align: left; }
thead th { background: #f3f3f3; }
div.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 0.5em 1.5em; }
figure { margin: 0.5em 0 1.5em 0; min-width: 0; }
figure.wide { grid-column: 1 / -1; }
figcaption { color: #555; font-size: 0.85em; }
svg.plot { font-family: Helvetica, Arial, sans-serif; border: 1px solid #eee; width: 100%; height: auto; }
p.note { color: #777; font-style: italic; }
summary { cursor: pointer; font-weight: bold; margin: 0.5em 0; }
"""

/// The sections of one model's part of the page.
private func sections(_ data: ReportData) -> [(id: String, heading: String, body: String)] {
    [
        ("tables", "Results tables", tablesHTML(data)),
        ("shots", "Accuracy against shots", shotPlots(data)),
        ("base-to-novel", "Base-to-novel", baseToNovelPlots(data)),
        ("transfer", "Cross-dataset and domain generalisation", transferPlots(data)),
        ("imbalance", "Accuracy against class imbalance", tauPlots(data) + baseToNovelTauPlots(data)),
        ("class-frequency", "Accuracy by class frequency", classFrequencyPlots(data)),
        ("long-tailed", "Long-tailed: accuracy by training count", longTailedPlots(data)),
        ("training", "Training curves", lossPlots(data)),
        ("nc-training", "Neural collapse over training", ncHistoryPlots(data)),
        ("nc-accuracy", "Neural collapse against test accuracy", correlationPlots(data)),
    ]
}

/// The whole page: one part per model and precision where the records hold several (ids prefixed
/// `m1-`, `m2-`, ... so they stay unique), then the failed cells.
func renderHTML(_ report: Report) -> String {
    var out = """
    <!DOCTYPE html>
    <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
    <head>
    <meta charset="utf-8"/>
    <title>PromptTune report</title>
    <style>
    \(style)
    </style>
    </head>
    <body>
    <h1>PromptTune report</h1>

    """
    out += "<p>\(report.ok + report.failed.count) runs: \(report.ok) finished, \(report.failed.count) failed. "
    out += "Accuracies are in percent; ± and error bars are the sample standard deviation (n − 1) over seeds; "
    out += "base-to-novel HM is the harmonic mean of the seed-mean base and novel accuracies.</p>\n"
    if report.several {
        out += "<p>Records of \(report.groups.count) models or precisions: each has its own tables and plots; nothing is averaged across them.</p>\n"
    } else if let model = report.groups.first?.model {
        out += "<p>Model: \(xmlEscape(model.text)).</p>\n"
    }
    var toc = "<ul>\n", body = ""
    for (g, data) in report.groups.enumerated() {
        let prefix = report.several ? "m\(g + 1)-" : ""
        var part = ""
        if report.several, let model = data.model {
            toc += "<li>\(xmlEscape(model.text))<ul>\n"
            part += "<h2 id=\"\(prefix)model\">Model: \(xmlEscape(model.text))</h2>\n"
        }
        let h = report.several ? "h3" : "h2"
        for s in sections(data) {
            toc += "<li><a href=\"#\(prefix)\(s.id)\">\(xmlEscape(s.heading))</a></li>\n"
            part += "<\(h) id=\"\(prefix)\(s.id)\">\(xmlEscape(s.heading))</\(h)>\n\(s.body)\n"
        }
        if report.several {
            toc += "</ul></li>\n"
            // Plot ids are made without the model; the prefix keeps them unique on the page.
            part = part.replacingOccurrences(of: "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"",
                                             with: "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"\(prefix)")
        }
        body += part
    }
    toc += "<li><a href=\"#failed\">Failed cells</a></li>\n</ul>\n"
    out += toc + body
    out += "<h2 id=\"failed\">Failed cells</h2>\n\(failedHTML(report.failed))\n"
    if !report.unreadable.isEmpty {
        out += "<h2 id=\"unreadable\">Unreadable records</h2>\n<p>Left out of every table:</p>\n<ul>\n"
            + report.unreadable.map { "<li>\(xmlEscape("\($0.url.path): \($0.reason)"))</li>\n" }.joined() + "</ul>\n"
    }
    out += "</body>\n</html>\n"
    return out
}

// MARK: - Pieces

private func note(_ text: String) -> String { "<p class=\"note\">\(xmlEscape(text))</p>\n" }

private func figure(_ svg: String, caption: String, wide: Bool = false) -> String {
    "<figure\(wide ? " class=\"wide\"" : "")>\n\(svg)\n<figcaption>\(xmlEscape(caption))</figcaption>\n</figure>\n"
}

/// Figures side by side, as many as the page's width holds.
private func grid(_ figures: String) -> String {
    figures.isEmpty ? "" : "<div class=\"figures\">\n\(figures)</div>\n"
}

/// A plot id from its parts: lower case, anything but letters and digits becomes "-".
func plotID(_ parts: String...) -> String {
    let joined = parts.joined(separator: "-").lowercased()
    let mapped = joined.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII ? Character($0) : "-" }
    return String(mapped)
}

private func tableHTML(_ t: ReportTable) -> String {
    var out = "<h4>\(xmlEscape(t.title))</h4>\n<table>\n<caption>\(xmlEscape(t.caption))</caption>\n<thead><tr>"
    out += t.header.map { "<th>\(xmlEscape($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
    for row in t.rows { out += "<tr>" + row.map { "<td>\(xmlEscape($0))</td>" }.joined() + "</tr>\n" }
    return out + "</tbody>\n</table>\n"
}

private func tablesHTML(_ data: ReportData) -> String {
    let sections = resultTables(data)
    if sections.isEmpty { return note("No finished runs: no tables.") }
    return sections.map { s in "<h3>\(xmlEscape(s.heading))</h3>\n" + s.tables.map(tableHTML).joined() }.joined()
}

private func failedHTML(_ failed: [RunRecord]) -> String {
    if failed.isEmpty { return note("No failed cells.") }
    return "<ul>\n" + failed.map { "<li>\(xmlEscape(failedLine($0)))</li>\n" }.joined() + "</ul>\n"
}

private func point(_ x: Double, _ row: ResultRow?) -> PlotPoint? {
    row.map { PlotPoint(x: x, y: $0.mean, error: $0.std) }
}

// MARK: - Result plots

/// Few-shot accuracy against shots, per dataset and on average, one line per method.
private func shotPlots(_ data: ReportData) -> String {
    var out = ""
    let taus = data.taus(.fewShot)
    for tau in taus {
        let rows = data.rows(.fewShot, tau: tau).filter { $0.metric == "accuracy" }
        let shots = ReportData.shots(rows), datasets = ReportData.datasets(rows)
        for ds in datasets {
            let series = ReportData.methods(rows).compactMap { m -> PlotSeries? in
                let points = shots.compactMap { point(Double($0), data.row(.fewShot, ds, m, shots: $0, tau: tau, "accuracy")) }
                return points.isEmpty ? nil : PlotSeries(name: m, points: points, style: data.methodStyles[m])
            }
            let name = datasetTitle(ds, datasets: datasets.count - 1)
            let svg = SVGPlot.lineChart(id: plotID("shots", ds, "tau\(tauLabel(tau))"),
                                        title: "Few-shot accuracy: \(name)\(tauSuffix(tau, of: taus))",
                                        x: shotsAxis(shots),
                                        y: PlotAxis(title: "test accuracy (%)", limits: 0...100), series: series)
            let spread = ds == averageDatasetName ? "mean of the per-dataset means, no error bars"
                : "error bars: sample std over seeds"
            out += figure(svg, caption: "Test accuracy (%) against shots per class on \(name), one line per method; \(spread).")
        }
    }
    return out.isEmpty ? note("No few-shot runs: no plot.") : grid(out)
}

/// Shots on a log scale (1, 2, 4, 8, 16 evenly spaced, as the papers draw them); linear where a
/// zero-shot cell sits at 0 shots.
private func shotsAxis(_ shots: [Int]) -> PlotAxis {
    let log = (shots.min() ?? 0) > 0
    return PlotAxis(title: log ? "shots per class (log scale)" : "shots per class", scale: log ? .log10 : .linear,
                    ticks: shots.map(Double.init))
}

/// Base, novel and HM as horizontal bars, one band per method, per dataset and on average.
private func baseToNovelPlots(_ data: ReportData) -> String {
    var out = ""
    let taus = data.taus(.baseToNovel)
    for tau in taus {
        let all = data.rows(.baseToNovel, tau: tau)
        for k in ReportData.shots(all) {
            let rows = all.filter { $0.shots == k && ["base", "novel", "hm"].contains($0.metric) }
            let methods = ReportData.methods(rows), datasets = ReportData.datasets(rows)
            for ds in datasets {
                let values = methods.map { m in
                    ["base", "novel", "hm"].map { point(0, data.row(.baseToNovel, ds, m, shots: k, tau: tau, $0)) }
                }
                let name = datasetTitle(ds, datasets: datasets.count - 1)
                let svg = SVGPlot.horizontalBars(id: plotID("b2n", ds, "\(k)shot", "tau\(tauLabel(tau))"),
                                                 title: "Base-to-novel: \(name)\(tauSuffix(tau, of: taus))",
                                                 groups: methods, bars: ["Base", "Novel", "HM"], values: values,
                                                 x: PlotAxis(title: "accuracy (%)", limits: 0...100))
                out += figure(svg, caption: "Accuracy (%) on base and novel classes and their harmonic mean (HM of the seed means) "
                    + "per method on \(name), \(shotsText(k)); error bars: sample std over seeds (none for HM and averages), clipped to the plot.")
            }
        }
    }
    return out.isEmpty ? note("No base-to-novel runs: no plot.") : grid(out)
}

/// Cross-dataset and domain generalisation: accuracy on the source and each target (in the
/// records' order), one line of markers per method.
private func transferPlots(_ data: ReportData) -> String {
    var out = ""
    for p in [ProtocolKind.crossDataset, .domainGeneralization] {
        var groups: [String: [ResultRow]] = [:]
        for row in data.rows(p) { groups["\(row.dataset)|\(row.shots)|\(row.tau)", default: []].append(row) }
        for rows in groups.values.sorted(by: { ReportData.precedes($0[0], $1[0]) }) {
            let (source, k, tau) = (rows[0].dataset, rows[0].shots, rows[0].tau)
            let metrics = transferMetrics(data, rows, source: source)
            let labels = metrics.map { $0 == source ? "\($0) (source)" : $0 == "average" ? "average" : $0 }
            let series = ReportData.methods(rows).compactMap { m -> PlotSeries? in
                let points = metrics.enumerated().compactMap { i, metric in point(Double(i), data.row(p, source, m, shots: k, tau: tau, metric)) }
                return points.isEmpty ? nil : PlotSeries(name: m, points: points, style: data.methodStyles[m])
            }
            let name = p == .crossDataset ? "Cross-dataset" : "Domain generalisation"
            let svg = SVGPlot.lineChart(id: plotID("transfer", p.rawValue, source, "\(k)shot", "tau\(tauLabel(tau))"),
                                        title: "\(name): \(source) → targets, \(shotsText(k))",
                                        x: PlotAxis(title: "test set", ticks: metrics.indices.map(Double.init), tickLabels: labels),
                                        y: PlotAxis(title: "test accuracy (%)", limits: 0...100), series: series)
            let note = missingTargetsNote(data, ReportData.methods(rows), source: source, shots: k, tau: tau).map { " " + $0 } ?? ""
            out += figure(svg, caption: "\(name): test accuracy (%) on the source, each target (in the papers' order) and the average "
                + "over targets, one line per method (the line only guides the eye); error bars: sample std over seeds.\(note)",
                          wide: metrics.count > 6)
        }
    }
    return out.isEmpty ? note("No cross-dataset or domain-generalisation runs: no plot.") : grid(out)
}

/// Few-shot accuracy and base-to-novel HM against tau, one line per method.
private func tauPlots(_ data: ReportData) -> String {
    var out = ""
    for p in [ProtocolKind.fewShot, .baseToNovel] {
        let taus = data.taus(p)
        guard taus.count > 1 else { continue }
        let metric = p == .fewShot ? "accuracy" : "hm"
        let all = data.rows(p).filter { $0.metric == metric }
        for k in imbalancedShots(all) {
            let rows = all.filter { $0.shots == k }
            let datasets = ReportData.datasets(rows)
            for ds in datasets {
                let series = ReportData.methods(rows).compactMap { m -> PlotSeries? in
                    let points = taus.compactMap { point($0, data.row(p, ds, m, shots: k, tau: $0, metric)) }
                    return points.isEmpty ? nil : PlotSeries(name: m, points: points, style: data.methodStyles[m])
                }
                let name = datasetTitle(ds, datasets: datasets.count - 1)
                let yTitle = p == .fewShot ? "test accuracy (%)" : "base-to-novel HM (%)"
                let svg = SVGPlot.lineChart(id: plotID("tau", p.rawValue, ds, "\(k)shot"),
                                            title: "\(p == .fewShot ? "Accuracy" : "HM") against imbalance: \(name), \(shotsText(k))",
                                            x: PlotAxis(title: "imbalance tau (log scale)", scale: .log10, ticks: taus),
                                            y: PlotAxis(title: yTitle, limits: 0...100), series: series)
                out += figure(svg, caption: "\(yTitle) against class-imbalance tau (1 = balanced, smaller = more imbalanced) on \(name), "
                    + "\(p.rawValue), one line per method; error bars: sample std over seeds where defined.")
            }
        }
    }
    return out.isEmpty ? note("No protocol was run at several imbalance taus: no plot.") : grid(out)
}

/// Base-to-novel base, novel and HM against tau: one plot per method (per dataset folded, the
/// average open), error bars over seeds on base and novel.
private func baseToNovelTauPlots(_ data: ReportData) -> String {
    let taus = data.taus(.baseToNovel)
    guard taus.count > 1 else { return "" }
    let all = data.rows(.baseToNovel)
    var out = ""
    for k in imbalancedShots(all.filter { $0.metric == "hm" }) {
        let rows = all.filter { $0.shots == k }
        let datasets = ReportData.datasets(rows)
        for ds in datasets {
            var figures = ""
            for m in ReportData.methods(rows) {
                let series = [("base", "Base"), ("novel", "Novel"), ("hm", "HM")].enumerated().compactMap { i, metric -> PlotSeries? in
                    let points = taus.compactMap { point($0, data.row(.baseToNovel, ds, m, shots: k, tau: $0, metric.0)) }
                    return points.isEmpty ? nil : PlotSeries(name: metric.1, points: points,
                                                             style: SeriesStyle(colour: plotPalette[i], marker: MarkerShape.allCases[i], dash: i == 2 ? "7 3" : nil))
                }
                guard !series.isEmpty else { continue }
                let name = datasetTitle(ds, datasets: datasets.count - 1)
                let svg = SVGPlot.lineChart(id: plotID("b2n-tau", ds, m, "\(k)shot"), title: "\(m): base, novel, HM against tau, \(name)",
                                            x: PlotAxis(title: "imbalance tau (log scale)", scale: .log10, ticks: taus),
                                            y: PlotAxis(title: "accuracy (%)", limits: 0...100), series: series)
                figures += figure(svg, caption: "\(m) on \(name), \(shotsText(k)) of the base classes at each tau: base and novel accuracy "
                    + "(error bars: sample std over seeds) and HM of the seed means (dashed).")
            }
            guard !figures.isEmpty else { continue }
            let open = ds == averageDatasetName || datasets.count == 1 ? " open=\"open\"" : ""
            out += "<details\(open)>\n<summary>Base-to-novel against tau: \(xmlEscape(datasetTitle(ds, datasets: datasets.count - 1)))"
                + ", \(shotsText(k))</summary>\n\(grid(figures))</details>\n"
        }
    }
    return out
}

/// Per-class accuracy against each class's training count (`train_counts`), for imbalanced runs:
/// for every method, the mean accuracy of the classes with each count (mean over seeds, error bars
/// the std over seeds); base-to-novel's novel classes sit at 0.
private func classFrequencyPlots(_ data: ReportData) -> String {
    var groups: [String: [RunRecord]] = [:]
    for r in data.ok where r.trainCounts != nil && r.spec.imbalance < 1 && (r.spec.protocolKind == .fewShot || r.spec.protocolKind == .baseToNovel) {
        let s = r.spec
        groups["\(s.protocolKind.rawValue)|\(s.dataset)|\(s.shots)|\(tauLabel(s.imbalance))", default: []].append(r)
    }
    var out = ""
    for key in groups.keys.sorted() {
        let records = groups[key]!
        let s = records[0].spec
        var counts: Set<Int> = []
        let methods = Array(Set(records.map(\.spec.reportMethod))).sorted(by: methodPrecedes)
        let series = methods.compactMap { m -> PlotSeries? in
            // count -> one class-mean accuracy per seed
            var bySeed: [Int: [Double]] = [:]
            for r in records where r.spec.reportMethod == m {
                var perCount: [Int: [Double]] = [:]
                for e in r.evaluations where e.name == "test" || e.name == "base" || e.name == "novel" {
                    for (name, a) in e.perClassAccuracy {
                        let c = e.name == "novel" ? 0 : (r.trainCounts?[name] ?? 0)
                        perCount[c, default: []].append(100 * a)
                    }
                }
                for (c, v) in perCount { bySeed[c, default: []].append(Statistics.mean(v)!) }
            }
            counts.formUnion(bySeed.keys)
            let points = bySeed.keys.sorted().map { c in
                PlotPoint(x: Double(c), y: Statistics.mean(bySeed[c]!)!, error: Statistics.sampleStd(bySeed[c]!))
            }
            return points.isEmpty ? nil : PlotSeries(name: m, points: points, style: data.methodStyles[m])
        }
        guard counts.count > 1 else { continue }
        let title = "\(s.protocolKind.rawValue), \(s.dataset), \(shotsText(s.shots)), tau = \(tauLabel(s.imbalance))"
        let svg = SVGPlot.lineChart(id: plotID("class-frequency", s.protocolKind.rawValue, s.dataset, "\(s.shots)shot", "tau\(tauLabel(s.imbalance))"),
                                    title: "Accuracy by training count: \(title)",
                                    x: PlotAxis(title: "training images of the class", ticks: counts.sorted().map(Double.init)),
                                    y: PlotAxis(title: "class accuracy (%)", limits: 0...100), series: series)
        let novel = s.protocolKind == .baseToNovel ? " Novel classes (never trained on) at 0." : ""
        out += figure(svg, caption: "Per-class test accuracy (%) against the class's training count on \(title): for each method, "
            + "the mean accuracy of the classes with that count; error bars: sample std over seeds.\(novel)")
    }
    return out.isEmpty ? note("No imbalanced run with per-class training counts: no plot.") : grid(out)
}

/// The bins of the long-tailed plot: each distinct training count where there are at most
/// `longTailedBins` of them, else `longTailedBins` bins of equal width in log(count) from the
/// smallest count to the largest (empty bins dropped). Each bin is the counts it holds.
let longTailedBins = 12

func longTailedCountBins(_ counts: [Int]) -> [ClosedRange<Int>] {
    let distinct = Array(Set(counts.filter { $0 > 0 })).sorted()
    guard let lo = distinct.first, let hi = distinct.last else { return [] }
    if distinct.count <= longTailedBins { return distinct.map { $0...$0 } }
    let (a, b) = (Foundation.log(Double(lo)), Foundation.log(Double(hi)))
    var bins: [[Int]] = Array(repeating: [], count: longTailedBins)
    for c in distinct {
        let i = min(longTailedBins - 1, Int((Foundation.log(Double(c)) - a) / (b - a) * Double(longTailedBins)))
        bins[i].append(c)
    }
    return bins.filter { !$0.isEmpty }.map { $0.first!...$0.last! }
}

/// Per-class accuracy against the training count on the long-tailed protocol's balanced test set,
/// one figure per (dataset, shots): for every method, the classes are binned by training count
/// (``longTailedCountBins(_:)``, a log axis) and each point is the mean accuracy of a bin's classes
/// at the bin's mean count (mean over seeds; error bars the std over seeds). The note marks the
/// rule's thresholds, so the many / medium / few columns of the tables can be read off the curve.
private func longTailedPlots(_ data: ReportData) -> String {
    var groups: [String: [RunRecord]] = [:]
    for r in data.ok where r.spec.protocolKind == .longTailed && r.trainCounts != nil {
        groups["\(r.spec.dataset)|\(r.spec.shots)", default: []].append(r)
    }
    var out = ""
    for key in groups.keys.sorted() {
        let records = groups[key]!
        let s = records[0].spec
        let bins = longTailedCountBins(records.flatMap { Array($0.trainCounts!.values) })
        guard bins.count > 1 else { continue }
        func bin(_ c: Int) -> Int? { bins.firstIndex { $0.contains(c) } }
        let methods = Array(Set(records.map(\.spec.reportMethod))).sorted(by: methodPrecedes)
        let series = methods.compactMap { m -> PlotSeries? in
            // bin -> one class-mean accuracy per seed, and the bin's mean count
            var bySeed: [Int: [Double]] = [:]
            var binCounts: [Int: [Double]] = [:]
            for r in records where r.spec.reportMethod == m {
                guard let e = r.evaluations.first(where: { $0.name == "test" }) else { continue }
                var perBin: [Int: [Double]] = [:]
                for (name, a) in e.perClassAccuracy {
                    guard let c = r.trainCounts?[name], let b = bin(c) else { continue }
                    perBin[b, default: []].append(100 * a)
                    binCounts[b, default: []].append(Double(c))
                }
                for (b, v) in perBin { bySeed[b, default: []].append(Statistics.mean(v)!) }
            }
            let points = bySeed.keys.sorted().map { b in
                PlotPoint(x: Statistics.mean(binCounts[b]!)!, y: Statistics.mean(bySeed[b]!)!, error: Statistics.sampleStd(bySeed[b]!))
            }
            return points.isEmpty ? nil : PlotSeries(name: m, points: points, style: data.methodStyles[m])
        }
        guard !series.isEmpty else { continue }
        let rule = s.shotRule ?? .lift
        let title = "\(s.dataset), \(shotsText(s.shots))"
        let svg = SVGPlot.lineChart(id: plotID("long-tailed", s.dataset, "\(s.shots)shot"),
                                    title: "Accuracy by training count (long-tailed): \(title)",
                                    x: PlotAxis(title: "training images of the class (log scale)", scale: .log10),
                                    y: PlotAxis(title: "class accuracy (%)", limits: 0...100), series: series)
        let thresholds = rule == .lift ? "many > 100, few < 20" : "many >= 100, few <= 20"
        out += figure(svg, caption: "Per-class accuracy (%) on the balanced test set against the class's training count on \(title): "
            + "classes binned by count (\(bins.count) bins, each point at its classes' mean count), the mean accuracy of a bin's classes "
            + "for each method; error bars: sample std over seeds. Groups of the tables (\(rule.rawValue)): \(thresholds).")
    }
    return out.isEmpty ? note("No long-tailed run with per-class training counts: no plot.") : grid(out)
}

// MARK: - Training curves

/// Records of one (protocol, dataset, shots, tau): the seeds and methods of a training curve.
private func curveGroups(_ records: [RunRecord]) -> [(title: String, id: String, records: [RunRecord])] {
    var groups: [String: [RunRecord]] = [:]
    for r in records {
        let s = r.spec
        groups["\(s.protocolKind.rawValue)|\(s.dataset)|\(s.shots)|\(s.imbalance)", default: []].append(r)
    }
    return groups.keys.sorted().map { key in
        let s = groups[key]![0].spec
        let tau = s.imbalance == 1 ? "" : ", tau = \(tauLabel(s.imbalance))"
        return ("\(s.protocolKind.rawValue), \(s.dataset), \(shotsText(s.shots))\(tau)",
                plotID(s.protocolKind.rawValue, s.dataset, "\(s.shots)shot", "tau\(tauLabel(s.imbalance))"), groups[key]!)
    }
}

/// One series per method: the mean over its seeds of `value` at each epoch any seed recorded.
private func meanCurves(_ records: [RunRecord], styles: [String: SeriesStyle],
                        _ values: (RunRecord) -> [(epoch: Int, value: Double)]) -> [PlotSeries] {
    let methods = Array(Set(records.map(\.spec.reportMethod))).sorted(by: methodPrecedes)
    return methods.compactMap { m in
        var byEpoch: [Int: [Double]] = [:]
        for r in records where r.spec.reportMethod == m {
            for (epoch, v) in values(r) where v.isFinite { byEpoch[epoch, default: []].append(v) }
        }
        let points = byEpoch.keys.sorted().map { PlotPoint(x: Double($0), y: Statistics.mean(byEpoch[$0]!)!) }
        return points.isEmpty ? nil : PlotSeries(name: m, points: points, style: styles[m])
    }
}

/// The x axis of every curve over training: epochs finished, so the loss of the first epoch and the
/// measures after it both sit at 1 (a history record's `epoch` counts from 0, an NC point's from 1).
private let epochAxis = PlotAxis(title: "epochs trained")

/// Training loss per epoch, mean over seeds, one line per method.
private func lossPlots(_ data: ReportData) -> String {
    var out = ""
    for group in curveGroups(data.ok.filter { !$0.history.isEmpty }) {
        let series = meanCurves(group.records, styles: data.methodStyles) { $0.history.map { ($0.epoch + 1, $0.loss) } }
        let svg = SVGPlot.lineChart(id: "loss-" + group.id, title: "Training loss: \(group.title)",
                                    x: epochAxis, y: PlotAxis(title: "training loss (nats, mean over the epoch)"),
                                    series: series)
        out += figure(svg, caption: "Training objective (cross-entropy plus the method's terms) of each epoch, plotted at the epoch's "
            + "end (1 = the first), on \(group.title), mean over seeds, one line per method.")
    }
    return out.isEmpty ? note("No run recorded a loss history: no plot.") : grid(out)
}

/// The feature sets whose NC course is plotted: the training set (where collapse is tracked) and a
/// test set, if the history holds them.
private func historySets(_ records: [RunRecord]) -> [String] {
    let names = Set(records.flatMap { $0.ncHistory.flatMap(\.measures.keys) })
    var out = names.contains("train") ? ["train"] : []
    if let test = ["test", "base", "novel"].first(where: names.contains) ?? names.subtracting(["train"]).sorted().first { out.append(test) }
    return out
}

/// Each NC measure over epochs (from `nc_history`) on the training set and a test set, mean over
/// seeds, one line per method.
private func ncHistoryPlots(_ data: ReportData) -> String {
    var out = ""
    for group in curveGroups(data.ok.filter { !$0.ncHistory.isEmpty }) {
        var figures = ""
        for set in historySets(group.records) {
            let reports = group.records.flatMap { $0.ncHistory.compactMap { $0.measures[set] } }
            for measure in NCMeasure.overTraining + (reports.contains { $0.clusterETFError != nil } ? [NCMeasure.clusterETF] : []) {
                let series = meanCurves(group.records, styles: data.methodStyles) { r in
                    r.ncHistory.compactMap { p in p.measures[set].map { (p.epoch, measure.value($0)) }.flatMap { $0.1.isFinite ? $0 : nil } }
                }
                guard !series.isEmpty else { continue }
                let id = set == "train" ? plotID("nc-epochs-train", measure.key) : plotID("nc-epochs", measure.key)
                let svg = SVGPlot.lineChart(id: id + "-" + group.id, title: "\(measure.name) on \(set) features: \(group.title)",
                                            x: epochAxis, y: PlotAxis(title: measure.axisTitle), series: series)
                let frozen = measure.key.hasPrefix("image") ? " The image side changes only for dapt and vpt (prompted image tower); "
                    + "for the text-only methods it is the frozen features' constant." : ""
                figures += figure(svg, caption: "\(measure.name) (\(measure.definition)) on the \(set) set after each measured epoch on "
                    + "\(group.title), mean over seeds, one line per method; 0 = full collapse; zero-shot (no training) sits at 0 epochs.\(frozen)")
            }
        }
        // Folded (no script needed): a grid has many groups; the first is open.
        let open = out.isEmpty ? " open=\"open\"" : ""
        out += "<details\(open)>\n<summary>\(xmlEscape(group.title))</summary>\n\(grid(figures))</details>\n"
    }
    return out.isEmpty ? note("No run recorded nc_history: no plot.") : out
}

// MARK: - NC against accuracy

/// Scatter plots of one set of correlations: one per measure that varies, coloured by method.
private func scatterPlots(_ correlations: [NCCorrelation], data: ReportData, id: String, scope: String) -> String {
    var out = ""
    for c in correlations where c.points.count >= 2 && c.constant == nil && !c.constantWithinDatasets {
        let methods = Array(Set(c.points.map(\.method))).sorted(by: methodPrecedes)
        let series = methods.map { m in
            PlotSeries(name: m, points: c.points.filter { $0.method == m }.map { PlotPoint(x: $0.x, y: $0.y) },
                       style: data.methodStyles[m])
        }
        let summary = "Pearson r = \(formatCorrelation(c.pearson)), Spearman ρ = \(formatCorrelation(c.spearman)), n = \(c.points.count) points"
        let svg = SVGPlot.scatter(id: plotID("nc-vs-accuracy", c.measure.key) + id, title: "\(c.measure.name) against accuracy, \(scope)",
                                  x: PlotAxis(title: c.measure.axisTitle), y: PlotAxis(title: "test accuracy (%)"),
                                  series: series, fit: c.fit, notes: [summary])
        out += figure(svg, caption: "\(c.measure.name) (\(c.measure.definition)) against test accuracy (%), \(scope): one point per "
            + "distinct trained run, coloured by method; dashed: least-squares line. \(summary).")
    }
    let constant = correlations.filter { $0.constant != nil || $0.constantWithinDatasets }.map(\.measure.name)
    if !constant.isEmpty {
        out += note("Not plotted, constant over these runs (frozen image features): \(constant.joined(separator: ", ")).")
    }
    return out
}

/// Per (dataset, evaluation set): the correlation table, the measures by method and the scatter
/// plots (folded, the first open); then the pooled table and plots.
private func correlationPlots(_ data: ReportData) -> String {
    let points = ncPoints(data.ok)
    let groups = ncGroups(points)
    guard !groups.isEmpty else { return note("No trained run with NC measures on an evaluation set: no plot.") }
    var out = ""
    let byMethod = ncByMethodTables(points)
    for (i, g) in groups.enumerated() {
        let correlations = ncCorrelations(g.points)
        var body = tableHTML(correlationTable(correlations, title: g.title, pooled: false)) + tableHTML(byMethod[i])
        body += g.points.count >= 2 ? grid(scatterPlots(correlations, data: data, id: "-" + g.id, scope: g.title))
            : note("Fewer than two distinct trained runs: no plot.")
        let open = i == 0 ? " open=\"open\"" : ""
        out += "<details\(open)>\n<summary>\(xmlEscape(g.title))</summary>\n\(body)</details>\n"
    }
    let pooled = ncCorrelations(points)
    if points.count >= 2 && groups.count > 1 {
        out += "<h3>Pooled over datasets and evaluation sets</h3>\n"
            + tableHTML(correlationTable(pooled, title: "pooled over every dataset and evaluation set", pooled: true))
            + grid(scatterPlots(pooled, data: data, id: "-pooled", scope: "pooled over datasets"))
    }
    return out
}
