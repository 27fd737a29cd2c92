import Datasets
import Formats
import Foundation
import Models
import NN
import Support
import XCTest
@testable import Defenses
import TestSupport

/// RNP: the ascent step and the schedule against their definitions, and the whole defense on the
/// quick BadNets model with real CIFAR-10 (ASR drops well below its start; the repaired model
/// is the original one with exactly the chosen neurons pruned, chosen on the defender's data).
final class RNPTests: XCTestCase {
    /// One SGD step on -CE and one on CE from the same weights (first step: momentum buffer =
    /// gradient + weight decay): p_ascent + p_descent = 2 (p - lr wd p) for every parameter.
    func testAscentStepIsTheDescentStepWithTheGradientNegated() throws {
        var generator = SeededGenerator(seed: 4)
        let images = ImageSet(pixels: (0..<(8 * 3072)).map { _ in UInt8(generator.next() % 256) }, labels: (0..<8).map { $0 % 10 })
        let loader = BatchLoader.training(images, batchSize: 8, seed: 1)
        var after: [[String: HostTensor]] = []
        let (lr, wd): (Float, Float) = (0.05, 5e-4)
        for ascend in [true, false] {
            let model = try ResNet18.model(width: 4, seed: 9, on: testBackend)
            let outcome = try CleanEpoch.run(model, loader: loader, epoch: 0, sgd: SGD(learningRate: lr, momentum: 0.9, weightDecay: wd),
                                             ascend: ascend)
            XCTAssertTrue(outcome.loss.isFinite)
            after.append(try model.stateDict())
        }
        let start = try ResNet18.model(width: 4, seed: 9, on: testBackend)
        for p in start.parameters {
            let p0 = try p.plainValues(), up = try after[0][p.name]!.floats(), down = try after[1][p.name]!.floats()
            let expected = p0.map { 2 * ($0 - lr * wd * $0) }
            assertTensorClose(zip(up, down).map { $0 + $1 }, expected, p.name, tolerance: 1e-5)
            XCTAssertNotEqual(up, down, "\(p.name) moved")
        }
    }

    func testInvalidSettingsNameTheSetting() {
        var config = RNPConfig()
        config.cleanThreshold = 1.5
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("rnp: clean_threshold 1.5 is out of range"), "\($0)") }
        config = RNPConfig()
        config.accRatio = 0
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("acc_ratio 0 "), "\($0)") }
    }

    func testRemovesTheBadNetsBackdoorPruningTheOriginalModel() throws {
        let f = try QuickFixture.load("badnets")
        let original = try f.model.stateDict()
        let before = try DefenseMetrics.evaluate(f.model, clean: f.test, poison: f.poison, triggered: f.triggered)
        let start = Date()
        // The width-8 model has few neurons to spare: the first level of the sweep (31 masks at 0)
        // already costs a quarter of its clean accuracy, so the reference's 10% tolerance keeps nothing.
        var config = RNPConfig()
        config.accRatio = 0.3
        let result = try RNP.run(f.model, clean: f.defender, config: config)
        let seconds = Date().timeIntervalSince(start)
        let after = try DefenseMetrics.evaluate(f.model, clean: f.test, poison: f.poison, triggered: f.triggered)
        print("rnp on badnets_w8 (\(f.defender.count) defender images): before \(before), after \(after), "
            + "\(result.pruned.count) pruned, \(result.unlearning.count) unlearning epochs, \(String(format: "%.1f", seconds)) s")

        XCTAssertLessThanOrEqual(result.unlearning.last!.accuracy, config.cleanThreshold, "unlearning ran until accuracy collapsed")
        XCTAssertTrue(result.unlearning.dropLast().allSatisfy { $0.accuracy > config.cleanThreshold }, "and stopped there")
        // The level: the last of the sweep before the first that loses 30% of the unpruned defender accuracy.
        let base = result.cleanAccuracyBefore
        let firstOut = result.sweep.firstIndex { (base - $0.metrics.cleanAccuracy) / base >= 0.3 } ?? result.sweep.count
        XCTAssertEqual(result.pruned.count, firstOut == 0 ? 0 : result.sweep[firstOut - 1].pruned)
        XCTAssertEqual(result.pruned, Array(Pruning.sorted(result.scores).prefix(result.pruned.count)), "the lowest masks")
        XCTAssertEqual(result.scores.count, f.model.batchNorms.reduce(0) { $0 + $1.channels })
        XCTAssertTrue(result.scores.allSatisfy { (0...1).contains($0.value) })

        // The original weights and statistics, with the pruned BN weights zeroed.
        let repaired = try f.model.stateDict()
        var expected = original
        for neuron in result.pruned {
            var w = try expected[neuron.layer + ".weight"]!.floats()
            w[neuron.index] = 0
            expected[neuron.layer + ".weight"] = HostTensor(floats: w, shape: [w.count])
        }
        for (name, tensor) in expected { XCTAssertEqual(repaired[name], tensor, name) }

        XCTAssertLessThan(after.attackSuccessRate!, 0.5 * before.attackSuccessRate!, "ASR well below its start")
        XCTAssertGreaterThan(after.cleanAccuracy, before.cleanAccuracy - 0.3)
        XCTAssertFalse(result.pruned.isEmpty)
    }
}

/// NC's and RNP's named settings (the shape of the runner's defense registry): the defaults are
/// the configs' defaults, every key round-trips, and a bad value is refused naming it.
final class NCRNPSettingsTests: XCTestCase {
    func testSettingsRoundTripAndDefaultsAreTheReferences() throws {
        XCTAssertEqual(try NCDefense(settings: [:], seed: 0).config, NCConfig())
        XCTAssertEqual(try RNPDefense(settings: [:], seed: 0).config, RNPConfig())
        XCTAssertEqual(NCDefense.defaults["nc_epoch"], 80)
        XCTAssertEqual(NCDefense.defaults["atk_succ_threshold"], 98)
        XCTAssertEqual(RNPDefense.defaults["clean_threshold"], 0.2)
        let quick = NCDefense(config: .quick)
        XCTAssertEqual(try NCDefense(settings: quick.settings, seed: 0).config, NCConfig.quick)
        var rnp = RNPConfig()
        (rnp.pruningBy, rnp.pruningNumber, rnp.accRatio) = (.number, 12, 0.3)
        XCTAssertEqual(try RNPDefense(settings: RNPDefense(config: rnp).settings, seed: 0).config, rnp)
        XCTAssertThrowsError(try NCDefense(settings: ["unlearning_ratio": 1.5], seed: 0)) {
            XCTAssertTrue("\($0)".contains("unlearning_ratio 1.5"), "\($0)")
        }
        XCTAssertThrowsError(try RNPDefense(settings: ["pruning_by": 2], seed: 0)) { XCTAssertTrue("\($0)".contains("pruning_by 2"), "\($0)") }
    }
}
