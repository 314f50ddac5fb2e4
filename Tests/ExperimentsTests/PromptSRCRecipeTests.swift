import Foundation
@testable import Experiments
import PromptLearning
import TestSupport
import XCTest

/// PromptSRC's protocol- and dataset-dependent settings reach the trainer: batch 4, lr 0.0025;
/// base-to-novel 20 epochs with GPA 15/1; cross-dataset depths 3/3 and GPA 6/10; few-shot 50
/// epochs with GPA 30/30 or 45/5 by dataset.
final class PromptSRCRecipeTests: XCTestCase {
    func testCellsTrainTheirProtocolsSettings() throws {
        let dir = try makeTempDir(self)
        let runner = try ExperimentRunner(modelPath: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path,
                                          root: dir, out: dir.appendingPathComponent("out"))
        func config(_ kind: ProtocolKind, _ dataset: String) throws -> TrainConfig {
            let cell = try XCTUnwrap(try GridPlan(protocolKind: kind, datasets: [dataset], methods: ["promptsrc"], shots: [16],
                                                  seeds: [1]).cells().first)
            return try runner.trainConfig(cell, datasetTemplate: "a photo of a {}.")
        }
        let b2n = try config(.baseToNovel, "dtd")
        XCTAssertEqual([b2n.epochs, b2n.batchSize], [20, 4])
        XCTAssertEqual(b2n.optimizer.learningRate, 0.0025)
        XCTAssertEqual(b2n.method.promptsrc, PromptSRCConfig(textDepth: 9, visionDepth: 9, aggregation: .init(mean: 15, std: 1)))
        let cross = try config(.crossDataset, "imagenet")
        XCTAssertEqual(cross.epochs, 20)
        XCTAssertEqual(cross.method.promptsrc, PromptSRCConfig(textDepth: 3, visionDepth: 3, aggregation: .init(mean: 6, std: 10)))
        let few = try config(.fewShot, "imagenet")
        XCTAssertEqual(few.epochs, 50)
        XCTAssertEqual(few.method.aggregation, GaussianPromptAggregation(mean: 30, std: 30))
        XCTAssertEqual(try config(.fewShot, "eurosat").method.aggregation, GaussianPromptAggregation(mean: 45, std: 5))
        // Other methods' recipes write no aggregation (their specs and identities are unchanged).
        let maple = try XCTUnwrap(try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["maple"], shots: [16],
                                               seeds: [1]).cells().first)
        XCTAssertNil(maple.recipe.aggregation)
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(maple.recipe), as: UTF8.self).contains("gpa"))
    }
}
