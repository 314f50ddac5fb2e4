import ArgumentParser
import CLIP
import Foundation
import Imaging
import PromptLearning
import TensorCore

/// Ranges of the numeric options, checked in every command's `validate()` before any work, each
/// with a message that names the option, the value and the range.
enum OptionLimits {
    /// Threads: more than this is a typo (`Compute.threads` hands the count to OpenBLAS as an Int32).
    static let maxThreads = 1024
    static let maxEpochs = TrainConfig.maxEpochs
    static let maxBatchSize = 1 << 20
    /// Augmented views per image; the extraction's memory budget bounds views x images x dim further.
    static let maxViews = 10_000
    static let maxShots = 1 << 20

    static func threads(_ n: Int) throws {
        guard n >= 1 && n <= maxThreads else {
            throw ValidationError("--threads must lie in 1...\(maxThreads) (got \(n)); this machine has \(ProcessInfo.processInfo.activeProcessorCount) cores")
        }
    }

    static func range<T: Comparable>(_ flag: String, _ value: T, _ r: ClosedRange<T>, _ hint: String = "") throws {
        guard r.contains(value) else {
            throw ValidationError("\(flag) must lie in \(r.lowerBound)...\(r.upperBound) (got \(value))\(hint.isEmpty ? "" : "; " + hint)")
        }
    }

    static func positiveFinite(_ flag: String, _ value: Double) throws {
        guard value.isFinite && value > 0 else { throw ValidationError("\(flag) must be a positive, finite number (got \(value))") }
    }

    static func nonNegativeFinite(_ flag: String, _ value: Float?) throws {
        guard let value else { return }
        guard value.isFinite && value >= 0 else { throw ValidationError("\(flag) must be a finite number of at least 0 (got \(value))") }
    }

    /// Dassl seeds the few-shot draw with Python's `random.seed(S)`, which takes |S| for a negative
    /// S, so a negative seed would only repeat a positive one under another name: refused.
    static func seed(_ flag: String, _ value: Int) throws {
        guard value >= 0 else {
            throw ValidationError("\(flag) must be at least 0 (got \(value)); Python's random.seed(\(value)) draws as random.seed(\(value.magnitude)), so pass \(value.magnitude)")
        }
    }
}

/// One line of JSON with sorted keys (byte-reproducible). A non-finite number is an error naming
/// its key, never a silent `{}`.
func jsonText(_ object: [String: Any]) throws -> String {
    if let path = firstNonFinite(object, at: "") {
        throw PresentedError(message: "the result '\(path)' is not a finite number, so it cannot be printed as JSON; its inputs hold non-finite values")
    }
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
}

private func firstNonFinite(_ value: Any, at path: String) -> String? {
    switch value {
    case let d as Double: return d.isFinite ? nil : path
    case let f as Float: return f.isFinite ? nil : path
    case let o as [String: Any]:
        for k in o.keys.sorted() { if let p = firstNonFinite(o[k]!, at: path.isEmpty ? k : "\(path).\(k)") { return p } }
        return nil
    case let a as [Any]:
        for (i, v) in a.enumerated() { if let p = firstNonFinite(v, at: "\(path)[\(i)]") { return p } }
        return nil
    default: return nil
    }
}

/// The tensors of a checkpoint that hold NaN or infinite values, by name (sorted): what `embed`
/// and `info` report instead of printing numbers made from them.
func nonFiniteTensors(_ tensors: [String: Tensor]) -> [String] {
    tensors.filter { !$0.value.data.allSatisfy { $0.isFinite } }.keys.sorted()
}

/// An error naming the checkpoint's non-finite tensors (nil when every weight is finite).
func nonFiniteWeightsError(path: String, tensors: [String: Tensor]) -> PresentedError? {
    let bad = nonFiniteTensors(tensors)
    guard let first = bad.first else { return nil }
    return PresentedError(message: "\(path): tensor '\(first)'\(bad.count > 1 ? " and \(bad.count - 1) more" : "") hold\(bad.count > 1 ? "" : "s") NaN or infinite values; the checkpoint is damaged: download or convert it again")
}

/// Runs `body`, which writes into the folder `url`; when it fails and the folder was created by
/// this run and holds nothing (but lock files of `withFileLock`, which a killed run may leave), the
/// folder is removed: a failed command leaves no empty folder behind.
func removingEmptyFolderOnFailure<T>(_ url: URL, _ body: () throws -> T) throws -> T {
    let fm = FileManager.default
    // The topmost missing folder: everything from there down is this run's.
    var top: URL? = nil
    var u = url.standardizedFileURL
    while !fm.fileExists(atPath: u.path) && u.path != "/" { top = u; u.deleteLastPathComponent() }
    do {
        return try body()
    } catch {
        if let top { removeEmptyFolders(top) }
        throw error
    }
}

/// Removes `url` and the folders under it when none holds a file other than a lock file.
private func removeEmptyFolders(_ url: URL) {
    let fm = FileManager.default
    func empty(_ u: URL) -> Bool {
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: u.path, isDirectory: &isDir) else { return true }
        guard isDir.boolValue else { return u.pathExtension == "lock" }
        let items = (try? fm.contentsOfDirectory(atPath: u.path)) ?? ["?"]
        return items.allSatisfy { empty(u.appendingPathComponent($0)) }
    }
    if empty(url) { try? fm.removeItem(at: url) }
}

/// The decoded-size budget for images (`ImageLimits`): the flag, else PROMPTTUNE_MAX_IMAGE_PIXELS,
/// else Pillow's default of 89,478,485 pixels.
struct ImageOptions: ParsableArguments {
    @Option(name: .customLong("max-image-pixels"), parsing: .unconditional,
            help: "Refuse images larger than this many pixels, before decoding (default: $PROMPTTUNE_MAX_IMAGE_PIXELS, else 89478485 as Pillow).")
    var maxImagePixels: Int?

    func validate() throws {
        if let n = maxImagePixels, n < 1 { throw ValidationError("--max-image-pixels must be at least 1 (got \(n))") }
    }

    /// Sets the process-wide limit; a malformed environment variable is an error, not ignored.
    func apply() throws {
        if let n = maxImagePixels {
            ImageLimits.current = ImageLimits(maxPixels: n)
        } else if let fromEnvironment = try ImageLimits.fromEnvironment() {
            ImageLimits.current = fromEnvironment
        }
    }
}
