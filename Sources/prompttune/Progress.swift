import Foundation

/// A one-line progress bar on standard error: done/total, rate, time left and a status text.
/// When standard error is not a terminal it prints a plain line at most every few seconds.
final class ProgressBar {
    var total: Int { didSet { total = max(1, total) } }
    let label: String
    let unit: String
    private let start = Date()
    private var lastPrint = Date.distantPast
    private let interactive = isatty(STDERR_FILENO) == 1

    init(total: Int, label: String, unit: String = "it") {
        self.total = max(1, total)
        self.label = label
        self.unit = unit
    }

    func update(_ done: Int, status: String = "", force: Bool = false) {
        // Clamped: a resumed run's count comes from a file, and a negative or oversized count must
        // draw a bar, not trap in String(repeating:count:).
        let done = min(max(done, 0), total)
        let now = Date()
        let minGap = interactive ? 0.1 : 5.0
        guard force || done >= total || now.timeIntervalSince(lastPrint) >= minGap else { return }
        lastPrint = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let left = rate > 0 ? Double(total - done) / rate : 0
        let width = 24
        let filled = min(width, Int(Double(width) * Double(done) / Double(total)))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "%@ [%@] %d/%d %.1f %@/s, %@ left  %@", label, bar, done, total, rate, unit,
                          Self.clock(left), status)
        FileHandle.standardError.write(Data(((interactive ? "\r\u{1B}[K" : "") + line + (interactive ? "" : "\n")).utf8))
    }

    func finish(_ status: String = "") {
        update(total, status: status, force: true)
        if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0, seconds < 1e9 else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
