import Foundation
import XCTest
@testable import Datasets

/// A temporary folder for one test, removed at the end.
final class ReadersTempTree {
    let root: URL

    init() throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("prompttune-readers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func url(_ rel: String) -> URL { root.appendingPathComponent(rel) }

    /// Writes `bytes` to `rel`, creating folders.
    @discardableResult
    func write(_ rel: String, _ bytes: [UInt8] = []) throws -> URL {
        let u = url(rel)
        try FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: u)
        return u
    }

    @discardableResult
    func write(_ rel: String, text: String) throws -> URL { try write(rel, Array(text.utf8)) }

    func mkdir(_ rel: String) throws {
        try FileManager.default.createDirectory(at: url(rel), withIntermediateDirectories: true)
    }

    /// Empty files at each path (existence is all the readers check).
    func touch(_ rels: [String]) throws { for r in rels { try write(r) } }
}

/// The `DatasetError` `body` throws, or a failure.
func readersError(_ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> DatasetError? {
    do {
        _ = try body()
        XCTFail("expected a DatasetError, got none", file: file, line: line)
    } catch let e as DatasetError {
        return e
    } catch {
        XCTFail("expected a DatasetError, got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// Asserts that `message` contains every one of `parts`.
func assertReadersMessage(_ message: String?, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
    guard let message else { return }
    for p in parts where !message.contains(p) {
        XCTFail("message lacks \"\(p)\":\n\(message)", file: file, line: line)
    }
}
