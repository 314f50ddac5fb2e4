import Foundation

// results.tex: the results tables as the papers print them (booktabs rules, one block of rows per
// dataset with the average last, mean $\pm$ std), as a fragment to \input into a document that
// loads booktabs. Tables are floats with a caption and a label; no other package is needed.

/// Escapes LaTeX's special characters in text.
func texEscape(_ text: String) -> String {
    var out = ""
    for c in text {
        switch c {
        case "\\": out += "\\textbackslash{}"
        case "&", "%", "$", "#", "_", "{", "}": out += "\\" + String(c)
        case "~": out += "\\textasciitilde{}"
        case "^": out += "\\textasciicircum{}"
        case "±": out += "$\\pm$"
        case "†": out += "$^\\dagger$"
        case "–": out += "--"
        case "→": out += "$\\to$"
        case "−": out += "-"
        case "τ": out += "$\\tau$"
        case "ρ": out += "$\\rho$"
        default: out.append(c)
        }
    }
    return out
}

/// A cell: "72.35 ± 1.20" -> "72.35 $\pm$ 1.20", "–" -> "--", the rest escaped.
private func texCell(_ cell: String) -> String { texEscape(cell) }

/// A label from a title: lower case letters and digits, the rest "-".
private func texLabel(_ title: String) -> String {
    "tab:" + String(title.lowercased().unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII ? Character($0) : "-" })
}

/// One booktabs table of `tables` (one block per table when there are several).
private func texTable(_ tables: [ReportTable], title: String) -> String {
    let first = tables[0]
    let columns = first.header.count
    var out = "\\begin{table}[htbp]\n\\centering\n\\small\n"
    // The per-dataset caption (seeds, HM); the average's convention added where it has a block.
    var caption = (tables.first { $0.block != averageDatasetName } ?? first).caption
    if tables.count > 1, let average = tables.first(where: { $0.block == averageDatasetName }) {
        caption += " Average: " + average.caption
    }
    out += "\\caption{\(texEscape(title)). \(texEscape(caption))}\n\\label{\(texLabel(title))}\n"
    out += "\\begin{tabular}{l" + String(repeating: "r", count: columns - 1) + "}\n\\toprule\n"
    // "tau" in a header is the symbol, as the papers print it.
    let header = first.header.map { texEscape($0).replacingOccurrences(of: "tau", with: "$\\tau$") }
    out += header.joined(separator: " & ") + " \\\\\n\\midrule\n"
    for (i, t) in tables.enumerated() {
        if i > 0 { out += "\\midrule\n" }
        if tables.count > 1, let block = t.block {
            out += "\\multicolumn{\(columns)}{l}{\\textit{\(texEscape(block))}} \\\\\n"
        }
        for row in t.rows {
            let cells = row + Array(repeating: "", count: max(0, columns - row.count))
            out += cells.map(texCell).joined(separator: " & ") + " \\\\\n"
        }
    }
    out += "\\bottomrule\n\\end{tabular}\n\\end{table}\n"
    return out
}

/// The tables of one section, those of one `group` merged.
private func texSection(_ section: TableSection, model: String?) -> String {
    var out = ""
    var i = 0
    let tables = section.tables
    while i < tables.count {
        var j = i + 1
        if let g = tables[i].group { while j < tables.count && tables[j].group == g && tables[j].header == tables[i].header { j += 1 } }
        let chunk = Array(tables[i..<j])
        var title = chunk.count > 1 ? chunk[0].group! : chunk[0].title
        if let model { title += " (\(model))" }
        out += "\n" + texTable(chunk, title: title)
        i = j
    }
    return out
}

/// results.tex: every results table (not the NC analysis) of every model, as a LaTeX fragment.
func renderTeX(_ report: Report) -> String {
    var out = """
    % PromptTune results: \\input{results.tex} into a document with \\usepackage{booktabs}.
    % Accuracies in percent; mean $\\pm$ sample std (n - 1) over seeds; base-to-novel HM is the
    % harmonic mean of the seed-mean base and novel accuracies.

    """
    for data in report.groups {
        let model = report.several ? data.model?.text : nil
        if let m = data.model { out += "\n% Model: \(m.text)\n" }
        for section in resultTables(data) {
            out += "\n% \(section.heading)\n" + texSection(section, model: model)
        }
    }
    if report.groups.allSatisfy({ resultTables($0).isEmpty }) { out += "% No finished runs: no tables.\n" }
    return out
}
