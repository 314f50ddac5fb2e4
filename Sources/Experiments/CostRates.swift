import Foundation
import TensorCore
import TensorIO
#if canImport(Glibc)
import Glibc
#endif

/// What the measured rates of `CostEstimator` depend on: the machine (host, CPU, threads), the
/// model and the precision of its towers. A rates file holds one `MachineRates` per key, so
/// several machines and models can share it.
public struct RatesKey: Codable, Hashable, Sendable {
    public var host: String
    /// The CPU's "model name" from /proc/cpuinfo ("unknown" where it has none).
    public var cpu: String
    /// `Compute.threads` when measured.
    public var threads: Int
    public var modelDigest: String
    /// The runner's precision: "bf16", "fp16-reference", or nil for fp32.
    public var precision: String?

    public init(host: String, cpu: String, threads: Int, modelDigest: String, precision: String?) {
        self.host = host; self.cpu = cpu; self.threads = threads; self.modelDigest = modelDigest; self.precision = precision
    }

    /// This process's key for a model and precision.
    public static func current(modelDigest: String, precision: String?) -> RatesKey {
        RatesKey(host: ProcessInfo.processInfo.hostName, cpu: cpuModelName(), threads: Compute.threads,
                 modelDigest: modelDigest, precision: precision)
    }

    enum CodingKeys: String, CodingKey { case host, cpu, threads, modelDigest = "model_digest", precision }
}

/// A cost per unit (an image, a class): wall seconds, and the peak resident bytes it adds.
public struct PieceRate: Codable, Equatable, Sendable {
    public var seconds: Double
    public var peakBytes: Int

    public init(seconds: Double, peakBytes: Int) { self.seconds = seconds; self.peakBytes = peakBytes }

    enum CodingKeys: String, CodingKey { case seconds, peakBytes = "peak_bytes" }
}

/// The resident bytes a process keeps once it has run a tower (the packed weight copies that
/// oneDNN's kernels read, made at a layer's first use and kept with the model).
public struct PackedBytes: Codable, Equatable, Sendable {
    /// The text tower forward and backward (every cell with a text classifier or prompt).
    public var text: Int
    /// The image tower forward (encoding features, images read every iteration).
    public var imageForward: Int
    /// The image tower's backward to prompts in it (DAPT, VPT, MaPLe, PromptSRC); nil until such a method is measured.
    public var imageBackward: Int?

    public init(text: Int, imageForward: Int, imageBackward: Int? = nil) {
        self.text = text; self.imageForward = imageForward; self.imageBackward = imageBackward
    }

    enum CodingKeys: String, CodingKey { case text, imageForward = "image_forward", imageBackward = "image_backward" }
}

/// One method configuration measured at one class count K.
public struct MethodPoint: Codable, Equatable, Sendable {
    public var classes: Int
    /// Building the trainer: the architecture and the text features its terms need.
    public var setupSeconds: Double
    /// One training step (the least of the timed steps after a warm-up).
    public var stepSeconds: Double
    /// The peak bytes building the trainer and stepping add (its workspace included).
    public var stepPeakBytes: Int
    /// The evaluation classifier of K classes: the whole shared text classifier, or, for a
    /// classifier made per image (CoCoOp), the cost per image.
    public var classifier: PieceRate

    public init(classes: Int, setupSeconds: Double, stepSeconds: Double, stepPeakBytes: Int, classifier: PieceRate) {
        self.classes = classes; self.setupSeconds = setupSeconds; self.stepSeconds = stepSeconds
        self.stepPeakBytes = stepPeakBytes; self.classifier = classifier
    }

    enum CodingKeys: String, CodingKey {
        case classes, setupSeconds = "setup_seconds", stepSeconds = "step_seconds", stepPeakBytes = "step_peak_bytes", classifier
    }
}

/// The costs of one method as cells configure it (`CostEstimator.methodKey`: the method with the
/// recipe's terms and depths, the batch and where the training images come from), at the class
/// counts measured so far; values at other K lie on the line through the smallest and largest.
public struct MethodRates: Codable, Equatable, Sendable {
    public var key: String
    public var points: [MethodPoint]
    /// Writing the checkpoint after each epoch.
    public var epochSeconds: Double
    /// Whether the classifier is made per image (its `classifier` costs are per image).
    public var perImageClassifier: Bool
    /// The image tower as the method prompts it, forward only, per image (nil where it adds nothing there).
    public var promptedEncode: PieceRate?

    public init(key: String, points: [MethodPoint], epochSeconds: Double, perImageClassifier: Bool, promptedEncode: PieceRate?) {
        self.key = key; self.points = points; self.epochSeconds = epochSeconds
        self.perImageClassifier = perImageClassifier; self.promptedEncode = promptedEncode
    }

    enum CodingKeys: String, CodingKey {
        case key, points, epochSeconds = "epoch_seconds", perImageClassifier = "per_image_classifier", promptedEncode = "prompted_encode"
    }

    /// `value` at `classes`: on the line through the points of the smallest and largest K (a
    /// falling line, which only noise makes, is read as the larger value everywhere).
    public func at(_ classes: Int, _ value: (MethodPoint) -> Double) -> Double {
        let sorted = points.sorted { $0.classes < $1.classes }
        guard let lo = sorted.first, let hi = sorted.last else { return 0 }
        let (y0, y1) = (value(lo), value(hi))
        guard hi.classes > lo.classes, y1 >= y0 else { return max(y0, y1) }
        let slope = (y1 - y0) / Double(hi.classes - lo.classes)
        return max(0, y0 + slope * Double(classes - lo.classes))
    }
}

/// One machine's measured costs for one model and precision. Each part is measured when a grid
/// first needs it and kept.
public struct MachineRates: Codable, Equatable, Sendable {
    public var key: RatesKey
    /// Resident bytes of a process with the model loaded, before any cell's work.
    public var processBytes: Int?
    /// The process's peak while it loaded the model (the checkpoint's bytes beside the weights):
    /// a cell's peak is never below it.
    public var loadPeakBytes: Int?
    /// What stays resident once a tower has run (the layers' packed weight copies, `PackedWeight`).
    public var packed: PackedBytes?
    /// The frozen image tower's forward, per image of a batch of 8.
    public var encode: PieceRate?
    /// Its peak per image when one workspace encodes several batches (the views of a chunk), ~1.4x
    /// a single batch's on ViT-B/16.
    public var encodeRepeatedPeakBytes: Int?
    /// Decoding and preprocessing (test transform, on every core) per image, by dataset.
    public var decode: [String: Double]
    /// The linear probe's C search, seconds per (training image x class).
    public var probe: Double?
    /// The neural-collapse measures of a set of N images and K classes, seconds per K x D x (N + K).
    public var analysis: Double?
    public var methods: [MethodRates]

    public init(key: RatesKey) {
        self.key = key; self.decode = [:]; self.methods = []
    }

    enum CodingKeys: String, CodingKey { case key, processBytes = "process_bytes", loadPeakBytes = "load_peak_bytes", packed, encode, encodeRepeatedPeakBytes = "encode_repeated_peak_bytes", decode, probe, analysis, methods }

    public func method(_ key: String) -> MethodRates? { methods.first { $0.key == key } }

    /// This entry with every part `other` has and this one lacks (what another process measured meanwhile).
    func merging(_ other: MachineRates) -> MachineRates {
        var m = self
        m.processBytes = m.processBytes ?? other.processBytes
        m.loadPeakBytes = m.loadPeakBytes ?? other.loadPeakBytes
        m.packed = m.packed ?? other.packed
        if m.packed?.imageBackward == nil, let b = other.packed?.imageBackward { m.packed?.imageBackward = b }
        m.encode = m.encode ?? other.encode
        m.encodeRepeatedPeakBytes = m.encodeRepeatedPeakBytes ?? other.encodeRepeatedPeakBytes
        m.probe = m.probe ?? other.probe
        m.analysis = m.analysis ?? other.analysis
        m.decode.merge(other.decode) { mine, _ in mine }
        for o in other.methods {
            if let i = m.methods.firstIndex(where: { $0.key == o.key }) {
                for p in o.points where !m.methods[i].points.contains(where: { $0.classes == p.classes }) { m.methods[i].points.append(p) }
            } else {
                m.methods.append(o)
            }
        }
        return m
    }
}

/// The rates file (`<results>/costs/rates.json` by default): one entry per `RatesKey`.
public struct RatesFile: Codable, Equatable, Sendable {
    public var version: Int
    public var entries: [MachineRates]

    public init(entries: [MachineRates] = []) { self.version = 1; self.entries = entries }

    public static func read(_ url: URL) throws -> RatesFile {
        guard FileManager.default.fileExists(atPath: url.path) else { return RatesFile() }
        return try readJSON(RatesFile.self, from: url)
    }

    public func entry(_ key: RatesKey) -> MachineRates? { entries.first { $0.key == key } }

    /// Merges `rates` into the file at `url` under its lock (another process may have measured
    /// other parts meanwhile) and writes it atomically.
    static func save(_ rates: MachineRates, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try withFileLock(url) {
            var file = (try? RatesFile.read(url)) ?? RatesFile()
            if let i = file.entries.firstIndex(where: { $0.key == rates.key }) {
                file.entries[i] = rates.merging(file.entries[i])
            } else {
                file.entries.append(rates)
            }
            try writeJSON(file, to: url)
        }
    }
}

/// The CPU's model name from /proc/cpuinfo, or "unknown".
func cpuModelName() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
    for line in text.split(separator: "\n") where line.hasPrefix("model name") {
        if let colon = line.firstIndex(of: ":") { return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
    }
    return "unknown"
}

/// This process's resident memory (Linux: /proc/self/status) and the peak a piece of work adds.
///
/// A piece's peak is its own: freed memory is handed back to the system first (`malloc_trim`), the
/// high-water mark VmHWM is reset to the current RSS (writing "5" to /proc/self/clear_refs), the
/// piece runs, and VmHWM minus the RSS before it is what the piece added at its peak. Where
/// clear_refs cannot be written, the growth of VmHWM during the piece stands for it: that misses
/// whatever stayed below an earlier, higher peak of the process (an underestimate).
enum ProcessMemory {
    /// A /proc/self/status field ("VmRSS", "VmHWM") in bytes, or nil.
    static func field(_ name: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kb * 1024
    }

    static var resident: Int { field("VmRSS") ?? 0 }

    /// Resets VmHWM to the current RSS; false where /proc/self/clear_refs is not writable.
    static func resetHighWater() -> Bool {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, "5", 1) == 1
    }

    /// Returns freed heap memory to the system, so that RSS counts what is live.
    static func trim() { _ = mallocTrim?(0) }

    /// glibc's `malloc_trim`, where the C library has it (Swift's Glibc module does not declare it).
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()

    /// `body`'s result, its wall seconds and the peak bytes it added above the RSS before it.
    static func measure<T>(_ body: () throws -> T) rethrows -> (value: T, seconds: Double, peakBytes: Int) {
        trim()
        let before = resident
        let reset = resetHighWater()
        let highBefore = field("VmHWM") ?? 0
        let start = DispatchTime.now().uptimeNanoseconds
        let value = try body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let high = field("VmHWM") ?? 0
        let peak = reset ? high - before : high - highBefore
        return (value, seconds, max(0, peak))
    }
}

/// Wall seconds of `body`.
func wallSeconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}
