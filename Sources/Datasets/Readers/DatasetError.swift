import Foundation

/// Why a dataset could not be read. The message says what was expected where, and what to do.
public struct DatasetError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// The dataset's folder (or the image folder inside it) is not under the root.
        case missingFolder
        /// A split, class-name or IDX file is absent.
        case missingFile
        /// A split, class-name or IDX file is not what it should be.
        case malformedFile
        /// Images the splits list are absent.
        case missingImages
        /// The data are internally inconsistent (labels with two names, a label gap, an unknown class).
        case inconsistent
        /// A file exists but cannot be read, or an image cannot be decoded.
        case unreadable
        /// A listed image path leads outside the image folder (absolute, or with a `..` component).
        case pathOutsideRoot
    }

    public var kind: Kind
    public var message: String
    /// For ``Kind/missingImages``: the absolute paths of the first few missing images, and the count.
    public var missingPaths: [String]
    public var missingCount: Int

    public init(_ kind: Kind, _ message: String, missingPaths: [String] = [], missingCount: Int = 0) {
        self.kind = kind
        self.message = message
        self.missingPaths = missingPaths
        self.missingCount = missingCount
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

extension DatasetError {
    /// The CoOp layout, as the tail of "no folder" messages.
    static func layoutNote(_ name: DatasetName, dir: URL) -> String {
        let items = name.expectedContents.map { dir.path + "/" + $0 }
        let list: String
        switch items.count {
        case 1: list = items[0]
        case 2: list = "\(items[0]) and \(items[1])"
        default: list = items.dropLast().joined(separator: ", ") + " and " + items.last!
        }
        let layout = name.isLongTailed ? "the long-tailed layout: see docs/EXPERIMENTS.md of PromptTune" : "the CoOp layout: see DATASETS.md of CoOp"
        return "expected \(list) (\(layout))"
    }
}
