import Foundation
import TensorIO

/// One step of a run as `--trace` writes it: everything another implementation needs to replay the
/// step from the run's initial parameters.
public struct StepTrace: Codable, Equatable, Sendable {
    /// The run the step belongs to (a grid cell's identifier), when the trace holds several runs.
    public var cell: String? = nil
    public var epoch: Int
    /// Within the epoch, 1-based.
    public var step: Int
    /// Over the run, 1-based.
    public var globalStep: Int
    public var lr: Double
    /// Dataset indices of the batch, in batch order.
    public var indices: [Int]
    public var labels: [Int]
    /// Each image's crop box and flip (images decoded every iteration), or
    public var augmentations: [AugmentationRecord]?
    /// each image's cached view (cached features with several views).
    public var views: [Int]?
    public var loss: Double
    /// Every loss term, unweighted ("ce", "intra", "inter", ...).
    public var terms: [String: Double]
    public var accuracy: Double

    enum CodingKeys: String, CodingKey {
        case cell, epoch, step, globalStep = "global_step", lr, indices, labels, augmentations, views, loss, terms, accuracy
    }
}

/// Writes one JSON line per step, flushed as it goes, so a run killed mid-epoch leaves a usable trace.
public final class TraceWriter {
    let output: OutputFile
    let encoder: JSONEncoder
    /// Stamped on every line that has no `cell` of its own (set per grid cell by the runner).
    public var cell: String?

    /// Creates (or, with `append`, continues) the trace file at `url`. The file is opened with
    /// O_APPEND and every line goes out in one write, so processes sharing a trace (`run --cell`
    /// in parallel) interleave whole lines and lose none. A character device (`/dev/null`) is
    /// written in place; a symbolic link, FIFO or other special file is refused.
    public init(url: URL, append: Bool = false) throws {
        do { output = try OutputFile.appending(to: url, truncate: !append) } catch let e as FileError {
            throw PromptError(.writeFailed, "the trace file \(e.message)")
        }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
    }

    public func write(_ step: StepTrace) throws {
        var step = step
        if step.cell == nil { step.cell = cell }
        var line = try encoder.encode(step)
        line.append(0x0a)
        do { try output.write(line) } catch let e as FileError {
            throw PromptError(.writeFailed, "while writing the trace file \(e.message)")
        }
    }

    /// The steps of a trace file.
    public static func read(url: URL) throws -> [StepTrace] {
        let text = try String(contentsOf: url, encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONDecoder().decode(StepTrace.self, from: Data($0.utf8)) }
    }
}
