import XCTest
import Attacks
import Datasets
import NN
import Support
import Training
@testable import Defenses

/// The whole defense on real CIFAR-10 at small scale: a narrow ResNet-18 backdoored with
/// BadNets, ANP masks from the defender's 500 clean images, pruning at mask <= 0.2.
final class ANPRealDataTests: XCTestCase {
    static let width = 8
    static let trainImages = 10_000
    static let epochs = 4
    static let anpIterations = 300
    static let testImages = 2_000

    func testANPPruningRemovesABadNetsBackdoor() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let data = try CIFAR10.load(directory: shared + "/cifar10")
        let permutation = try Permutation.read(path: shared + "/anp/cifar_shuffle.txt")
        let split = DataSplit(permutation: permutation, valFrac: 0.01)
        let trigger = try Trigger.standard(.checkerboard1Corner, alpha: 1)
        let attackerSet = data.train.subset(Array(split.attacker.prefix(Self.trainImages)))
        let poisoned = try Poisoning.trainingSet(attackerSet, trigger: trigger, target: 0, rate: 0.1, seed: 1)
        let cleanTest = data.test.subset(Array(0..<Self.testImages))
        let poisonTest = try Poisoning.testSet(cleanTest, trigger: trigger, target: 0)

        // Without augmentation: with the reference's random crops a corner trigger takes about
        // 200,000 samples to take hold (shared/bench/ANCHORS.md), too many for a test.
        let model = try ResNet18(width: Self.width, seed: 2)
        let loader = BatchLoader(images: poisoned.images, batchSize: 128, shuffle: true, augment: false, seed: 3)
        for epoch in 0..<Self.epochs {
            let sgd = SGD(learningRate: epoch < Self.epochs - 1 ? 0.05 : 0.005, momentum: 0.9, weightDecay: 5e-4)
            for batch in loader.epoch(epoch) {
                let logits = try model.forward(images: batch.images, count: batch.count, mode: .training)
                let ce = CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: 10)
                try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
                try sgd.step(model.parameters)
            }
        }
        let before = try PruningMetrics.evaluate(model, clean: cleanTest, poison: poisonTest)
        print(String(format: "backdoored width-%d model: clean accuracy %.4f, ASR %.4f", Self.width,
                     before.cleanAccuracy, before.poisonAccuracy))
        XCTAssertGreaterThan(before.poisonAccuracy, 0.9, "the BadNets backdoor must take hold for the test to mean anything")

        var config = ANPConfig()
        config.iterations = Self.anpIterations
        config.printEvery = Self.anpIterations
        let result = try ANP.optimizeMasks(model: model, data: ANPData(defender: data.train.subset(split.defender),
                                                                       cleanTest: cleanTest, poisonTest: poisonTest),
                                           config: config)
        let pruned = Pruning.neurons(result.scores, atOrBelow: 0.2)
        try Pruning.prune(model, neurons: pruned)
        let after = try PruningMetrics.evaluate(model, clean: cleanTest, poison: poisonTest)
        print(String(format: "ANP (%d iterations) pruned %d of %d neurons at mask <= 0.2: clean accuracy %.4f, ASR %.4f",
                     Self.anpIterations, pruned.count, result.scores.count, after.cleanAccuracy, after.poisonAccuracy))
        XCTAssertLessThan(after.poisonAccuracy, 0.2)
        XCTAssertGreaterThan(after.cleanAccuracy, before.cleanAccuracy - 0.1)
    }
}
