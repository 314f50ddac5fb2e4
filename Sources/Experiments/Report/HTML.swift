import Analysis
import Foundation

// report.html: one self-contained page (inline CSS and SVG, no scripts, no external assets) in
// XHTML-compatible markup, so any XML parser reads it. Every plot is an <svg> with an id and a
// <title>, inside a <figure> whose caption says what it shows; a section without data says so in
// one line instead of drawing an empty plot.

private let style = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; } h3 { font-size: 1.2em; } h4 { font-size: 1em; margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; font-size: 0.9em; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: 0.85em; padding-top: 0.3em; max-width: 60em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; } td { text-align: right; } td:first-child, th:first-child { text-align: left; }
thead th { background: #f3f3f3; }
figure { display: inline-block; margin: 0.5em 1em 1.5em 0; vertical-align: top; }
figcaption { color: #555; font-size: 0.85em; max-width: 700px; }
svg.plot { font-family: Helvetica, Arial, sans-serif; border: 1px solid #eee; }
p.note { color: #777; font-style: italic; }
summary { cursor: pointer; font-weight: bold; margin: 0.5em 0; }
"""

/// The whole page.
func renderHTML(_ data: ReportData) -> String {
    let sections: [(id: String, heading: String, body: String)] = [
        ("tables", "Results tables", tablesHTML(data)),
        ("shots", "Accuracy against shots", shotPlots(data)),
        ("base-to-novel", "Base-to-novel", baseToNovelPlots(data)),
        ("imbalance", "Accuracy against class imbalance", tauPlots(data)),
        ("training", "Training curves", lossPlots(data)),
        ("nc-training", "Neural collapse over training", ncHistoryPlots(data)),
        ("nc-accuracy", "Neural collapse against test accuracy", correlationPlots(data)),
        ("failed", "Failed cells", failedHTML(data)),
    ]
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
    out += "<p>\(data.ok.count + data.failed.count) runs: \(data.ok.count) finished, \(data.failed.count) failed. "
    out += "Accuracies are in percent; ± and error bars are the sample standard deviation (n − 1) over seeds; "
    out += "base-to-novel HM is the harmonic mean of the seed-mean base and novel accuracies.</p>\n<ul>\n"
    for s in sections { out += "<li><a href=\"#\(s.id)\">\(xmlEscape(s.heading))</a></li>\n" }
    out += "</ul>\n"
    for s in sections { out += "<h2 id=\"\(s.id)\">\(xmlEscape(s.heading))</h2>\n\(s.body)\n" }
    out += "</body>\n</html>\n"
    return out
}

// MARK: - Pieces

private func note(_ text: String) -> String { "<p class=\"note\">\(xmlEscape(text))</p>\n" }

private func figure(_ svg: String, caption: String) -> String {
    "<figure>\n\(svg)\n<figcaption>\(xmlEscape(caption))</figcaption>\n</figure>\n"
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

private func failedHTML(_ data: ReportData) -> String {
    if data.failed.isEmpty { return note("No failed cells.") }
    return "<ul>\n" + data.failed.map { "<li>\(xmlEscape(failedLine($0)))</li>\n" }.joined() + "</ul>\n"
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
                return points.isEmpty ? nil : PlotSeries(name: m, points: points, colour: data.methodColours[m])
            }
            let name = datasetTitle(ds, datasets: datasets.count - 1)
            let svg = SVGPlot.lineChart(id: plotID("shots", ds, "tau\(tauLabel(tau))"),
                                        title: "Few-shot accuracy: \(name)\(tauSuffix(tau, of: taus))",
                                        x: shotsAxis(shots),
                                        y: PlotAxis(title: "test accuracy (%)"), series: series)
            let spread = ds == averageDatasetName ? "mean of the per-dataset means, no error bars"
                : "error bars: sample std over seeds"
            out += figure(svg, caption: "Test accuracy (%) against shots per class on \(name), one line per method; \(spread).")
        }
    }
    return out.isEmpty ? note("No few-shot runs: no plot.") : out
}

/// Shots on a log scale (1, 2, 4, 8, 16 evenly spaced, as the papers draw them); linear where a
/// zero-shot cell sits at 0 shots.
private func shotsAxis(_ shots: [Int]) -> PlotAxis {
    let log = (shots.min() ?? 0) > 0
    return PlotAxis(title: log ? "shots per class (log scale)" : "shots per class", scale: log ? .log10 : .linear,
                    ticks: shots.map(Double.init))
}

/// Base, novel and HM bars per method, per dataset and on average.
private func baseToNovelPlots(_ data: ReportData) -> String {
    var out = ""
    let taus = data.taus(.baseToNovel)
    for tau in taus {
        let all = data.rows(.baseToNovel, tau: tau)
        for k in ReportData.shots(all) {
            let rows = all.filter { $0.shots == k }
            let methods = ReportData.methods(rows), datasets = ReportData.datasets(rows)
            for ds in datasets {
                let values = methods.map { m in
                    ["base", "novel", "hm"].map { point(0, data.row(.baseToNovel, ds, m, shots: k, tau: tau, $0)) }
                }
                let name = datasetTitle(ds, datasets: datasets.count - 1)
                let svg = SVGPlot.groupedBars(id: plotID("b2n", ds, "\(k)shot", "tau\(tauLabel(tau))"),
                                              title: "Base-to-novel: \(name)\(tauSuffix(tau, of: taus))",
                                              groups: methods, bars: ["Base", "Novel", "HM"], values: values,
                                              xTitle: "method", y: PlotAxis(title: "accuracy (%)"))
                out += figure(svg, caption: "Accuracy (%) on base and novel classes and their harmonic mean (HM of the seed means) "
                    + "per method on \(name), \(k) shots; error bars: sample std over seeds (none for HM and averages).")
            }
        }
    }
    return out.isEmpty ? note("No base-to-novel runs: no plot.") : out
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
                    return points.isEmpty ? nil : PlotSeries(name: m, points: points, colour: data.methodColours[m])
                }
                let name = datasetTitle(ds, datasets: datasets.count - 1)
                let yTitle = p == .fewShot ? "test accuracy (%)" : "base-to-novel HM (%)"
                let svg = SVGPlot.lineChart(id: plotID("tau", p.rawValue, ds, "\(k)shot"),
                                            title: "\(p == .fewShot ? "Accuracy" : "HM") against imbalance: \(name), \(k) shots",
                                            x: PlotAxis(title: "imbalance tau (log scale)", scale: .log10, ticks: taus),
                                            y: PlotAxis(title: yTitle), series: series)
                out += figure(svg, caption: "\(yTitle) against class-imbalance tau (1 = balanced, smaller = more imbalanced) on \(name), "
                    + "\(p.rawValue), one line per method; error bars: sample std over seeds where defined.")
            }
        }
    }
    return out.isEmpty ? note("No protocol was run at several imbalance taus: no plot.") : out
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
        return ("\(s.protocolKind.rawValue), \(s.dataset), \(s.shots) shots\(tau)",
                plotID(s.protocolKind.rawValue, s.dataset, "\(s.shots)shot", "tau\(tauLabel(s.imbalance))"), groups[key]!)
    }
}

/// One series per method: the mean over its seeds of `value` at each epoch any seed recorded.
private func meanCurves(_ records: [RunRecord], colours: [String: String],
                        _ values: (RunRecord) -> [(epoch: Int, value: Double)]) -> [PlotSeries] {
    let methods = Array(Set(records.map(\.spec.method))).sorted(by: methodPrecedes)
    return methods.compactMap { m in
        var byEpoch: [Int: [Double]] = [:]
        for r in records where r.spec.method == m {
            for (epoch, v) in values(r) where v.isFinite { byEpoch[epoch, default: []].append(v) }
        }
        let points = byEpoch.keys.sorted().map { PlotPoint(x: Double($0), y: Statistics.mean(byEpoch[$0]!)!) }
        return points.isEmpty ? nil : PlotSeries(name: m, points: points, colour: colours[m])
    }
}

/// Training loss per epoch, mean over seeds, one line per method.
private func lossPlots(_ data: ReportData) -> String {
    var out = ""
    for group in curveGroups(data.ok.filter { !$0.history.isEmpty }) {
        let series = meanCurves(group.records, colours: data.methodColours) { $0.history.map { ($0.epoch, $0.loss) } }
        let svg = SVGPlot.lineChart(id: "loss-" + group.id, title: "Training loss: \(group.title)",
                                    x: PlotAxis(title: "epoch"), y: PlotAxis(title: "training loss (nats, mean over the epoch)"),
                                    series: series)
        out += figure(svg, caption: "Training objective (cross-entropy plus the method's terms) per epoch on \(group.title), "
            + "mean over seeds, one line per method.")
    }
    return out.isEmpty ? note("No run recorded a loss history: no plot.") : out
}

/// The feature set whose NC course is plotted: a test set if there is one.
private func historySet(_ records: [RunRecord]) -> String? {
    let names = Set(records.flatMap { $0.ncHistory.flatMap(\.measures.keys) })
    for preferred in ["test", "base", "novel"] where names.contains(preferred) { return preferred }
    return names.subtracting(["train"]).sorted().first ?? (names.contains("train") ? "train" : nil)
}

/// Each NC measure over epochs (from `nc_history`), mean over seeds, one line per method.
private func ncHistoryPlots(_ data: ReportData) -> String {
    var out = ""
    for group in curveGroups(data.ok.filter { !$0.ncHistory.isEmpty }) {
        guard let set = historySet(group.records) else { continue }
        var figures = ""
        for measure in NCMeasure.overTraining {
            let series = meanCurves(group.records, colours: data.methodColours) { r in
                r.ncHistory.compactMap { p in p.measures[set].map { (p.epoch, measure.value($0)) } }
            }
            guard !series.isEmpty else { continue }
            let svg = SVGPlot.lineChart(id: plotID("nc-epochs", measure.key) + "-" + group.id,
                                        title: "\(measure.name) on \(set) features: \(group.title)",
                                        x: PlotAxis(title: "epoch"), y: PlotAxis(title: measure.axisTitle), series: series)
            figures += figure(svg, caption: "\(measure.name) (\(measure.definition)) on the \(set) set over training on \(group.title), "
                + "mean over seeds, one line per method; 0 = full collapse.")
        }
        // Folded (no script needed): a grid has many groups; the first is open.
        let open = out.isEmpty ? " open=\"open\"" : ""
        out += "<details\(open)>\n<summary>\(xmlEscape(group.title))</summary>\n\(figures)</details>\n"
    }
    return out.isEmpty ? note("No run recorded nc_history: no plot.") : out
}

// MARK: - NC against accuracy

/// Correlation table and one scatter plot per NC measure, coloured by method, with a fitted line.
private func correlationPlots(_ data: ReportData) -> String {
    let correlations = ncCorrelations(data.ok)
    guard correlations.contains(where: { $0.points.count >= 2 }) else {
        return note("Fewer than two runs with NC measures on an evaluation set: no plot.")
    }
    var out = tableHTML(correlationTable(correlations.filter { $0.points.count >= 2 }))
    for c in correlations {
        guard c.points.count >= 2 else {
            out += note("\(c.measure.name): fewer than two points, no plot.")
            continue
        }
        let methods = Array(Set(c.points.map(\.method))).sorted(by: methodPrecedes)
        let series = methods.map { m in
            PlotSeries(name: m, points: c.points.filter { $0.method == m }.map { PlotPoint(x: $0.x, y: $0.y) },
                       colour: data.methodColours[m])
        }
        let summary = "Pearson r = \(formatCorrelation(c.pearson)), Spearman ρ = \(formatCorrelation(c.spearman)), n = \(c.points.count) points"
        let svg = SVGPlot.scatter(id: plotID("nc-vs-accuracy", c.measure.key), title: "\(c.measure.name) against test accuracy",
                                  x: PlotAxis(title: c.measure.axisTitle), y: PlotAxis(title: "test accuracy (%)"),
                                  series: series, fit: c.fit, notes: [summary])
        out += figure(svg, caption: "\(c.measure.name) (\(c.measure.definition)) against test accuracy (%), one point per run "
            + "and evaluation set, coloured by method; dashed: least-squares line. \(summary).")
    }
    return out
}
