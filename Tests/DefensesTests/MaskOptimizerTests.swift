import XCTest
import Models
import Formats
import NN
import Support
@testable import Defenses
import TestSupport

/// ANP mask optimisation against the PyTorch reference semantics (Fixtures/anp/anp_w4.safetensors,
/// made by scripts/fixtures/make_anp_fixtures.py) and against finite differences.
final class MaskOptimizerTests: XCTestCase {
    func testThreeIterationsMatchPyTorchReference() throws {
        let golden = try Fixture.load("anp/anp_w4.safetensors")
        let (model, images, labels) = try Fixture.goldenModel()
        let anp = try MaskOptimizer(model: model, config: ANPConfig())
        let layers = anp.layers
        XCTAssertEqual(layers.count, 20)
        var generator = SeededGenerator(seed: 0)

        // Iteration-0 pieces: F1 gradients of +CE at the injected draws, then the mask gradient parts.
        let draw0 = NeuronPerturbation(delta: try golden.perLayer("delta0", layers), xi: try golden.perLayer("xi0", layers))
        try anp.setPerturbation(draw0)
        let f1 = try anp.gradients(images: images, labels: labels, perturbed: true)
        assertTensorClose(f1.logits, try golden.f("logits_noise0"), "logits_noise0")
        for (i, layer) in layers.enumerated() {
            assertTensorClose(f1.mask[i], try golden.f("grad_delta0." + layer.name), "grad_delta0.\(layer.name)")
            assertTensorClose(f1.xi[i], try golden.f("grad_xi0." + layer.name), "grad_xi0.\(layer.name)")
        }
        try anp.setPerturbation(NeuronPerturbation(delta: try golden.perLayer("delta_after0", layers),
                                                   xi: try golden.perLayer("xi_after0", layers)))
        let rob = try anp.gradients(images: images, labels: labels, perturbed: true)
        let nat = try anp.gradients(images: images, labels: labels, perturbed: false)
        assertTensorClose(rob.logits, try golden.f("logits_rob0"), "logits_rob0")
        assertTensorClose(nat.logits, try golden.f("logits_nat0"), "logits_nat0")
        for (i, layer) in layers.enumerated() {
            assertTensorClose(rob.mask[i], try golden.f("grad_mask_rob0." + layer.name), "grad_mask_rob0.\(layer.name)")
            assertTensorClose(nat.mask[i], try golden.f("grad_mask_nat0." + layer.name), "grad_mask_nat0.\(layer.name)")
            let combined = zip(nat.mask[i], rob.mask[i]).map { 0.2 * $0 + 0.8 * $1 }
            assertTensorClose(combined, try golden.f("grad_mask0." + layer.name), "grad_mask0.\(layer.name)")
        }

        // Three whole iterations from a fresh model (the probes above moved the running statistics).
        let (fresh, _, _) = try Fixture.goldenModel()
        let optimizer = try MaskOptimizer(model: fresh, config: ANPConfig())
        let gamma = try optimizer.layers.map { try $0.weight.plainValues() }
        for iteration in 0..<3 {
            let draw = NeuronPerturbation(delta: try golden.perLayer("delta\(iteration)", layers),
                                          xi: try golden.perLayer("xi\(iteration)", layers))
            let result = try optimizer.step(images: images, labels: labels, initialPerturbation: draw,
                                            generator: &generator)
            XCTAssertEqual(result.noiseLosses.count, 1)
            XCTAssertEqual(result.noiseLosses[0], try golden.f("loss_noise\(iteration)")[0], accuracy: 1e-4 * 3)
            XCTAssertEqual(result.robustLoss, try golden.f("loss_rob\(iteration)")[0], accuracy: 1e-4 * 3)
            XCTAssertEqual(result.naturalLoss, try golden.f("loss_nat\(iteration)")[0], accuracy: 1e-4 * 3)
            XCTAssertEqual(result.loss, try golden.f("loss\(iteration)")[0], accuracy: 1e-4 * 3)
            for (i, layer) in optimizer.layers.enumerated() {
                let name = layer.name
                XCTAssertEqual(try optimizer.perturbation.delta[i], try golden.f("delta_after\(iteration).\(name)"),
                               "delta_after\(iteration).\(name): every sign step must agree")
                XCTAssertEqual(try optimizer.perturbation.xi[i], try golden.f("xi_after\(iteration).\(name)"),
                               "xi_after\(iteration).\(name)")
                assertTensorClose(try optimizer.masks[i], try golden.f("mask\(iteration).\(name)"), "mask\(iteration).\(name)")
                assertTensorClose(try optimizer.maskMomentum![i], try golden.f("mask_momentum\(iteration).\(name)"),
                                  "mask_momentum\(iteration).\(name)")
                if iteration == 0 {
                    assertTensorClose(try layer.runningMean.plainValues(), try golden.f("running_mean_after0.\(name)"),
                                      "running_mean_after0.\(name)")
                    assertTensorClose(try layer.runningVar.plainValues(), try golden.f("running_var_after0.\(name)"),
                                      "running_var_after0.\(name)")
                }
            }
        }
        for layer in optimizer.layers {
            assertTensorClose(try layer.runningMean.plainValues(), try golden.f("final.\(layer.name).running_mean"),
                              "final running mean \(layer.name)")
            assertTensorClose(try layer.runningVar.plainValues(), try golden.f("final.\(layer.name).running_var"),
                              "final running var \(layer.name)")
            XCTAssertEqual(layer.numBatchesTracked.value, try golden.tensors["final.\(layer.name).num_batches_tracked"]!.int64s()[0])
        }
        // The weights themselves are untouched: detached, the model gives the reference's natural logits.
        optimizer.detach()
        XCTAssertFalse(fresh.batchNorms.contains { $0 is NoisyBatchNorm2d })
        XCTAssertEqual(try fresh.batchNorms.map { try $0.weight.plainValues() }, gamma)
    }

    /// dCE/dm, dCE/ddelta and dCE/dxi against central differences of the training-mode loss
    /// (float32, so a loose tolerance and eps 1e-2).
    func testGradientsMatchFiniteDifferences() throws {
        let model = try ResNet18.model(width: 4, seed: 3, on: testBackend)
        var generator = SeededGenerator(seed: 11)
        let count = 6
        let images = (0..<(count * 3072)).map { _ in generator.nextGaussian() }
        let labels = (0..<count).map { Int32($0 % 10) }
        // Small BN weights and large positive biases keep nearly every ReLU active: at width 4
        // and batch 6 the loss is otherwise so kinked that float32 differences scatter by 30%
        // between step sizes. Distinct per-channel values so that every chain factor (w, b) matters.
        for bn in model.batchNorms {
            try bn.weight.setPlainValues((0..<bn.channels).map { _ in 0.3 + 0.3 * generator.nextFloat() })
            try bn.bias.setPlainValues((0..<bn.channels).map { _ in 4 + 0.5 * generator.nextGaussian() })
        }
        let anp = try MaskOptimizer(model: model, config: ANPConfig())
        try anp.setPerturbation(anp.drawPerturbation(using: &generator))
        try anp.restore(masks: try anp.masks.map { $0.map { _ in 0.5 + 0.5 * generator.nextFloat() } }, momentum: nil)

        func loss(perturbed: Bool) throws -> Double {
            anp.setForward(perturbed: perturbed)
            let logits = try model.forward(images: images, count: count, mode: .training)
            return Double(CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10).meanLoss)
        }
        let eps: Float = 1e-2
        let probes = [(0, 1), (2, 3), (7, 0), (12, 5), (19, 30), (17, 2)]  // (layer, channel), shortcut BNs included
        for perturbed in [true, false] {
            let g = try anp.gradients(images: images, labels: labels, perturbed: perturbed)
            for (layer, channel) in probes {
                func central(_ nudge: (Float) throws -> Void) throws -> Double {
                    try nudge(eps)
                    let plus = try loss(perturbed: perturbed)
                    try nudge(-2 * eps)
                    let minus = try loss(perturbed: perturbed)
                    try nudge(eps)
                    return (plus - minus) / Double(2 * eps)
                }
                let dMask = try central { var m = try anp.masks; m[layer][channel] += $0; try anp.restore(masks: m, momentum: nil) }
                check(Double(g.mask[layer][channel]), dMask, "dL/dm \(anp.layers[layer].name)[\(channel)] perturbed=\(perturbed)")
                if perturbed {
                    let dDelta = try central { var p = try anp.perturbation; p.delta[layer][channel] += $0; try anp.setPerturbation(p) }
                    check(Double(g.mask[layer][channel]), dDelta, "dL/ddelta \(anp.layers[layer].name)[\(channel)]")
                    let dXi = try central { var p = try anp.perturbation; p.xi[layer][channel] += $0; try anp.setPerturbation(p) }
                    check(Double(g.xi[layer][channel]), dXi, "dL/dxi \(anp.layers[layer].name)[\(channel)]")
                }
            }
        }
    }

    private func check(_ analytic: Double, _ numeric: Double, _ what: String) {
        let tolerance = 0.03 * max(abs(numeric), abs(analytic)) + 2e-4
        XCTAssertEqual(analytic, numeric, accuracy: tolerance, what)
    }

    func testMasksStayInUnitIntervalUnderLargeSteps() throws {
        let model = try ResNet18.model(width: 4, seed: 5, on: testBackend)
        var config = ANPConfig()
        config.learningRate = 50  // large steps push many masks past both bounds
        let anp = try MaskOptimizer(model: model, config: config)
        var generator = SeededGenerator(seed: 4)
        let images = (0..<(8 * 3072)).map { _ in generator.nextGaussian() }
        let labels = (0..<8).map { Int32($0) }
        var sawZero = false
        for _ in 0..<4 {
            try anp.step(images: images, labels: labels, generator: &generator)
            for layer in try anp.masks {
                XCTAssertTrue(layer.allSatisfy { $0 >= 0 && $0 <= 1 })
                sawZero = sawZero || layer.contains(0)
            }
        }
        XCTAssertTrue(sawZero, "the large learning rate should clamp some masks at 0")
        XCTAssertTrue(try anp.maskMomentum!.joined().contains { $0 < 0 || $0 > 1 }, "the momentum buffer is not clamped")
    }

    func testRandomPerturbationsLieWithinEpsAndStepBySignOnly() throws {
        let model = try ResNet18.model(width: 4, seed: 6, on: testBackend)
        var config = ANPConfig()
        config.eps = 0.3
        config.steps = 2
        let anp = try MaskOptimizer(model: model, config: config)
        var generator = SeededGenerator(seed: 8)
        let draw = anp.drawPerturbation(using: &generator)
        XCTAssertTrue((draw.delta + draw.xi).joined().allSatisfy { abs($0) <= 0.3 })
        let images = (0..<(4 * 3072)).map { _ in generator.nextGaussian() }
        try anp.step(images: images, labels: [0, 1, 2, 3], initialPerturbation: draw, generator: &generator)
        // Two steps of 0.15 along signs: each coordinate moved by -0.3, -0.15, 0, 0.15 or 0.3.
        for (after, before) in zip(try anp.perturbation.delta.joined(), draw.delta.joined()) {
            let moved = (after - before) / 0.15
            XCTAssertEqual(moved, moved.rounded(), accuracy: 1e-4)
            XCTAssertLessThanOrEqual(abs(moved), 2.0001)
        }
    }

    func testInvalidConfigNamesTheFlag() {
        var config = ANPConfig()
        config.alpha = 1.5
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("--anp-alpha 1.5"), "\($0)") }
        config = ANPConfig()
        config.steps = 0
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("--anp-steps"), "\($0)") }
    }
}
