import Foundation
import XCTest

/// The repository root: two folders up from this file's folder (Tests/TestSupport/Paths.swift).
public let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// A fresh temporary folder, removed when `test` ends.
public func makeTempDir(_ test: XCTestCase, prefix: String = "prompttune-tests") throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir
}
