import XCTest
import Datasets
import Formats
import Models
import NN
import Training
@testable import Defenses
import TestSupport

/// The pieces of FT, FP, NAD and FST against PyTorch (Fixtures/defenses/finetuning_w4.safetensors,
/// scripts/fixtures/make_finetuning_fixtures.py) and the references' arithmetic.
final class FineTuningTests: XCTestCase {
    func fixtureImages(_ fixture: SafeTensors) throws -> ImageSet {
        ImageSet(pixels: try fixture.tensors["fp.images"]!.uint8s(),
                 labels: try fixture.tensors["fp.labels"]!.int64s().map { Int($0) })
    }

    func testFPChannelRankingMatchesTorch() throws {
        let fixture = try Fixture.load("defenses/finetuning_w4.safetensors")
        let (model, _, _) = try Fixture.goldenModel()
        let layers = try DefenseLayers.of(model)
        XCTAssertEqual(layers, DefenseLayers(stages: ["layer2", "layer3", "layer4"], pooled: "avgpool", lastStage: "layer4",
                                             head: "linear"))
        // Batches of 20 so that the sum runs over several forwards, as the reference's loader.
        let (features, _) = try FinePruning.pooledFeatures(model, on: fixtureImages(fixture), layers: layers, batchSize: 20)
        let activations = FinePruning.meanActivations(features, channels: 32)
        assertTensorClose(activations.map(Float.init), try fixture.f("fp.activation"), "mean activation")
        XCTAssertEqual(FinePruning.ranking(activations), try fixture.tensors["fp.ranking"]!.int64s().map { Int($0) })
    }

    func testFPMaskedAccuracyFromFeaturesEqualsTheMaskedModelsForward() throws {
        let fixture = try Fixture.load("defenses/finetuning_w4.safetensors")
        let (model, _, _) = try Fixture.goldenModel()
        let images = try fixtureImages(fixture)
        let layers = try DefenseLayers.of(model)
        let head = try layers.linear(model)
        let (features, labels) = try FinePruning.pooledFeatures(model, on: images, layers: layers)
        let weight = try head.weight.plainValues(), bias = try head.bias.plainValues()
        for pruned in [[], [5, 11, 21], Array(0..<16)] {
            let masked = FinePruning.masked(weight, columns: 32, pruned: pruned)
            for row in 0..<10 { for c in pruned { XCTAssertEqual(masked[row * 32 + c], 0) } }
            XCTAssertEqual(masked.filter { $0 != 0 }.count, weight.filter { $0 != 0 }.count - 10 * pruned.count)
            try HeadMask(head: head, pruned: pruned).afterStep()
            let forward = try Evaluation.evaluate(model, on: images).accuracy
            XCTAssertEqual(FinePruning.accuracy(features: features, labels: labels, weight: masked, bias: bias), forward,
                           accuracy: 1e-12, "pruned \(pruned)")
            try head.weight.setPlainValues(weight)
        }
    }

    func testFPStopsBeforeTheFirstLevelThatLosesAccRatio() {
        XCTAssertEqual(FinePruning.levels(channels: 64, oncePruneRatio: 0.01), Array(0..<64))
        XCTAssertEqual(FinePruning.levels(channels: 512, oncePruneRatio: 0.01), Array(stride(from: 0, to: 512, by: 6)),
                       "ceil(512 * 0.01) = 6 per step")
        let curve = [0.80, 0.80, 0.79, 0.75, 0.71, 0.70, 0.85]
        let choice = LevelChoice.choose(levels: Array(0..<7), baseline: curve[0], accRatio: 0.1) { curve[$0] }
        // (0.80 - 0.71) / 0.80 = 0.1125 >= 0.1 stops at level 4; level 3 (0.0625) is kept.
        XCTAssertEqual(choice.level, 3)
        XCTAssertEqual(choice.tried.map(\.level), [0, 1, 2, 3, 4], "nothing after the first failure is tried")
        XCTAssertEqual(choice.tried.map(\.accuracy), Array(curve.prefix(5)))
        XCTAssertEqual(LevelChoice.choose(levels: Array(0..<7), baseline: curve[0], accRatio: 0.5) { curve[$0] }.level, 6)
        XCTAssertNil(LevelChoice.choose(levels: [0, 1], baseline: 0, accRatio: 0.1) { [0.0, 0.0][$0] }.level,
                     "a model with no clean accuracy is not pruned")
    }

    /// The chooser ANP's threshold and RNP's level use: the baseline is the unpruned model's (their
    /// first level may already prune), a gain passes, and a level past the first failure is never
    /// chosen even when it would pass.
    func testLevelChoiceKeepsTheLastLevelBeforeTheFirstOutOfBudget() {
        let thresholds = [0.0, 0.1, 0.2, 0.3, 0.4]
        let accuracy = [0.0: 0.752, 0.1: 0.760, 0.2: 0.740, 0.3: 0.700, 0.4: 0.750]
        // Budget 0.03 of 0.75: at least 0.7275 keeps; 0.700 at 0.3 is out; 0.4 would pass but is not tried.
        let choice = LevelChoice.choose(levels: thresholds, baseline: 0.75, accRatio: 0.03) { accuracy[$0]! }
        XCTAssertEqual(choice.level, 0.2)
        XCTAssertEqual(choice.tried.map(\.level), [0.0, 0.1, 0.2, 0.3])
        XCTAssertEqual(choice.baseline, 0.75)
        XCTAssertNil(LevelChoice.choose(levels: thresholds, baseline: 0.80, accRatio: 0.03) { accuracy[$0]! }.level,
                     "the first threshold already costs (0.80 - 0.752) / 0.80 = 6%")
        XCTAssertEqual(LevelChoice.choose(levels: thresholds, baseline: 0.75, accRatio: 0.1) { accuracy[$0]! }.level, 0.4)
        XCTAssertTrue(LevelChoice<Double>.keeps(0.73, baseline: 0.75, accRatio: 0.03))
        XCTAssertFalse(LevelChoice<Double>.keeps(0.375, baseline: 0.5, accRatio: 0.25), "a drop of exactly acc_ratio is out")
    }

    func testAttentionLossAndGradientMatchTorch() throws {
        let fixture = try Fixture.load("defenses/finetuning_w4.safetensors")
        let (s, t) = (try fixture.f("at.s"), try fixture.f("at.t"))
        for p in [2, 3] {
            let (value, gradient) = AttentionTransfer.loss(student: s, teacher: t, count: 2, channels: 3, p: Double(p))
            XCTAssertEqual(value, Double(try fixture.f("at.loss_p\(p)")[0]), accuracy: 1e-6, "p = \(p)")
            assertTensorClose(gradient, try fixture.f("at.grad_p\(p)"), "gradient, p = \(p)")
        }
        XCTAssertEqual(AttentionTransfer.loss(student: s, teacher: s, count: 2, channels: 3, p: 2).value, 0)
    }

    func testNADTapGradientsAreBetaTimesTheAttentionGradient() throws {
        let (model, x, labels) = try Fixture.goldenModel()
        let teacher = try FineTuning.copy(model)
        try teacher.batchNorms[0].weight.setPlainValues(try teacher.batchNorms[0].weight.plainValues().map { $0 * 0.5 })
        let stages = try DefenseLayers.of(model).stages
        let term = try AttentionDistillation(teacher: teacher, student: model, stages: stages, betas: [500, 1000, 1000], p: 2)
        XCTAssertEqual(term.channels, [8, 16, 32])
        let batch = Batch(images: x, labels: labels)
        let student = try model.forward(images: x, count: labels.count, mode: .training, taps: stages).features
        let target = try teacher.forward(images: x, count: labels.count, mode: .evaluation, taps: stages).features
        let (value, gradients) = try term.loss(features: student, batch: batch)
        var expected = 0.0
        for (i, stage) in stages.enumerated() {
            let (v, g) = AttentionTransfer.loss(student: student[stage]!, teacher: target[stage]!, count: labels.count,
                                                channels: term.channels[i], p: 2)
            expected += term.betas[i] * v
            assertTensorClose(gradients[stage]!, g.map { Float(term.betas[i]) * $0 }, stage)
        }
        XCTAssertEqual(value, expected, accuracy: 1e-12)
        XCTAssertEqual(try FineTuning.copy(model).stateDict(), try model.stateDict(), "a copy holds the same state")
    }

    func testFSTPenaltyGradientAndNormProjection() throws {
        let (model, x, labels) = try Fixture.goldenModel()
        let head = try DefenseLayers.of(model).linear(model)
        let original = try head.weight.plainValues()
        let shift = try FeatureShift(head: head, alpha: 0.1)
        try shift.reinitialiseHead(seed: 3)
        let bound = 1 / Float(32).squareRoot()
        let fresh = try head.weight.plainValues()
        let bias = try head.bias.plainValues()
        XCTAssertTrue(fresh.allSatisfy { abs($0) <= bound } && bias.allSatisfy { abs($0) <= bound })
        XCTAssertNotEqual(fresh, original)
        let (value, _) = try shift.loss(features: [:], batch: Batch(images: x, labels: labels))
        XCTAssertEqual(value, 0.1 * zip(fresh, original).reduce(0) { $0 + Double($1.0) * Double($1.1) }, accuracy: 1e-9)

        let logits = try model.forward(images: x, count: labels.count, mode: .training)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10)
        try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
        let before = try head.weight.plainGradient()
        try shift.addParameterGradients()
        // d(alpha * sum(W * W_orig)) / dW = alpha * W_orig, added to the cross-entropy's.
        assertTensorClose(try head.weight.plainGradient(), zip(before, original).map { $0 + 0.1 * $1 }, "gradient")

        try head.weight.setPlainValues(fresh.map { $0 * 3 })
        try shift.afterStep()
        let projected = try head.weight.plainValues()
        XCTAssertEqual(FeatureShift.norm(projected), FeatureShift.norm(original), accuracy: 1e-5)
        assertTensorClose(projected, fresh.map { $0 * Float(FeatureShift.norm(original) / FeatureShift.norm(fresh)) }, "direction")
    }

    func testCosineScheduleIsPyTorchsCosineAnnealingLR() {
        // torch.optim.lr_scheduler.CosineAnnealingLR(SGD(lr=0.01), T_max=100), after 1, 50, 99, 100 steps.
        let schedule = CosineSchedule(baseLearningRate: 0.01, tMax: 100)
        for (epoch, lr) in [(0, 0.01), (1, 0.009997532801828659), (50, 0.005), (99, 2.4671981713419e-06), (100, 0)] {
            XCTAssertEqual(Double(schedule.learningRate(epoch: epoch)), lr, accuracy: 1e-9, "epoch \(epoch)")
        }
        var config = FineTuningConfig.backdoorBench
        config.epochs = 5
        XCTAssertEqual(config.learningRate(epoch: 4), schedule.learningRate(epoch: 4), "T_max stays the reference's 100")
        XCTAssertEqual(NADDefense.referenceStudent.learningRate(epoch: 9), 0.01)
        XCTAssertEqual(FSTDefense.authorsConfig.learningRate(epoch: 5), 0.005, accuracy: 1e-9, "T_max = epochs (10)")
    }

    func testFineTuningLogsEachEpochAndChangesTheModel() throws {
        let fixture = try Fixture.load("defenses/finetuning_w4.safetensors")
        let (model, _, _) = try Fixture.goldenModel()
        let before = try model.stateDict()
        var config = FineTuningConfig(epochs: 2, batchSize: 16, learningRate: 0.01, weightDecay: 5e-4)
        config.cosineTMax = 100
        var lines: [String] = []
        let records = try FineTuning.run(model, on: fixtureImages(fixture), config: config, label: "ft") { lines.append($0) }
        XCTAssertEqual(records.map(\.epoch), [1, 2])
        XCTAssertEqual(lines.count, 2)
        XCTAssertTrue(lines[0].hasPrefix("ft: epoch 1/2 lr 0.01000 loss "), lines[0])
        XCTAssertNotEqual(try model.stateDict(), before)
        XCTAssertThrowsError(try FineTuning.run(model, on: ImageSet(pixels: [], labels: []), config: config, label: "ft") { _ in }) {
            XCTAssertTrue("\($0)".contains("no clean images"), "\($0)")
        }
    }

    func testNADRefusesModelsWithoutStagesAndFPWorksOnEveryModelOfTheZoo() throws {
        let vgg = try Architecture.vgg16.model(width: 8, on: testBackend)
        XCTAssertThrowsError(try NADDefense().repair(vgg, clean: ImageSet(pixels: [], labels: []), log: { _ in })) {
            XCTAssertTrue("\($0)".contains("layer2, layer3, layer4"), "\($0)")
        }
        for architecture in Architecture.allCases {
            let model = try architecture.model(width: 8, on: testBackend)
            let layers = try DefenseLayers.of(model)
            let images = ImageSet(pixels: [UInt8](repeating: 100, count: 2 * ImageSet.pixelsPerImage), labels: [1, 2])
            let (features, _) = try FinePruning.pooledFeatures(model, on: images, layers: layers)
            XCTAssertEqual(features.count, 2 * (try layers.linear(model).inFeatures), architecture.rawValue)
        }
    }
}
