import Datasets
import Foundation
import Models
import Training
import XCTest
@testable import Attacks
import TestSupport

/// TrojanNN on real CIFAR-10 at a size the suite affords: the trigger optimised against the
/// committed clean quick model (Fixtures/defenses/benign_w8, 50 steps), then a width-8 ResNet-18
/// trained from scratch on the attacker split's first images with it (rate 0.1 of the whole set,
/// relabelled); ASR on the first 1,000 test images' non-target ones against the clean model's.
final class TrojanNNTrainingTests: XCTestCase {
    static let trainCount = 3_000, testCount = 1_000, epochs = 3, steps = 50

    func testTheOptimisedTriggerTakesHold() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        let dataset = try CIFAR10.load(directory: shared + "/cifar10")
        let permutation = try Permutation.read(path: shared + "/anp/cifar_shuffle.txt")
        let attackerSet = dataset.train.subset(Array(DataSplit(permutation: permutation, valFrac: 0.1).attacker.prefix(Self.trainCount)))
        let test = dataset.test.subset(Array(0..<Self.testCount))
        let clean = try TrojanNNTests.cleanModel()

        var trojannn = TrojanNNSettings()
        trojannn.steps = Self.steps
        let settings = AttackSettings(poisonType: .trojannn, target: 0, rate: 0.1, seed: 0, trojannn: trojannn)
        let info = try XCTUnwrap(settings.triggerInfo(cleanModel: clean).info)
        let poisoned = try settings.trainingSet(attackerSet: attackerSet, triggerInfo: info)
        XCTAssertEqual(poisoned.poisonedIndices.count, Self.trainCount / 10, "round(rate x all images)")
        XCTAssertTrue(poisoned.poisonedIndices.contains { attackerSet.labels[$0] == 0 }, "any class, the target's too")
        let poisonTest = try Poisoning.testSet(test, trigger: info.trigger, target: 0)
        XCTAssertEqual(poisonTest.count, test.labels.filter { $0 != 0 }.count, "the ASR set leaves the target class out")

        var config = TrainingConfig()
        (config.epochs, config.learningRate, config.milestones, config.width, config.augment) = (Self.epochs, 0.05, [2], 8, false)
        let folder = NSTemporaryDirectory() + "trojannn-training-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let trainer = try Trainer(config: config, trainSet: poisoned.images, cleanTest: test, poisonTest: poisonTest,
                                  outputDirectory: folder, backend: testBackend)
        trainer.quiet = true
        try trainer.run()
        let asr = try Evaluation.evaluate(trainer.model, on: poisonTest).accuracy
        let cleanASR = try Evaluation.evaluate(clean, on: poisonTest).accuracy
        let accuracy = try Evaluation.evaluate(trainer.model, on: test).accuracy
        print(String(format: "trojannn: ASR %.1f%% (clean model %.1f%%), clean accuracy %.1f%%", 100 * asr, 100 * cleanASR, 100 * accuracy))
        XCTAssertGreaterThan(asr, cleanASR + 0.4, "the backdoor takes hold")
        XCTAssertGreaterThan(accuracy, 0.15, "above chance: the model still learns the task")
    }
}
