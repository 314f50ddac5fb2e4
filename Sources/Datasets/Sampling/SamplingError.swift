import Foundation

/// Errors of few-shot sampling, imbalance profiles and CoOp's few-shot cache files.
public enum SamplingError: Error, CustomStringConvertible, LocalizedError, Sendable {
    /// An imbalance factor outside (0, 1] (or NaN).
    case invalidImbalance(tau: Double)
    /// A head-class shot count below 1.
    case invalidHeadShots(Int)
    /// A negative class count.
    case invalidClassCount(Int)
    /// A few-shot cache file that is missing or cannot be read.
    case cacheUnreadable(path: String, reason: String)
    /// A few-shot cache file whose content is not what CoOp writes.
    case cacheMalformed(path: String, reason: String)
    /// An image path in a cache file that is not under the given image root (absolute elsewhere, or
    /// with a `..` component).
    case cachePathOutsideRoot(path: String, item: String, imagePath: String, imageRoot: String)

    public var description: String {
        switch self {
        case .invalidImbalance(let tau):
            return "imbalance factor tau = \(tau) is outside (0, 1]: 1 is balanced, smaller values thin the tail classes."
        case .invalidHeadShots(let n):
            return "head-class shots = \(n): must be at least 1."
        case .invalidClassCount(let n):
            return "class count = \(n): must not be negative."
        case .cacheUnreadable(let path, let reason):
            return "\(path): cannot read the few-shot cache: \(reason)"
        case .cacheMalformed(let path, let reason):
            return "\(path): not a CoOp few-shot cache ({\"train\": [Datum], \"val\": [Datum]}): \(reason)"
        case .cachePathOutsideRoot(let path, let item, let imagePath, let root):
            return "\(path): \(item) has the image path '\(imagePath)', which is not under the image root "
                + "'\(root)'. Pass the image folder the file was written with (CoOp's `image_dir`); a path with a '..' "
                + "component is refused wherever it points: fix that item or move the file away to draw anew."
        }
    }

    public var errorDescription: String? { description }
}
