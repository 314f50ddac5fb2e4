import Analysis
import Experiments
import Foundation
import XCTest

final class RecordTests: XCTestCase {
    func testSpecRoundTripsThroughJSON() throws {
        let spec = RunSpec(protocolKind: .baseToNovel, dataset: "dtd", shots: 16, seed: 2, imbalance: 0.06, method: "kgcoop+npt",
                           recipe: Recipe(epochs: 10, learningRate: 0.002, batchSize: 32, views: 4, termWeights: ["kg": 8], ncEvery: 5))
        let data = try JSONEncoder().encode(spec)
        XCTAssertEqual(try JSONDecoder().decode(RunSpec.self, from: data), spec)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(object["protocol"] as? String, "base-to-novel")
        XCTAssertEqual(spec.identifier, "base-to-novel_dtd_kgcoop+npt_16shot_seed2_tau0.06")
    }
}
