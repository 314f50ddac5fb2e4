import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// Image-prompt checkpoints (`prompt.safetensors`) are checked against the run before resuming, as
/// `.ptprompt` files are (issue 17, item 2). Each case was reproduced: a trap, an endless run, an
/// unfinished cell recorded `ok`, or NaN resumed and then blamed on the learning rate.
final class ParameterCheckpointHardeningTests: XCTestCase {
    func tuner(epochs: Int = 4) throws -> PromptTuner {
        var config = DAPTParityTests.config()
        config.epochs = epochs
        return try PromptTuner(model: DAPTParityTests.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
    }

    func testDamagedProgressAndValuesAreRefusedBeforeResuming() throws {
        let source = try tuner()
        try source.runEpoch()
        try source.runEpoch()
        let good = source.checkpoint()
        let name = good.momentum.names.sorted()[0]
        var cases: [(String, ParameterCheckpoint)] = []
        var c = good
        c.momentum[name] = Tensor(zeros: [1, 3])
        cases.append(("has shape [1, 3]", c))
        c = good; c.header.steps = Int.max
        cases.append(("step count \(Int.max)", c))
        c = good; c.header.epochsDone = Int.min
        cases.append(("epochs done (\(Int.min))", c))
        c = good; c.header.epochsDone = 9
        cases.append(("epochs done (9)", c))
        c = good; c.header.epochsDone = 4; c.header.steps = 4 * source.stepsPerEpoch
        cases.append(("4 finished epochs but a history of 2", c))
        c = good; var p = c.parameters[name]!; p[0] = .nan; c.parameters[name] = p
        cases.append(("parameter '\(name)' holds a non-finite value", c))
        c = good; var m = c.momentum[name]!; m[1] = .infinity; c.momentum[name] = m
        cases.append(("the momentum of '\(name)' holds a non-finite value", c))
        c = good; c.momentum["not.a.parameter"] = Tensor(zeros: [2])
        cases.append(("momentum for 'not.a.parameter'", c))
        for (needle, bad) in cases {
            let t = try tuner()
            XCTAssertThrowsError(try t.restore(bad), needle) {
                XCTAssertTrue("\($0)".contains("cannot resume: ") && "\($0)".contains(needle), "\(needle): \($0)")
            }
            XCTAssertEqual(t.epochsDone, 0, "nothing is taken from a refused checkpoint")
        }
        let t = try tuner()
        try t.restore(good)
        XCTAssertEqual(t.epochsDone, 2)
    }

    /// A non-finite loss at the very first step comes from the inputs; the message no longer tells
    /// the user to lower the learning rate there, only after updates (a divergence).
    func testALossNonFiniteBeforeAnyUpdateIsNotBlamedOnTheLearningRate() {
        let first = nonFiniteLossMessage(.nan, terms: "ce=nan", epochsDone: 0, steps: 0, lr: 0.002)
        XCTAssertTrue(first.contains("at the first step, before any update"), first)
        XCTAssertFalse(first.contains("lower learning rate"), first)
        let later = nonFiniteLossMessage(.infinity, terms: "ce=inf", epochsDone: 3, steps: 40, lr: 20)
        XCTAssertTrue(later.contains("diverged to inf at epoch 4, step 41") && later.contains("Try a lower learning rate (this step's was 20.0)"), later)
    }
}
