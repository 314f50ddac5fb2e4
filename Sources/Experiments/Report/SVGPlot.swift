import Foundation

// A tiny SVG plotting layer for the report: line charts with error bars, horizontal grouped bar
// charts and scatter plots with a fitted line. Every chart has a title, axes with ticks and numeric labels,
// axis titles and a legend, in a fixed palette; every text is XML-escaped, so the output can be
// inlined into an XHTML page and read by an XML parser.

/// Colours of successive series (matplotlib's tab10, readable on white).
let plotPalette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

/// Marker shapes, cycled with a period (6) prime to the palette's (10).
enum MarkerShape: String, CaseIterable { case circle, square, triangle, diamond, triangleDown, hexagon }

/// How one series is drawn: colour, marker and line dash. Series i takes colour i mod 10, marker
/// i mod 6 and, from the 11th series on, a dash: no two of the first 30 series share both colour
/// and marker, so 16+ methods stay apart in colour and in black and white.
struct SeriesStyle: Hashable {
    var colour: String
    var marker: MarkerShape
    /// SVG stroke-dasharray; nil for a solid line.
    var dash: String?

    static func at(_ i: Int) -> SeriesStyle {
        let dashes: [String?] = [nil, "7 3", "2 3", "9 3 2 3"]
        return SeriesStyle(colour: plotPalette[i % plotPalette.count], marker: MarkerShape.allCases[i % MarkerShape.allCases.count],
                           dash: dashes[(i / plotPalette.count) % dashes.count])
    }
}

/// The SVG of a marker of `shape` centred at (x, y) with radius r.
func markerSVG(_ shape: MarkerShape, x: Double, y: Double, r: Double, colour: String, opacity: Double? = nil) -> String {
    let o = opacity.map { " fill-opacity=\"\($0)\"" } ?? ""
    func polygon(_ pts: [(Double, Double)]) -> String {
        "<polygon points=\"" + pts.map { "\(px(x + $0.0 * r)),\(px(y + $0.1 * r))" }.joined(separator: " ") + "\" fill=\"\(colour)\"\(o)/>"
    }
    switch shape {
    case .circle: return "<circle cx=\"\(px(x))\" cy=\"\(px(y))\" r=\"\(px(r))\" fill=\"\(colour)\"\(o)/>"
    case .square: return polygon([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)])
    case .triangle: return polygon([(0, -1.15), (1.05, 0.75), (-1.05, 0.75)])
    case .diamond: return polygon([(0, -1.2), (1.05, 0), (0, 1.2), (-1.05, 0)])
    case .triangleDown: return polygon([(0, 1.15), (1.05, -0.75), (-1.05, -0.75)])
    case .hexagon: return polygon((0..<6).map { k in (cos(Double(k) * .pi / 3), sin(Double(k) * .pi / 3)) })
    }
}

/// Escapes the five XML special characters.
func xmlEscape(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.count)
    for c in text {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}

/// How data values map onto an axis.
enum AxisScale { case linear, log10 }

/// One axis: its title (with units) and, optionally, ticks at given values (shots, tau) instead of
/// evenly spaced round numbers.
struct PlotAxis {
    var title: String
    var scale: AxisScale = .linear
    var ticks: [Double]? = nil
    /// Start a linear axis at zero (bar heights).
    var includesZero = false
    /// Words in place of the ticks' numbers (categories such as target datasets), one per tick.
    var tickLabels: [String]? = nil
    /// Clamp the axis to this range (accuracy: 0...100), so error bars never stretch it past.
    var limits: ClosedRange<Double>? = nil
}

/// A point with an optional symmetric error bar (y +- error).
struct PlotPoint {
    var x: Double
    var y: Double
    var error: Double? = nil
}

struct PlotSeries {
    var name: String
    var points: [PlotPoint]
    /// Fixed style (a method keeps its style across plots); `SeriesStyle.at(position)` when nil.
    var style: SeriesStyle? = nil
}

private func seriesStyle(of series: PlotSeries, at index: Int) -> SeriesStyle {
    series.style ?? SeriesStyle.at(index)
}

/// The pixel layout shared by every chart: the plot area sits inside margins; the legend lives in
/// the right margin, the x-axis title and an optional note below.
private struct Frame {
    var width = 760.0, height = 440.0
    var left = 76.0, right = 190.0, top = 46.0, bottom = 62.0
    var noteLines = 0
    var plotWidth: Double { width - left - right }
    var plotHeight: Double { height - top - bottom }
    var totalHeight: Double { height + Double(noteLines) * 16 }
}

/// A data-to-pixel mapping of one axis.
private struct AxisMap {
    let scale: AxisScale
    let lo: Double, hi: Double          // in transformed units
    let start: Double, length: Double   // pixels; length < 0 for the y axis (up is smaller)
    let ticks: [Double]                 // data values
    let labels: [String]

    func transform(_ v: Double) -> Double { scale == .log10 ? Foundation.log10(v) : v }
    /// Halves first, so that a span past a double (-1e308...1e308) still maps; a point off any
    /// finite range lands on the axis end rather than at NaN.
    func pixel(_ v: Double) -> Double {
        let t = transform(v)
        let r = (t / 2 - lo / 2) / (hi / 2 - lo / 2)
        return start + (r.isFinite ? r : (t > lo ? 1 : 0)) * length
    }

    /// Fits ticks and limits around `values` (finite, and positive on a log axis).
    init(axis: PlotAxis, values: [Double], start: Double, length: Double) {
        scale = axis.scale
        self.start = start; self.length = length
        var data = values.filter { $0.isFinite && (axis.scale == .linear || $0 > 0) }
        if let limits = axis.limits { data = data.map { min(max($0, limits.lowerBound), limits.upperBound) } }
        if axis.includesZero { data.append(0) }
        if data.isEmpty { data = axis.scale == .log10 ? [1] : [0, 1] }
        if var given = axis.ticks?.filter({ axis.scale == .linear || $0 > 0 }), !given.isEmpty {
            given.sort()
            let t = (data + given).map { axis.scale == .log10 ? Foundation.log10($0) : $0 }
            let (a, b) = (t.min()!, t.max()!)
            let pad = b > a ? 0.06 * (b - a) : 0.5
            lo = a - pad; hi = b + pad
            ticks = given
            labels = axis.tickLabels.map { l in given.indices.map { $0 < l.count ? l[$0] : "" } } ?? given.map(compactNumber)
        } else if axis.scale == .log10 {
            let t = data.map { Foundation.log10($0) }
            let (a, b) = (t.min()!.rounded(.down), max(t.max()!.rounded(.up), t.min()!.rounded(.down) + 1))
            lo = a; hi = b
            ticks = stride(from: a, through: b, by: 1).map { pow(10, $0) }
            labels = ticks.map(compactNumber)
        } else {
            var nice = niceTicks(data.min()!, data.max()!)
            if let limits = axis.limits {
                nice.ticks = nice.ticks.filter { limits.contains($0) }
                if nice.ticks.count < 2 { nice.ticks = [limits.lowerBound, limits.upperBound] }
            }
            lo = nice.ticks.first!; hi = nice.ticks.last!
            ticks = nice.ticks
            labels = nice.ticks.map { nice.decimals < 0 ? String(format: "%g", $0) : String(format: "%.\(nice.decimals)f", $0) }
        }
    }
}

/// About five round-numbered ticks covering [lo, hi], and the decimals their labels need.
func niceTicks(_ lo: Double, _ hi: Double, count: Int = 5) -> (ticks: [Double], decimals: Int) {
    var (lo, hi) = (lo, hi)
    guard lo.isFinite, hi.isFinite else { return ([0, 1], 0) }
    if !(hi > lo) {
        let pad = lo == 0 ? 1 : abs(lo) * 0.1
        lo -= pad; hi += pad
    }
    // Spans past a double (-1e308...1e308) or in the sub-normal range, and ranges too narrow for
    // their magnitude to hold round ticks, get their two ends (and the middle) as ticks, labelled
    // with %g (decimals -1): they used to trap on a non-finite stride or loop without end.
    let fallback = ([lo, lo / 2 + hi / 2, hi], -1)
    let raw = hi / Double(count) - lo / Double(count)
    guard raw.isNormal, raw > 0 else { return fallback }
    let magnitude = pow(10, (log10(raw)).rounded(.down))
    guard magnitude.isNormal else { return fallback }
    let f = raw / magnitude
    let step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * magnitude
    let first = (lo / step).rounded(.down), last = (hi / step).rounded(.up)
    guard step.isFinite, (first * step).isFinite, (last * step).isFinite, abs(first) < 1e15, abs(last) < 1e15, last - first <= 100 else { return fallback }
    let ticks = stride(from: first, through: last, by: 1).map { i -> Double in
        let v = i * step
        return abs(v) < step * 1e-9 ? 0 : v
    }
    let decimals = max(0, Int(-(log10(step)).rounded(.down)))
    return (ticks, decimals <= 12 && abs(last * step) < 1e15 ? decimals : -1)
}

/// 16, 0.25, 0.06, 1e-05: the shortest faithful label of an explicit tick.
func compactNumber(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(format: "%g", v)
}

private func px(_ v: Double) -> String { String(format: "%.1f", v) }

/// Collects the elements of one chart and writes the frame around them.
private struct Canvas {
    var frame: Frame
    var body: [String] = []

    mutating func text(_ s: String, x: Double, y: Double, anchor: String = "middle", size: Int = 12,
                       cls: String? = nil, rotate: Bool = false, weight: String? = nil) {
        var attrs = "x=\"\(px(x))\" y=\"\(px(y))\" text-anchor=\"\(anchor)\" font-size=\"\(size)\""
        if let cls { attrs += " class=\"\(cls)\"" }
        if let weight { attrs += " font-weight=\"\(weight)\"" }
        if rotate { attrs += " transform=\"rotate(-90 \(px(x)) \(px(y)))\"" }
        body.append("<text \(attrs)>\(xmlEscape(s))</text>")
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double = 1,
                       dash: String? = nil) {
        let d = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
        body.append("<line x1=\"\(px(x1))\" y1=\"\(px(y1))\" x2=\"\(px(x2))\" y2=\"\(px(y2))\" stroke=\"\(stroke)\" stroke-width=\"\(width)\"\(d)/>")
    }

    /// A vertical error bar with caps, clipped to the plot area (a clipped end has no cap).
    mutating func errorBar(x: Double, y1: Double, y2: Double, colour: String) {
        let (top, bottom) = (frame.top, frame.top + frame.plotHeight)
        let (a, b) = (min(max(y1, top), bottom), min(max(y2, top), bottom))
        line(x, a, x, b, stroke: colour)
        if a == y1 { line(x - 4, a, x + 4, a, stroke: colour) }
        if b == y2 { line(x - 4, b, x + 4, b, stroke: colour) }
    }

    /// A horizontal error bar with caps, clipped to the plot area.
    mutating func horizontalErrorBar(y: Double, x1: Double, x2: Double, colour: String) {
        let (l, r) = (frame.left, frame.left + frame.plotWidth)
        let (a, b) = (min(max(x1, l), r), min(max(x2, l), r))
        line(a, y, b, y, stroke: colour)
        if a == x1 { line(a, y - 3, a, y + 3, stroke: colour) }
        if b == x2 { line(b, y - 3, b, y + 3, stroke: colour) }
    }

    /// Grid, ticks, tick labels and axis titles.
    mutating func axes(x: AxisMap, y: AxisMap, xTitle: String, yTitle: String, xLabels: [(Double, String)]? = nil) {
        let f = frame
        let (x0, x1, y0, y1) = (f.left, f.left + f.plotWidth, f.top + f.plotHeight, f.top)
        for (v, label) in zip(y.ticks, y.labels) {
            let p = y.pixel(v)
            line(x0, p, x1, p, stroke: "#e0e0e0")
            line(x0 - 5, p, x0, p, stroke: "#333")
            text(label, x: x0 - 8, y: p + 4, anchor: "end", size: 11, cls: "tick")
        }
        let xs = xLabels ?? zip(x.ticks, x.labels).map({ (x.pixel($0), $1) })
        // Labels wider than their spacing (about 6.5 px a character at 11 px) are turned by 35 degrees.
        let spacing = xs.count > 1 ? f.plotWidth / Double(xs.count) : f.plotWidth
        let turn = xs.contains { Double($0.1.count) * 6.5 > spacing }
        for (p, label) in xs {
            line(p, y0, p, y0 + 5, stroke: "#333")
            if turn {
                body.append("<text x=\"\(px(p))\" y=\"\(px(y0 + 14))\" text-anchor=\"end\" font-size=\"11\" class=\"tick\" transform=\"rotate(-35 \(px(p)) \(px(y0 + 14)))\">\(xmlEscape(label))</text>")
            } else {
                text(label, x: p, y: y0 + 18, size: 11, cls: "tick")
            }
        }
        body.append("<rect x=\"\(px(x0))\" y=\"\(px(y1))\" width=\"\(px(f.plotWidth))\" height=\"\(px(f.plotHeight))\" fill=\"none\" stroke=\"#333\"/>")
        text(xTitle, x: x0 + f.plotWidth / 2, y: turn ? y0 + f.bottom - 12 : y0 + 40, size: 12, cls: "axis-title")
        text(yTitle, x: 20, y: y1 + f.plotHeight / 2, size: 12, cls: "axis-title", rotate: true)
    }

    /// Swatches (a bar's colour) and names in the right margin.
    mutating func legend(_ entries: [(name: String, colour: String)]) {
        var y = frame.top + 6
        let x = frame.left + frame.plotWidth + 14
        body.append("<g class=\"legend\">")
        for (name, colour) in entries {
            body.append("<rect x=\"\(px(x))\" y=\"\(px(y - 5))\" width=\"14\" height=\"10\" fill=\"\(colour)\"/>")
            text(name, x: x + 20, y: y + 4, anchor: "start", size: 11)
            y += 18
        }
        body.append("</g>")
    }

    /// Line samples (dash and marker; `lines` false: marker only) and names in the right margin;
    /// `lineOnly` entries (a fitted line) show the line without a marker.
    mutating func legend(styles entries: [(name: String, style: SeriesStyle)], lines: Bool = true, lineOnly: Set<String> = []) {
        var y = frame.top + 6
        let x = frame.left + frame.plotWidth + 10
        body.append("<g class=\"legend\">")
        for (name, style) in entries {
            if lines || lineOnly.contains(name) { line(x, y, x + 24, y, stroke: style.colour, width: 2, dash: style.dash) }
            if !lineOnly.contains(name) { body.append(markerSVG(style.marker, x: x + 12, y: y, r: 4, colour: style.colour)) }
            text(name, x: x + 30, y: y + 4, anchor: "start", size: 11)
            y += 17
        }
        body.append("</g>")
    }

    /// Lines of a note below the x-axis title (e.g. the correlations of a scatter plot).
    mutating func notes(_ lines: [String]) {
        for (i, line) in lines.enumerated() {
            text(line, x: frame.left + frame.plotWidth / 2, y: frame.height + Double(i) * 16 - 4, size: 12, cls: "note")
        }
    }

    func render(id: String, title: String) -> String {
        let h = frame.totalHeight
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"\(xmlEscape(id))\" class=\"plot\" width=\"\(px(frame.width))\" height=\"\(px(h))\" preserveAspectRatio=\"xMinYMin meet\" viewBox=\"0 0 \(px(frame.width)) \(px(h))\" role=\"img\">\n"
        out += "<title>\(xmlEscape(title))</title>\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        out += "<text x=\"\(px(frame.width / 2))\" y=\"24\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\" class=\"plot-title\">\(xmlEscape(title))</text>\n"
        out += body.joined(separator: "\n")
        out += "\n</svg>"
        return out
    }
}

enum SVGPlot {
    /// Lines of `series` over x, one colour per series, error bars where a point has an error.
    static func lineChart(id: String, title: String, x: PlotAxis, y: PlotAxis, series: [PlotSeries]) -> String {
        var frame = Frame()
        // Category labels too long for their spacing are turned (Canvas.axes): room below and left.
        if let labels = x.tickLabels, !labels.isEmpty {
            let longest = Double(labels.map(\.count).max()!)
            if longest * 6.5 > frame.plotWidth / Double(labels.count) {
                frame.left = max(frame.left, longest * 5.4 + 12)
                frame.bottom = 44 + longest * 3.8
                frame.height += frame.bottom - 62
            }
        }
        // A long legend grows the chart rather than running off it.
        frame.height = max(frame.height, frame.top + Double(series.count) * 17 + frame.bottom)
        var canvas = Canvas(frame: frame)
        let f = canvas.frame
        let points = series.flatMap(\.points)
        let xMap = AxisMap(axis: x, values: points.map(\.x), start: f.left, length: f.plotWidth)
        let yValues = points.flatMap { p in [p.y - (p.error ?? 0), p.y + (p.error ?? 0)] }
        let yMap = AxisMap(axis: y, values: yValues, start: f.top + f.plotHeight, length: -f.plotHeight)
        canvas.axes(x: xMap, y: yMap, xTitle: x.title, yTitle: y.title)
        for (i, s) in series.enumerated() {
            let style = seriesStyle(of: s, at: i)
            let sorted = s.points.filter { x.scale == .linear || $0.x > 0 }.sorted { $0.x < $1.x }
            let coords = sorted.map { (xMap.pixel($0.x), yMap.pixel($0.y)) }
            if coords.count > 1 {
                let list = coords.map { "\(px($0.0)),\(px($0.1))" }.joined(separator: " ")
                let dash = style.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
                canvas.body.append("<polyline fill=\"none\" stroke=\"\(style.colour)\" stroke-width=\"2\"\(dash) points=\"\(list)\"/>")
            }
            for (p, c) in zip(sorted, coords) {
                if let e = p.error, e > 0 {
                    canvas.errorBar(x: c.0, y1: yMap.pixel(p.y - e), y2: yMap.pixel(p.y + e), colour: style.colour)
                }
                canvas.body.append(markerSVG(style.marker, x: c.0, y: c.1, r: 3.8, colour: style.colour))
            }
        }
        canvas.legend(styles: series.enumerated().map { ($1.name, seriesStyle(of: $1, at: $0)) })
        return canvas.render(id: id, title: title)
    }

    /// Horizontal bars: one band per group (method) down the left, `values[group][bar]` (nil: no
    /// bar) stacked within it, one colour per bar name; error bars clipped to the plot. The chart
    /// grows with the number of groups, so 16+ methods keep readable labels.
    static func horizontalBars(id: String, title: String, groups: [String], bars: [String],
                               values: [[PlotPoint?]], x: PlotAxis) -> String {
        var frame = Frame()
        let longest = groups.map(\.count).max() ?? 4
        frame.left = max(76, 18 + 6.5 * Double(longest))
        frame.right = 110
        let band = Double(bars.count) * 9 + 8
        frame.height = frame.top + frame.bottom + max(120, band * Double(groups.count))
        var canvas = Canvas(frame: frame)
        var axis = x
        axis.includesZero = true
        if axis.limits == nil { axis.limits = 0...100 }
        let present = values.flatMap { $0.compactMap { $0 } }
        let xMap = AxisMap(axis: axis, values: present.flatMap { [$0.y, $0.y + ($0.error ?? 0)] },
                           start: frame.left, length: frame.plotWidth)
        let slot = frame.plotHeight / Double(max(1, groups.count))
        let barHeight = (slot - 8) / Double(max(1, bars.count))
        // Axes with the categories on the y side: tick labels are the group names.
        let f = frame
        for (v, label) in zip(xMap.ticks, xMap.labels) {
            let p = xMap.pixel(v)
            canvas.line(p, f.top, p, f.top + f.plotHeight, stroke: "#e0e0e0")
            canvas.line(p, f.top + f.plotHeight, p, f.top + f.plotHeight + 5, stroke: "#333")
            canvas.text(label, x: p, y: f.top + f.plotHeight + 18, size: 11, cls: "tick")
        }
        for (g, name) in groups.enumerated() {
            canvas.text(name, x: f.left - 8, y: f.top + slot * (Double(g) + 0.5) + 4, anchor: "end", size: 11, cls: "tick")
        }
        canvas.body.append("<rect x=\"\(px(f.left))\" y=\"\(px(f.top))\" width=\"\(px(f.plotWidth))\" height=\"\(px(f.plotHeight))\" fill=\"none\" stroke=\"#333\"/>")
        canvas.text(x.title, x: f.left + f.plotWidth / 2, y: f.top + f.plotHeight + 40, size: 12, cls: "axis-title")
        canvas.text("method", x: 14, y: f.top + f.plotHeight / 2, size: 12, cls: "axis-title", rotate: true)
        let zero = xMap.pixel(max(0, xMap.ticks.first ?? 0))
        for (g, row) in values.enumerated() {
            for (b, value) in row.enumerated() {
                guard let value else { continue }
                let colour = plotPalette[b % plotPalette.count]
                let y0 = f.top + slot * Double(g) + 4 + barHeight * Double(b)
                let end = min(max(xMap.pixel(value.y), f.left), f.left + f.plotWidth)
                canvas.body.append("<rect x=\"\(px(min(zero, end)))\" y=\"\(px(y0))\" width=\"\(px(abs(end - zero)))\" height=\"\(px(barHeight * 0.9))\" fill=\"\(colour)\"/>")
                if let e = value.error, e > 0 {
                    canvas.horizontalErrorBar(y: y0 + barHeight * 0.45, x1: xMap.pixel(value.y - e), x2: xMap.pixel(value.y + e), colour: "#222")
                }
            }
        }
        canvas.legend(bars.enumerated().map { ($1, plotPalette[$0 % plotPalette.count]) })
        return canvas.render(id: id, title: title)
    }

    /// Points of every series in its colour, the least-squares line `fit` over all of them (dashed),
    /// and `notes` (the correlations) printed under the plot.
    static func scatter(id: String, title: String, x: PlotAxis, y: PlotAxis, series: [PlotSeries],
                        fit: (slope: Double, intercept: Double)?, notes: [String]) -> String {
        var frame = Frame()
        frame.noteLines = notes.count
        var canvas = Canvas(frame: frame)
        let points = series.flatMap(\.points)
        let xs = points.map(\.x)
        let xMap = AxisMap(axis: x, values: xs, start: frame.left, length: frame.plotWidth)
        let yMap = AxisMap(axis: y, values: points.map(\.y), start: frame.top + frame.plotHeight, length: -frame.plotHeight)
        canvas.axes(x: xMap, y: yMap, xTitle: x.title, yTitle: y.title)
        for (i, s) in series.enumerated() {
            let style = seriesStyle(of: s, at: i)
            for p in s.points {
                canvas.body.append(markerSVG(style.marker, x: xMap.pixel(p.x), y: yMap.pixel(p.y), r: 4.2, colour: style.colour, opacity: 0.8))
            }
        }
        var legend = series.enumerated().map { ($1.name, seriesStyle(of: $1, at: $0)) }
        if let fit, var a = xs.min(), var b = xs.max(), b > a {
            // Clip the line to the y axis' range, so it never stretches the axis past the data.
            let (yLo, yHi) = (yMap.ticks.first!, yMap.ticks.last!)
            if fit.slope != 0 {
                let (x1, x2) = ((yLo - fit.intercept) / fit.slope, (yHi - fit.intercept) / fit.slope)
                a = max(a, min(x1, x2)); b = min(b, max(x1, x2))
            }
            if b > a {
                canvas.line(xMap.pixel(a), yMap.pixel(fit.intercept + fit.slope * a), xMap.pixel(b),
                            yMap.pixel(fit.intercept + fit.slope * b), stroke: "#000", width: 1.5, dash: "6 4")
            }
            legend.append(("least-squares fit", SeriesStyle(colour: "#000", marker: .circle, dash: "6 4")))
        }
        canvas.legend(styles: legend, lines: false, lineOnly: ["least-squares fit"])
        canvas.notes(notes)
        return canvas.render(id: id, title: title)
    }
}
