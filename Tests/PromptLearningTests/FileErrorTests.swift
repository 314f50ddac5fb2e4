import CLIP
import Features
import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// Every file reader refuses a bad file with the one `FileError`: its kind says what is wrong, its
/// path is the file, and its message starts with the file.
final class FileErrorTests: XCTestCase {
    func testOneCatchHandlesEveryReader() throws {
        let dir = try makeTempDir(self)
        let tensors = ["w": Tensor(shape: [2], data: [1, 2])]
        let notFeatures = dir.appendingPathComponent("features.safetensors")
        try Safetensors.write(tensors: tensors, metadata: ["format": "something else"], to: notFeatures)
        let notAPrompt = dir.appendingPathComponent("prompt.ptprompt")
        try Data("not a prompt checkpoint".utf8).write(to: notAPrompt)
        let notCLIP = dir.appendingPathComponent("model.safetensors")
        try Safetensors.write(tensors: tensors, to: notCLIP)
        let cut = dir.appendingPathComponent("cut.safetensors")
        try Data(contentsOf: notCLIP).prefix(20).write(to: cut)

        let cases: [(reader: String, path: String, kind: FileError.Kind, read: () throws -> Void)] = [
            ("features file", notFeatures.path, .wrongFormat, { _ = try FeatureSet.read(path: notFeatures.path) }),
            ("prompt checkpoint", notAPrompt.path, .wrongFormat, { _ = try PromptCheckpoint.read(path: notAPrompt.path) }),
            ("CLIP checkpoint", notCLIP.path, .missingEntry, { _ = try CLIPModel.load(path: notCLIP.path) }),
            ("safetensors file", cut.path, .truncated, { _ = try Safetensors.read(path: cut.path) }),
        ]
        for c in cases {
            do {
                try c.read()
                XCTFail("\(c.reader): \(c.path) was read")
            } catch let e as FileError {
                XCTAssertEqual(e.kind, c.kind, "\(c.reader): \(e)")
                XCTAssertEqual(e.path, c.path, c.reader)
                XCTAssertTrue(e.message.hasPrefix(c.path + ":") || e.message.hasPrefix(c.path + " ("), "\(c.reader): \(e)")
            }
        }
    }
}
