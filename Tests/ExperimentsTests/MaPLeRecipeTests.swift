import Foundation
@testable import Experiments
import PromptLearning
import TestSupport
import XCTest

/// MaPLe's protocol-dependent prompt depth reaches the trainer: 3 in cross-dataset cells, 9 in
/// base-to-novel ones.
final class MaPLeRecipeTests: XCTestCase {
    func testCellsTrainTheirProtocolsPromptDepth() throws {
        let dir = try makeTempDir(self)
        let runner = try ExperimentRunner(modelPath: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path,
                                          root: dir, out: dir.appendingPathComponent("out"))
        let cross = try XCTUnwrap(try GridPlan(protocolKind: .crossDataset, datasets: ["imagenet"], methods: ["maple"], shots: [16],
                                               seeds: [1]).cells().first)
        XCTAssertEqual(cross.recipe.promptDepth, 3)
        let c = try runner.trainConfig(cross, datasetTemplate: "a photo of a {}.")
        XCTAssertEqual(c.method.maple?.promptDepth, 3)
        XCTAssertEqual(c.optimizer.learningRate, 0.0026)
        XCTAssertEqual([c.epochs, c.batchSize], [2, 4])
        let b2n = try XCTUnwrap(try GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["maple"], shots: [16],
                                             seeds: [1]).cells().first)
        XCTAssertEqual(try runner.trainConfig(b2n, datasetTemplate: "{}").method.maple?.promptDepth, 9)
    }
}
