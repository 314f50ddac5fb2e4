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

/// The `prompttune` binary built beside the tests, for tests that run it as a user does; skips
/// the test where it is not there.
public func prompttuneBinary() throws -> URL {
    let dirs = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
    guard let dir = dirs.first(where: { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("prompttune").path) })
    else { throw XCTSkip("the prompttune binary is not beside the tests (\(dirs.map(\.path)))") }
    return dir.appendingPathComponent("prompttune")
}
