import Foundation

/// A one-line progress bar on standard error: done/total, rate, time left and a status text.
/// When standard error is not a terminal it prints a plain line at most every few seconds.
final class ProgressBar {
    var total: Int { didSet { total = max(1, total) } }
    let label: String
    let unit: String
    private let start = Date()
    /// The count at the first update: work found done (cached features, a resumed run) is not
    /// work done at this rate.
    private var baseline: Int?
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
        if baseline == nil { baseline = done }
        let now = Date()
        let minGap = interactive ? 0.1 : 5.0
        guard force || done >= total || now.timeIntervalSince(lastPrint) >= minGap else { return }
        lastPrint = now
        let rate = Self.rate(done: done - (baseline ?? 0), elapsed: now.timeIntervalSince(start))
        let width = 24
        let filled = min(width, Int(Double(width) * Double(done) / Double(total)))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let speed: String
        if let rate {
            speed = String(format: "%.1f %@/s, %@ left", rate, unit, Self.clock(Double(total - done) / rate))
        } else {
            speed = done >= total && done == baseline ? "already done" : "--.- \(unit)/s, --:-- left"
        }
        let line = String(format: "%@ [%@] %d/%d %@  %@", label, bar, done, total, speed, status)
        FileHandle.standardError.write(Data(((interactive ? "\r\u{1B}[K" : "") + line + (interactive ? "" : "\n")).utf8))
    }

    func finish(_ status: String = "") {
        update(total, status: status, force: true)
        if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    /// Items per second, or nil while it means nothing: under half a second of work, or no work
    /// done yet (a cached step used to print 1945184.5 img/s).
    static func rate(done: Int, elapsed: TimeInterval) -> Double? {
        guard done > 0, elapsed >= 0.5, elapsed.isFinite else { return nil }
        return Double(done) / elapsed
    }

    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0, seconds < 1e9 else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
