import Datasets
import Foundation
import NN
import Support
import XCTest
@testable import Defenses
import TestSupport

/// SAU's objectives and FT-SAM's step pieces against torch autograd on the reference formulas
/// (Fixtures/defenses/sau_ftsam.json from scripts/fixtures/make_sau_ftsam_fixtures.py), and
/// both defenses on the quick BadNets model.
final class SAUFTSAMTests: XCTestCase {
    func fixture() throws -> [String: Any] {
        let path = SharedData.packageRoot() + "/Fixtures/defenses/sau_ftsam.json"
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    func floats(_ any: Any?) -> [Float] { (any as! [Double]).map(Float.init) }

    func assertClose(_ actual: [Float], _ expected: [Double], _ what: String, tolerance: Double = 1e-5,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        let scale = max(expected.map(abs).max() ?? 0, 1e-12)
        for (i, (a, e)) in zip(actual, expected).enumerated() where abs(Double(a) - e) > tolerance * scale {
            XCTFail("\(what)[\(i)]: \(a), expected \(e)", file: file, line: line)
            return
        }
    }

    func testSAUAttackObjectiveMatchesTorch() throws {
        let f = try fixture(), a = f["attack"] as! [String: Any]
        let objective = SharedAdversarial.attackObjective(
            logits: floats(a["logits"]), referenceLogits: floats(a["reference_logits"]),
            labels: (f["labels"] as! [Int]).map(Int32.init), cleanPredictions: a["clean_predictions"] as! [Int],
            referenceCleanPredictions: a["reference_clean_predictions"] as! [Int], classes: f["classes"] as! Int,
            beta1: a["beta1"] as! Double, beta2: a["beta2"] as! Double)
        XCTAssertEqual(objective.shared, a["shared"] as! Int)
        XCTAssertEqual(objective.shared, 3, "the fixture has shared rows")
        XCTAssertEqual(objective.value, a["value"] as! Double, accuracy: 1e-6 * abs(a["value"] as! Double))
        assertClose(objective.gradient, a["gradient"] as! [Double], "model gradient")
        assertClose(objective.referenceGradient, a["reference_gradient"] as! [Double], "reference gradient")
    }

    func testSAUUnlearningLossMatchesTorch() throws {
        let f = try fixture(), u = f["unlearning"] as! [String: Any]
        let lmd = u["lmd"] as! [Double]
        let loss = SharedAdversarial.unlearningLoss(
            cleanLogits: floats(u["clean_logits"]), perturbedLogits: floats(u["perturbed_logits"]),
            referencePerturbedLogits: floats(u["reference_perturbed_logits"]),
            referenceCleanPredictions: u["reference_clean_predictions"] as! [Int], labels: (f["labels"] as! [Int]).map(Int32.init),
            classes: f["classes"] as! Int, lmd1: lmd[0], lmd2: lmd[1], lmd3: lmd[2])
        XCTAssertEqual(loss.potentialPoison, u["potential_poison"] as! Int)
        XCTAssertGreaterThan(loss.potentialPoison, 0)
        XCTAssertEqual(loss.value, u["value"] as! Double, accuracy: 1e-6 * abs(u["value"] as! Double))
        assertClose(loss.cleanGradient, u["clean_gradient"] as! [Double], "clean gradient")
        assertClose(loss.perturbedGradient, u["perturbed_gradient"] as! [Double], "perturbed gradient")
    }

    /// pert - 0.2 sign(g / std_c), clamped to [-0.2, 0.2]: from +0.2, a positive gradient moves to
    /// 0, a negative one stays clamped at 0.2, a zero one stays; from 0, down to -0.2.
    func testPGDStepIsTheSignedProjectedStep() {
        let plane = ImageSet.height * ImageSet.width, count = 3 * plane
        var generator = SeededGenerator(seed: 3, stream: "pgd step")
        let gradient = (0..<count).map { i in i % 7 == 0 ? 0 : generator.nextFloat() - 0.5 }
        var pert = [Float](repeating: 0.2, count: count)
        SharedAdversarial.step(&pert, inputGradient: gradient, stepSize: 0.2, bound: 0.2)
        for i in 0..<count {
            let expected: Float = gradient[i] > 0 ? 0 : 0.2
            XCTAssertEqual(pert[i], expected, accuracy: 1e-7, "element \(i), gradient \(gradient[i])")
        }
        SharedAdversarial.step(&pert, inputGradient: gradient, stepSize: 0.2, bound: 0.2)
        for i in 0..<count where gradient[i] > 0 { XCTAssertEqual(pert[i], -0.2, accuracy: 1e-7) }
        // The perturbation is in pixel units: channel c of the normalised image moves by pert / std_c.
        let images = [Float](repeating: 1, count: count)
        let x = SharedAdversarial.perturbed(images, [Float](repeating: 0.2, count: count))
        for c in 0..<3 { XCTAssertEqual(x[c * plane + 5], 1 + 0.2 / Normalization.cifar10.std[c], accuracy: 1e-6) }
    }

    func testSAMPerturbationAndDecompositionMatchTorch() throws {
        let s = try fixture()["sam"] as! [String: Any]
        let weights = (s["weights"] as! [[Double]]).map { $0.map(Float.init) }
        let gradients = (s["gradients"] as! [[Double]]).map { $0.map(Float.init) }
        let newGradients = (s["new_gradients"] as! [[Double]]).map { $0.map(Float.init) }
        let rho = s["rho"] as! Double
        for (adaptive, key) in [(false, "perturbation"), (true, "adaptive_perturbation")] {
            let parameters = try zip(weights, gradients).map { w, g -> Parameter in
                let p = try Parameter("w", plainShape: [w.count], values: w, on: testBackend)
                try p.gradient.setPlainValues(g)
                return p
            }
            let sam = SharpnessAwareMinimisation(rhoMax: rho, rhoMin: rho, adaptive: adaptive, alpha: s["alpha"] as! Double)
            let e = try sam.perturb(parameters)
            for (i, expected) in (s[key] as! [[Double]]).enumerated() {
                assertClose(e[i], expected, "\(key) \(i)")
                assertClose(try parameters[i].plainValues(), zip(weights[i], expected).map { Double($0) + $1 }, "w + e \(i)")
            }
            for (p, g) in zip(parameters, newGradients) { try p.gradient.setPlainValues(g) }
            try sam.restore(parameters)
            for (i, expected) in (s["decomposed"] as! [[Double]]).enumerated() {
                XCTAssertEqual(try parameters[i].plainValues(), weights[i], "weights restored exactly")
                assertClose(try parameters[i].plainGradient(), expected, "GSAM gradient \(i)")
            }
        }
        // rho follows the learning rate between rho_min (at 0) and rho_max (at the base rate).
        XCTAssertEqual(SharpnessAwareMinimisation(rhoMax: 2, rhoMin: 0.5, adaptive: true, alpha: 0).rho(learningRateFraction: 0.5), 1.25)
    }

    func testLabelSmoothedCrossEntropyMatchesTorch() throws {
        let f = try fixture(), c = f["smooth_ce"] as! [String: Any]
        let result = CrossEntropy.evaluate(logits: floats(c["logits"]), labels: (f["labels"] as! [Int]).map(Int32.init),
                                           classes: f["classes"] as! Int, smoothing: Float(c["smoothing"] as! Double))
        XCTAssertEqual(Double(result.meanLoss), c["value"] as! Double, accuracy: 1e-5)
        assertClose(result.logitsGradient, c["gradient"] as! [Double], "gradient")
    }

    /// SAU's optimiser: torch.optim.Adam(amsgrad=True) over three steps, on a model parameter.
    func testParameterAdamWithAMSGradMatchesTorch() throws {
        let a = try fixture()["amsgrad"] as! [String: Any]
        let p = try Parameter("x", plainShape: [5], values: floats(a["start"]), on: testBackend)
        let adam = ParameterAdam(learningRate: Float(a["lr"] as! Double), amsgrad: true)
        for (g, expected) in zip(a["gradients"] as! [[Double]], a["steps"] as! [[Double]]) {
            try p.gradient.setPlainValues(g.map(Float.init))
            try adam.step([p])
            assertClose(try p.plainValues(), expected, "amsgrad step")
        }
    }

    func testSettingsHaveTheReferenceDefaultsAndRanges() throws {
        let sau = SAUDefense.defaults
        for (key, value) in ["n_rounds": 100.0, "batch_size": 256, "trigger_norm": 0.2, "adv_lr": 0.2, "adv_steps": 5,
                             "beta_1": 0.01, "beta_2": 1, "lmd_1": 1, "lmd_2": 0, "lmd_3": 1, "outer_steps": 1] {
            XCTAssertEqual(sau[key] ?? .nan, value, accuracy: 1e-7, key)
        }
        XCTAssertEqual(sau["lr"] ?? 0, 1e-4, accuracy: 1e-10)
        let sam = FTSAMDefense.defaults
        for (key, value) in ["rho_max": 2.0, "rho_min": 2, "adaptive": 1, "alpha": 0, "epochs": 100, "batch_size": 256,
                             "cosine_t_max": 100, "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.01, "label_smoothing": 0.1] {
            XCTAssertEqual(sam[key] ?? .nan, value, accuracy: 1e-7, key)
        }
        XCTAssertTrue(FTSAMDefense().config.schedulePerBatch)
        for (name, overrides, expected) in [
            ("sau", ["adv_steps": 0.0], "sau: adv_steps 0 is out of range: expected a whole number at least 1"),
            ("sau", ["trigger_norm": -0.1], "sau: trigger_norm -0.1 is out of range: expected a positive number"),
            ("sau", ["lmd_3": -1], "sau: lmd_3 -1 is out of range: expected a number at least 0"),
            ("ft-sam", ["rho_max": 1], "ft-sam: rho_max 1 is out of range: expected a number at least rho_min (2)"),
            ("ft-sam", ["adaptive": 0.5], "ft-sam: adaptive 0.5 is out of range: expected 0 (SAM) or 1 (adaptive SAM)"),
            ("ft-sam", ["label_smoothing": 1], "ft-sam: label_smoothing 1 is out of range: expected a number in [0, 1)"),
        ] {
            XCTAssertThrowsError(try DefenseRegistry.make(name, overrides: overrides)) { error in
                XCTAssertEqual("\(error)", expected)
            }
        }
    }

    func judge(_ defense: Defense, cleanFrac: Double) throws -> (DefenseMetrics, DefenseMetrics, [String]) {
        let s = try QuickFixture.load("badnets", cleanFrac: cleanFrac)
        let before = try DefenseMetrics.evaluate(s.model, clean: s.test, poison: s.poison, triggered: s.triggered)
        var lines: [String] = []
        let started = Date()
        _ = try defense.repair(s.model, clean: s.defender) { lines.append($0) }
        let after = try DefenseMetrics.evaluate(s.model, clean: s.test, poison: s.poison, triggered: s.triggered)
        print(String(format: "\(defense.name): before \(before), after \(after), %.1f s", Date().timeIntervalSince(started)))
        XCTAssertGreaterThan(before.attackSuccessRate!, 0.95, "the fixture is backdoored")
        return (before, after, lines)
    }

    /// Quick scale: 1% of the split (500 images), one round of batches of 32 at lr 2e-4 (the
    /// reference: 5%, 100 rounds of batches of 256 at 1e-4); the PGD as the reference (L-inf 0.2,
    /// 5 steps of 0.2). The PGD must find shared adversarial examples on most real images and the
    /// unlearning must keep the clean accuracy; at this scale it does NOT remove the quick model's
    /// backdoor (ASR stays about 99%, docs/defenses.md), so the ASR is reported, not asserted.
    func testSAUFindsSharedAdversarialExamplesAndKeepsCleanAccuracy() throws {
        var config = SAUConfig()
        (config.rounds, config.batchSize, config.learningRate) = (1, 32, 2e-4)
        let s = try QuickFixture.load("badnets", cleanFrac: 0.01)
        let before = try DefenseMetrics.evaluate(s.model, clean: s.test, poison: s.poison, triggered: s.triggered)
        var lines: [String] = []
        let decision = try SAUDefense(config: config).repair(s.model, clean: s.defender) { lines.append($0) }
        let after = try DefenseMetrics.evaluate(s.model, clean: s.test, poison: s.poison, triggered: s.triggered)
        print("sau: before \(before), after \(after); \(lines)")
        XCTAssertGreaterThan(before.attackSuccessRate!, 0.95, "the fixture is backdoored")
        XCTAssertEqual(lines.count, 1)
        XCTAssertTrue(lines[0].hasPrefix("sau: round 1/1 loss"), lines[0])
        XCTAssertGreaterThan(try XCTUnwrap(decision.details["last_round_shared_fraction"] as? Double), 0.3)
        XCTAssertGreaterThan(try XCTUnwrap(decision.details["last_round_potential_poison_fraction"] as? Double), 0.3)
        XCTAssertGreaterThan(after.cleanAccuracy, before.cleanAccuracy - 0.15)
    }

    /// Quick scale: 2% of the split, 2 epochs at lr 0.05 (the reference: 5%, 100 epochs at 0.01);
    /// SAM as the reference (adaptive, rho 2, label smoothing 0.1, cosine per batch).
    func testFTSAMLowersASR() throws {
        var config = FTSAMDefense.referenceConfig
        (config.epochs, config.learningRate, config.batchSize) = (2, 0.05, 128)
        let (before, after, lines) = try judge(FTSAMDefense(config: config), cleanFrac: 0.02)
        XCTAssertEqual(lines.count, 2)
        XCTAssertTrue(lines[1].hasPrefix("ft-sam: epoch 2/2"), lines[1])
        XCTAssertLessThan(after.attackSuccessRate!, 0.3)
        XCTAssertGreaterThan(after.cleanAccuracy, before.cleanAccuracy - 0.2)
    }
}
