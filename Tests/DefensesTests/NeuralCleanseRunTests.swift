import Datasets
import Foundation
import NN
import XCTest
@testable import Defenses
import TestSupport

/// Neural Cleanse's quick setting on the quick width-8 models and real CIFAR-10: the BadNets
/// target (class 0) is the flagged outlier and unlearning its trigger removes most of the
/// backdoor; on the clean model nothing is flagged and the model is left as it was.
final class NeuralCleanseRunTests: XCTestCase {
    func quickConfig() -> NCConfig {
        var config = NCConfig.quick
        config.fineTuneEpochs = 5
        return config
    }

    func testFindsAndUnlearnsTheBadNetsTarget() throws {
        let f = try QuickFixture.load("badnets")
        let before = try DefenseMetrics.evaluate(f.model, clean: f.test, poison: f.poison, triggered: f.triggered)
        XCTAssertGreaterThan(before.attackSuccessRate!, 0.95, "the fixture is backdoored")
        var lines: [String] = []
        let result = try NeuralCleanse.run(f.model, clean: f.defender, config: quickConfig()) { lines.append($0) }
        let norms = result.triggers.map(\.norm)
        XCTAssertEqual(norms.firstIndex(of: norms.min()!), 0, "class 0 has the smallest mask: \(norms)")
        XCTAssertEqual(result.anomaly.flagged.first, 0, "norms \(norms), anomaly index \(result.anomaly.anomalyIndex)")
        XCTAssertGreaterThan(result.anomaly.anomalyIndex, 2)
        XCTAssertEqual(result.unlearningLog.count, 5)
        XCTAssertTrue(lines.contains { $0.hasPrefix("nc: class 0: mask L1") }, "progress per class")
        let after = try DefenseMetrics.evaluate(f.model, clean: f.test, poison: f.poison, triggered: f.triggered)
        print("nc on badnets_w8: before \(before), after \(after), norms \(norms), index \(result.anomaly.anomalyIndex)")
        XCTAssertLessThan(after.attackSuccessRate!, 0.3, "unlearning the reversed trigger")
        // Unlearning's cost moves with the CPU's arithmetic: 66.6% -> 56.5% on an AVX-512 Zen 5, within
        // 10 points on the AVX2 Zen 3; the bound asks for a model that still classifies, not a number.
        XCTAssertGreaterThan(after.cleanAccuracy, before.cleanAccuracy - 0.15)
    }

    func testFlagsNothingOnTheCleanModel() throws {
        let f = try QuickFixture.load("benign")
        let weights = try f.model.stateDict()
        let result = try NeuralCleanse.run(f.model, clean: f.defender, config: quickConfig())
        print("nc on benign_w8: norms \(result.triggers.map(\.norm)), index \(result.anomaly.anomalyIndex)")
        XCTAssertEqual(result.anomaly.flagged, [], "norms \(result.triggers.map(\.norm)), index \(result.anomaly.anomalyIndex)")
        XCTAssertLessThan(result.anomaly.anomalyIndex, 2)
        XCTAssertTrue(result.unlearningLog.isEmpty)
        let unchanged = try f.model.stateDict()
        for (name, tensor) in weights { XCTAssertEqual(unchanged[name], tensor, name) }
    }
}
