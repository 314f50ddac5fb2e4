import ArgumentParser
import Experiments
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write results.md, results.csv, results.tex and report.html from the records of a results folder.",
        discussion: "Reads every record.json under DIR (written by `prompttune run`), prints the tables and writes the report into DIR.")

    @Argument(help: ArgumentHelp("Results folder: the --out of `prompttune run`.", valueName: "DIR"))
    var directory: String

    func run() throws {
        let url = URL(fileURLWithPath: directory)
        let records: [RunRecord], unreadable: [UnreadableRecord]
        do {
            (records, unreadable) = try readRunRecords(under: url)
        } catch ReportError.noRecords {
            throw NothingToReport(directory: directory)
        }
        for u in unreadable { FileHandle.standardError.write(Data("warning: left out \(u.url.path): \(u.reason)\n".utf8)) }
        let summary = try writeReport(records: records, unreadable: unreadable, directory: url)
        // The Markdown ends with a newline; a blank line keeps the summary out of its last table.
        print(renderMarkdownTables(records: records))
        fflush(stdout)
        var lines = ["\(summary.records) records (\(summary.succeeded) finished, \(summary.failed) failed)"]
        lines += summary.written.map { "wrote \($0.path)" }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

/// The CLI's wording of `ReportError.noRecords`: what to run first.
private struct NothingToReport: Error, CustomStringConvertible {
    var directory: String
    var description: String { "no record.json found under \(directory): run `prompttune run ... --out \(directory)` first" }
}
