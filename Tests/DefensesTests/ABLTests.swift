import Attacks
import Backend
import Datasets
@testable import Defenses
import Formats
import Foundation
import Models
import NN
import Support
import TestSupport
import Training
import XCTest

final class ABLTests: XCTestCase {
    private func randomImages(_ count: Int, seed: UInt64) -> ImageSet {
        var generator = SeededGenerator(seed: seed)
        return ImageSet(pixels: (0..<(count * 3072)).map { _ in UInt8(generator.next() % 256) }, labels: (0..<count).map { $0 % 10 })
    }

    /// The flooded step on a tiny batch against sign(L - gamma) dL/dw: with gamma above the batch's
    /// loss L it is the ascent step, below it the descent step, at L itself no gradient (weight
    /// decay alone: w - lr wd w on the first step).
    func testFloodedStepFollowsTheSignOfTheLossAgainstGamma() throws {
        let images = randomImages(8, seed: 5)
        let loader = BatchLoader(images: images, batchSize: 8, shuffle: false, augment: false, seed: 0)
        let (lr, wd): (Float, Float) = (0.05, 1e-4)
        func stepped(ascend: Bool = false, flood: Float? = nil) throws -> (loss: Double, state: [String: HostTensor]) {
            let model = try ResNet18.model(width: 4, seed: 3, on: testBackend)
            let outcome = try CleanEpoch.run(model, loader: loader, epoch: 0, sgd: SGD(learningRate: lr, momentum: 0.9, weightDecay: wd),
                                             ascend: ascend, flood: flood)
            return (outcome.loss, try model.stateDict())
        }
        let descent = try stepped(), ascent = try stepped(ascend: true)
        let loss = Float(descent.loss)
        XCTAssertGreaterThan(loss, 1, "a random width-4 network's CE on random images")
        let start = try ResNet18.model(width: 4, seed: 3, on: testBackend)
        let below = try stepped(flood: loss - 0.5), above = try stepped(flood: loss + 0.5), at = try stepped(flood: loss)
        for p in start.parameters {
            let p0 = try p.plainValues()
            XCTAssertEqual(try below.state[p.name]!.floats(), try descent.state[p.name]!.floats(), "\(p.name): gamma below L descends")
            XCTAssertEqual(try above.state[p.name]!.floats(), try ascent.state[p.name]!.floats(), "\(p.name): gamma above L ascends")
            assertTensorClose(try at.state[p.name]!.floats(), p0.map { $0 - lr * wd * $0 }, "\(p.name): gamma = L", tolerance: 1e-6)
            XCTAssertNotEqual(try below.state[p.name]!.floats(), try above.state[p.name]!.floats(), "\(p.name) moved")
        }
        XCTAssertEqual(CleanEpoch.floodingSign(loss: 0.7, gamma: 0.5), 1)
        XCTAssertEqual(CleanEpoch.floodingSign(loss: 0.3, gamma: 0.5), -1)
        XCTAssertEqual(CleanEpoch.floodingSign(loss: 0.5, gamma: 0.5), 0)
    }

    /// PyTorch's SGD with nesterov=True, two steps from the update rule: d = g + wd w,
    /// b = d then mu b + d, w -= lr (d + mu b).
    func testNesterovStepsFollowPyTorchsRule() throws {
        let w0: [Float] = [0.5, -1, 2, 0.25], grads: [[Float]] = [[0.1, 0.2, -0.3, 0.4], [-0.2, 0.05, 0.1, 0.3]]
        let (lr, mu, wd): (Float, Float, Float) = (0.1, 0.9, 1e-2)
        let p = try Parameter("w", plainShape: [4], values: w0, on: testBackend)
        let sgd = SGD(learningRate: lr, momentum: mu, weightDecay: wd)
        sgd.nesterov = true
        var w = w0, buffer = [Float](repeating: 0, count: 4)
        for (step, g) in grads.enumerated() {
            try p.gradient.setPlainValues(g)
            try sgd.step([p])
            for i in 0..<4 {
                let d = g[i] + wd * w[i]
                buffer[i] = step == 0 ? d : mu * buffer[i] + d
                w[i] -= lr * (d + mu * buffer[i])
            }
            assertTensorClose(try p.plainValues(), w, "weights after step \(step + 1)", tolerance: 1e-6)
            assertTensorClose(try sgd.momentumValues(p)!, buffer, "momentum after step \(step + 1)", tolerance: 1e-6)
        }
    }

    /// The isolated images are those of lowest loss (ties: lower index), scored against the truth.
    func testIsolationTakesTheLowestLossesAndScoresThem() {
        let losses: [Float] = [2.0, 0.1, 1.5, 0.05, 0.1, 3.0, 0.7, 0.1]
        XCTAssertEqual(AntiBackdoorLearning.isolate(losses: losses, count: 3), [1, 3, 4])
        XCTAssertEqual(AntiBackdoorLearning.isolate(losses: losses, count: 1), [3])
        let truth = [false, true, false, true, false, false, true, false]
        let isolation = AntiBackdoorLearning.score(isolated: [1, 3, 4], losses: losses, truth: truth)
        XCTAssertEqual(isolation.lossThreshold, 0.1, accuracy: 1e-7)
        XCTAssertEqual(isolation.poisonedImages, 3)
        XCTAssertEqual(isolation.metrics?.truePositives, 2)
        XCTAssertEqual(isolation.metrics?.precision ?? 0, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(isolation.metrics?.recall ?? 0, 2.0 / 3, accuracy: 1e-12)
        XCTAssertNil(AntiBackdoorLearning.score(isolated: [1], losses: losses, truth: nil).metrics)
    }

    /// Per-image eval-mode losses are the cross-entropy of each image alone (the reference's batches of one).
    func testPerImageLossesAreEachImagesCrossEntropy() throws {
        let images = randomImages(6, seed: 8)
        let model = try ResNet18.model(width: 4, seed: 2, on: testBackend)
        let batched = try Evaluation.losses(model, on: images, batchSize: 4)
        XCTAssertEqual(batched.count, 6)
        for i in 0..<6 {
            let alone = try Evaluation.evaluate(model, on: images.subset([i]), batchSize: 1).loss
            XCTAssertEqual(Double(batched[i]), alone, accuracy: 1e-4 * max(1, alone), "image \(i)")
        }
        let mean = try Evaluation.evaluate(model, on: images).loss
        XCTAssertEqual(batched.map(Double.init).reduce(0, +) / 6, mean, accuracy: 1e-5 * mean)
    }

    func testBadSettingsNameTheSetting() {
        XCTAssertThrowsError(try ABLSettings(overrides: ["isolation_ratio": 1], seed: 0)) { error in
            XCTAssertTrue("\(error)".contains("isolation_ratio 1 is out of range"), "\(error)")
        }
        XCTAssertThrowsError(try ABLSettings(overrides: ["unlearning_epochs": 2.5], seed: 0)) { error in
            XCTAssertTrue("\(error)".contains("unlearning_epochs 2.5"), "\(error)")
        }
        XCTAssertThrowsError(try ABLSettings(overrides: ["flooding": 0.5], seed: 0)) { error in
            XCTAssertTrue("\(error)".contains("flooding is not a setting of abl"), "\(error)")
        }
        let defaults = ABLSettings()
        XCTAssertEqual(try ABLSettings(overrides: [:], seed: 0), defaults)
        XCTAssertEqual(ABLSettings.defaults["isolation_epochs"], 20)
        XCTAssertEqual(ABLSettings.defaults["unlearning_lr"], Double(Float(1e-4)), "the reference's hard-coded unlearning rate")
        XCTAssertEqual(ABLSettings.defaults["isolation_ratio"], 0.01)
    }

    func testTooFewImagesToIsolateIsAnError() throws {
        let model = try ResNet18.model(width: 4, seed: 0, on: testBackend)
        let images = randomImages(20, seed: 1)
        var settings = ABLSettings()
        settings.isolationEpochs = 1
        XCTAssertThrowsError(try AntiBackdoorLearning.train(model, on: images, truth: nil, cleanTest: images, poisonTest: nil,
                                                            triggered: nil, settings: settings) { _ in }) { error in
            XCTAssertTrue("\(error)".contains("isolation_ratio 0.01 of 20 training images isolates none"), "\(error)")
        }
    }
}

/// ABL on real data at the quick fixtures' scale: the recipe of Fixtures/defenses/badnets_w8
/// (BadNets at rate 0.1 on the first 20,000 images of the attacker split, a width-8 ResNet-18, 6
/// epochs at lr 0.05, x0.1 for the last, no augmentation), split into ABL's phases; that fixture
/// model is the undefended one trained the same way.
final class ABLRunTests: XCTestCase {
    /// docs/defenses.md's quick setting (`train --defense abl --isolation-epochs 3 ...`).
    static var quickSettings: ABLSettings {
        var s = ABLSettings()
        (s.isolationEpochs, s.isolationLearningRate) = (3, 0.05)
        (s.finetuningEpochs, s.finetuningLearningRate, s.finetuningMilestone) = (3, 0.05, 2)
        (s.unlearningEpochs, s.unlearningLearningRate) = (10, 1e-3)
        (s.batchSize, s.weightDecay, s.augment) = (128, 5e-4, false)
        return s
    }

    func testABLModelHasLowerASRThanTheUndefendedOne() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let data = try CIFAR10.load(directory: shared + "/cifar10")
        let permutation = try Permutation.read(path: shared + "/anp/cifar_shuffle.txt")
        let attacker = DataSplit(permutation: permutation, valFrac: 0.1).attacker
        let fixture = SharedData.packageRoot() + "/Fixtures/defenses/badnets_w8"
        let info = try TriggerInfo.read(path: fixture + "/trigger_info.safetensors")
        let poisoned = try Poisoning.trainingSet(data.train.subset(Array(attacker.prefix(20000))), trigger: info.trigger,
                                                 target: info.target, rate: 0.1, seed: 0)
        let test = data.test.subset(Array(0..<1000))
        let poison = try Poisoning.testSet(test, trigger: info.trigger, target: info.target)

        let start = Date()
        let model = try ResNet18.model(width: 8, seed: 0, on: testBackend)
        let result = try AntiBackdoorLearning.train(model, on: poisoned.images, truth: poisoned.isPoisoned, cleanTest: test,
                                                    poisonTest: poison, triggered: nil, settings: Self.quickSettings) { print($0) }
        let undefended = try DefenseMetrics.evaluate(try Checkpoint.load(fixture + "/model.safetensors", on: testBackend).model,
                                                     clean: test, poison: poison, triggered: nil)

        let isolation = try XCTUnwrap(result.isolation.metrics)
        let abl = result.final
        print(String(format: "ABL quick run (%.0f s): isolated %d, %d poisoned (precision %.3f, AUROC %.3f); clean acc %.4f "
                + "ASR %.4f; undefended clean acc %.4f ASR %.4f", Date().timeIntervalSince(start), result.isolation.isolated.count,
                     isolation.truePositives, isolation.precision, isolation.auroc ?? 0, abl.cleanAccuracy,
                     abl.attackSuccessRate ?? 0, undefended.cleanAccuracy, undefended.attackSuccessRate ?? 0))
        XCTAssertEqual(result.phases.map(\.name), ["isolation", "finetuning", "unlearning"])
        XCTAssertEqual(result.isolation.isolated.count, 200)
        XCTAssertEqual(result.isolation.poisonedImages, poisoned.poisonedIndices.count)
        XCTAssertGreaterThan(undefended.attackSuccessRate ?? 0, 0.9, "the undefended model is backdoored")
        XCTAssertLessThan(abl.attackSuccessRate ?? 1, 0.5 * (undefended.attackSuccessRate ?? 0), "ABL removes most of the backdoor")
        XCTAssertGreaterThan(isolation.precision, 0.5, "the isolated images are mostly poisoned")
    }
}
