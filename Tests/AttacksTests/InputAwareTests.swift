import Datasets
import Formats
import Foundation
import Models
import NN
import Support
import Training
import XCTest
@testable import Attacks
import TestSupport

/// The Input-aware dynamic attack: its generators against PyTorch's (a fixture of
/// scripts/fixtures/make_inputaware_fixtures.py), the diversity loss against its formula, the
/// gradient it sends into the pattern generator against finite differences, the trigger
/// information round trip, and a short real-data run.
final class InputAwareTests: XCTestCase {
    var generator = SeededGenerator(seed: 5)

    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in generator.nextGaussian() * scale } }

    func assertClose(_ a: [Float], _ b: [Float], tolerance: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, tolerance, "\(what): largest difference", file: file, line: line)
    }

    func testGeneratorsFollowAShortRunsClassifier() {
        var quick = InputAwareSettings()
        quick.fit(classifierWidth: 16, epochs: 12, milestones: [9])
        XCTAssertEqual(quick.generatorWidth, 8)
        XCTAssertEqual(quick.maskEpochs, 12, "at most the run's epochs")
        XCTAssertEqual(quick.milestonesG, [9], "the pattern generator's rate falls with the classifier's")
        let schedule = MultiStepSchedule(baseLearningRate: Float(quick.lrG), milestones: quick.milestonesG)
        XCTAssertEqual(schedule.learningRate(epoch: 8), 0.01, accuracy: 1e-9)
        XCTAssertEqual(schedule.learningRate(epoch: 9), 0.001, accuracy: 1e-9)
        XCTAssertEqual(quick.milestonesM, [10, 20], "the mask generator's pretraining keeps its own schedule")

        var long = InputAwareSettings()
        long.fit(classifierWidth: 64, epochs: 600, milestones: [100, 200, 300, 400])
        XCTAssertEqual(long.generatorWidth, 32)
        XCTAssertEqual(long.maskEpochs, 25)
        XCTAssertEqual(long.milestonesG, [200, 300, 400, 500], "past the first milestone: the reference's schedule")
    }

    func testGeneratorsMatchPyTorch() throws {
        let fixture = try SafeTensors.read(path: SharedData.packageRoot() + "/Fixtures/inputaware/generators_w4.safetensors")
        // Loading is strict: every reference state_dict name and shape must be ours.
        let attack = try InputAwareAttack(stateDicts: fixture.tensors, generatorWidth: 4, target: 0, on: testBackend, source: "fixture")
        let input = try XCTUnwrap(fixture.tensors["input"]).floats()
        for (net, name) in [(attack.patternNet, "netG"), (attack.maskNet, "netM")] {
            for (mode, suffix) in [(Mode.evaluation, "eval"), (.training, "train")] {
                let ours = try net.forward(images: input, count: 3, mode: mode)
                assertClose(ours, try XCTUnwrap(fixture.tensors["\(name)_\(suffix)"]).floats(), tolerance: 2e-4, "\(name) \(suffix)")
            }
        }
        XCTAssertEqual(Set(try attack.stateDicts().keys), Set(fixture.tensors.keys.filter { $0.hasPrefix("netG.") || $0.hasPrefix("netM.") }))
    }

    func testGeneratorGradientsMatchPyTorch() throws {
        let fixture = try SafeTensors.read(path: SharedData.packageRoot() + "/Fixtures/inputaware/generators_w4.safetensors")
        let attack = try InputAwareAttack(stateDicts: fixture.tensors, generatorWidth: 4, target: 0, on: testBackend, source: "fixture")
        let input = try XCTUnwrap(fixture.tensors["input"]).floats()
        for (net, name) in [(attack.patternNet, "netG"), (attack.maskNet, "netM")] {
            _ = try net.forward(images: input, count: 3, mode: .training)
            try net.backward(logitsGradient: try XCTUnwrap(fixture.tensors["\(name)_gy"]).floats(), weightGradients: true,
                             wantInputGradient: false)
            let parameters = Dictionary(uniqueKeysWithValues: net.parameters.map { ($0.name, $0) })
            for key in ["convblock_down_0.conv2d.weight", "convblock_middle.conv2d.weight", "convblock_up_5.conv2d.weight"] {
                let expected = try XCTUnwrap(fixture.tensors["\(name)_grad.\(key)"]).floats()
                let scale = expected.map(abs).max() ?? 1
                assertClose(try XCTUnwrap(parameters[key]).plainGradient(), expected, tolerance: 1e-3 * scale, "\(name) d\(key)")
            }
        }
    }

    func testDiversityLossMatchesItsFormula() throws {
        // Two pairs of 4-value images and 2-value outputs.
        let images1: [Float] = [1, 2, 3, 4, 0, 0, 0, 0], images2: [Float] = [1, 0, 3, 0, 1, 1, 1, 1]
        let outputs1: [Float] = [0.5, 0.1, 0.2, 0.2], outputs2: [Float] = [0.1, 0.1, 0, 0.4]
        let result = DiversityLoss.evaluate(images1: images1, images2: images2, outputs1: outputs1, outputs2: outputs2,
                                            count: 2, lambda: 2)
        // Pair 0: sqrt((0 + 4 + 0 + 16) / 4) / sqrt((0.16 + 0) / 2); pair 1: sqrt(4 / 4) / sqrt((0.04 + 0.04) / 2).
        let pair0: Double = 5.0.squareRoot() / (0.08.squareRoot() + 1e-7)
        let pair1: Double = 1 / (0.04.squareRoot() + 1e-7)
        let expected = 2 * (pair0 + pair1) / 2
        XCTAssertEqual(Double(result.loss), expected, accuracy: 1e-4)
        for i in outputs1.indices {
            let h: Float = 1e-3
            var plus = outputs1, minus = outputs1
            plus[i] += h
            minus[i] -= h
            let numeric = (DiversityLoss.evaluate(images1: images1, images2: images2, outputs1: plus, outputs2: outputs2, count: 2, lambda: 2).loss
                - DiversityLoss.evaluate(images1: images1, images2: images2, outputs1: minus, outputs2: outputs2, count: 2, lambda: 2).loss) / (2 * h)
            XCTAssertEqual(result.gradient1[i], numeric, accuracy: 2e-2 * max(abs(numeric), 1), "d loss / d output1[\(i)]")
        }
        // Identical outputs: the loss is large but finite and the gradient is zero, not NaN.
        let same = DiversityLoss.evaluate(images1: images1, images2: images2, outputs1: outputs1, outputs2: outputs1, count: 2, lambda: 1)
        XCTAssertTrue(same.loss.isFinite)
        XCTAssertEqual(same.gradient1, [Float](repeating: 0, count: 4))
    }

    func tinyAttack(rate: Double = 0.25, lambdaDiv: Double = 1) throws -> InputAwareAttack {
        var settings = InputAwareSettings()
        (settings.generatorWidth, settings.lambdaDiv) = (2, lambdaDiv)
        return try InputAwareAttack(settings: settings, target: 3, rate: rate, seed: 9, on: testBackend)
    }

    func testTrainingBatchComposesAndItsGradientMatchesFiniteDifferences() throws {
        // Without the diversity term (the composition's path alone), then with it: near
        // identical patterns make it steep (1 / distance), so its differences take a smaller step.
        for (lambdaDiv, step) in [(0.0, Float(1e-2)), (1, 1e-3)] {
            try checkTrainingBatch(lambdaDiv: lambdaDiv, step: step)
        }
    }

    func checkTrainingBatch(lambdaDiv: Double, step h: Float) throws {
        let attack = try tinyAttack(lambdaDiv: lambdaDiv)
        let size = 3 * 32 * 32
        let batch = Batch(images: randoms(8 * size), labels: (0..<8).map { Int32($0) })
        let partners = Batch(images: randoms(8 * size), labels: (0..<8).map { Int32($0) })
        var stream = SeededGenerator(seed: 2)
        let out = try attack.trainingBatch(batch, partners: partners, generator: &stream)
        // rate 0.25 of 8: two backdoor images relabelled, two cross images, four clean ones.
        XCTAssertEqual(out.labels, [3, 3, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(Array(out.images[(4 * size)..<(8 * size)]), Array(batch.images[(4 * size)..<(8 * size)]))
        XCTAssertNotEqual(Array(out.images[0..<size]), Array(batch.images[0..<size]))
        // Cross image 2 carries partner 2's pattern and mask.
        let (patterns, masks) = try attack.generate(Array(batch.images[0..<2 * size]) + Array(partners.images[2 * size..<4 * size]),
                                                    count: 4, mode: .training)
        let expected = InputAwareAttack.compose(Array(batch.images[0..<4 * size]), patterns: patterns, masks: masks)
        assertClose(Array(out.images[0..<4 * size]), expected, tolerance: 1e-5, "composition")

        // L = <g, composed> + diversity: backpropagate's netG gradients against differences.
        let g = randoms(8 * size, scale: 0.01)
        func loss() throws -> Double {
            var s = SeededGenerator(seed: 2)
            let composed = try attack.trainingBatch(batch, partners: partners, generator: &s)
            return zip(composed.images, g).reduce(0) { $0 + Double($1.0) * Double($1.1) } + Double(attack.lastDiversityLoss)
        }
        _ = try loss()
        XCTAssertTrue(try attack.backpropagate(inputGradient: g))
        // The last block's weights (the whole chain into them is the composition and the
        // diversity term; deeper layers' backward is checked against PyTorch above, and their
        // differences at this width cross too many ReLU and max-pool kinks).
        let last = Array(attack.patternNet.parameters.suffix(4))
        for parameter in [last[0], last[2], last[3]] {
            let analytic = try parameter.plainGradient()
            let values = try parameter.plainValues()
            let scale = max(analytic.map(abs).max() ?? 0, 1e-4)
            for i in stride(from: 0, to: values.count, by: max(values.count / 5, 1)) {
                var v = values
                v[i] += h
                try parameter.setPlainValues(v)
                let plus = try loss()
                v[i] -= 2 * h
                try parameter.setPlainValues(v)
                let minus = try loss()
                try parameter.setPlainValues(values)
                XCTAssertEqual(analytic[i], Float((plus - minus) / Double(2 * h)), accuracy: 5e-2 * scale,
                               "lambda_div \(lambdaDiv): \(parameter.name)[\(i)]")
            }
        }
    }

    func testTriggerInformationRoundTrip() throws {
        let attack = try tinyAttack()
        let folder = NSTemporaryDirectory() + "inputaware-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let info = try AttackSettings(poisonType: .inputaware, target: 3, rate: 0.25).triggerInfo(trained: attack)
        try info.write(path: folder + "/t.safetensors")
        XCTAssertThrowsError(try TriggerInfo.read(path: folder + "/t.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("needs a compute backend"), "\(error)")
        }
        let read = try TriggerInfo.read(path: folder + "/t.safetensors", backend: testBackend)
        XCTAssertEqual(read.target, 3)
        XCTAssertEqual(read.poisonType, "inputaware")
        guard case let .inputAware(loaded) = read.trigger else { return XCTFail("not an input-aware trigger") }
        XCTAssertEqual(try loaded.stateDicts(), try attack.stateDicts())
        XCTAssertEqual(read.notes["poison_rate"], "0.25")
        let pixels = (0..<4 * 3072).map { _ in UInt8(generator.next() % 256) }
        let images = ImageSet(pixels: pixels, labels: [0, 1, 2, 3])
        var a = images, b = images
        attack.apply(to: &a, at: [0, 1, 2, 3])
        loaded.apply(to: &b, at: [0, 1, 2, 3])
        XCTAssertEqual(a.pixels, b.pixels)
        XCTAssertNotEqual(a.pixels, images.pixels)
    }

    func testEpochDrawMarksBackdoorImagesAndChangesCrossOnes() throws {
        let attack = try tinyAttack(rate: 0.25)
        let pixels = (0..<20 * 3072).map { _ in UInt8(generator.next() % 256) }
        let images = ImageSet(pixels: pixels, labels: (0..<20).map { $0 % 10 })
        let training = InputAwareTraining(attack, trainSet: images, batchSize: 8, augment: false, seed: 4)
        let draw = try training.epochDraw()
        // Batches of 8, 8, 4: int(0.25 x size) backdoor images each (2, 2, 1), as many cross images.
        XCTAssertEqual(draw.poisonedIndices.count, 5)
        let loader = BatchLoader(images: images, batchSize: 8, shuffle: true, augment: false, seed: 4)
        let order = loader.order(epoch: 0)
        var changed = 0
        for number in 0..<3 {
            let indices = loader.indices(batch: number, order: order)
            let triggered = indices.count / 4
            for (row, index) in indices.enumerated() {
                let same = draw.images.image(index) == images.image(index)
                if row < triggered {
                    XCTAssertTrue(draw.isPoisoned[index])
                    XCTAssertEqual(draw.images.labels[index], 3)
                } else {
                    XCTAssertFalse(draw.isPoisoned[index])
                    XCTAssertEqual(draw.images.labels[index], images.labels[index], "cross and clean images keep their labels")
                    if row >= 2 * triggered { XCTAssertTrue(same, "clean image \(index) untouched") }
                }
                if !same { changed += 1 }
            }
        }
        XCTAssertEqual(changed, 10, "the backdoor and the cross images carry a generated trigger")
    }

    /// A run stopped after epoch 1 of 2 and resumed ends as an uninterrupted one: the resume
    /// state carries netG, netM and their Adam states (netM's pretraining is not redone).
    func testResumedRunContinuesIdentically() throws {
        guard let data = AttackTrainingTests.data else { throw XCTSkip("shared CIFAR-10 not present") }
        let train = data.attacker.subset(Array(0..<128)), test = data.test.subset(Array(0..<40))
        var config = TrainingConfig()
        (config.epochs, config.learningRate, config.milestones, config.width, config.augment, config.batchSize) = (2, 0.05, [1], 4, true, 32)
        var settings = AttackSettings(poisonType: .inputaware, target: 0, rate: 0.25, seed: 3)
        (settings.inputAware.generatorWidth, settings.inputAware.maskEpochs, settings.inputAware.milestonesG) = (2, 1, [1])
        struct Stop: Error {}
        func run(_ folder: String, stopAfter: Int? = nil, resume: Bool = false) throws -> ([EpochRecord], InputAwareTraining) {
            let trainer = try Trainer(config: config, trainSet: train, cleanTest: test, poisonTest: nil, outputDirectory: folder,
                                      backend: testBackend)
            trainer.quiet = true
            let joint = try XCTUnwrap(try settings.inputAwareTraining(trainSet: train, batchSize: config.batchSize,
                                                                     augment: config.augment, on: testBackend))
            trainer.jointAttack = joint
            trainer.onEpoch = { if $0.epoch == stopAfter { throw Stop() } }
            return (try trainer.run(resume: resume), joint)
        }
        let straight = NSTemporaryDirectory() + "inputaware-straight-\(UUID().uuidString)"
        let resumed = NSTemporaryDirectory() + "inputaware-resumed-\(UUID().uuidString)"
        defer { for folder in [straight, resumed] { try? FileManager.default.removeItem(atPath: folder) } }
        let (expected, straightJoint) = try run(straight)
        XCTAssertThrowsError(try run(resumed, stopAfter: 1)) { XCTAssertTrue($0 is Stop, "\($0)") }
        let state = try SafeTensors.read(path: resumed + "/resume_state.safetensors")
        XCTAssertEqual(state.metadata["completed_epochs"], "1")
        XCTAssertNotNil(state.tensors["joint.netM.convblock_down_0.conv2d.weight"])
        XCTAssertEqual(try state.tensors["joint.adamG.step.convblock_down_0.conv2d.weight"]?.int64s(), [4], "4 batches of 32 stepped netG")
        XCTAssertEqual(try state.tensors["joint.adamM.step.convblock_down_0.conv2d.weight"]?.int64s(), [4], "one mask epoch")

        let (records, resumedJoint) = try run(resumed, resume: true)
        XCTAssertEqual(records.map(\.trainLoss), expected.map(\.trainLoss))
        XCTAssertEqual(records.map(\.poisonAcc), expected.map(\.poisonAcc))
        XCTAssertEqual(records.map(\.cleanAcc), expected.map(\.cleanAcc))
        // The names of differing tensors, not their bytes, on failure.
        func differing(_ a: [String: HostTensor], _ b: [String: HostTensor]) -> [String] {
            Set(a.keys).union(b.keys).filter { a[$0] != b[$0] }.sorted()
        }
        XCTAssertEqual(differing(try SafeTensors.read(path: resumed + "/model_last.safetensors").tensors,
                                 try SafeTensors.read(path: straight + "/model_last.safetensors").tensors), [], "same classifier")
        let state1 = try resumedJoint.trainingState(), state2 = try straightJoint.trainingState()
        XCTAssertEqual(state1.count, state2.count)
        XCTAssertEqual(differing(state1, state2), [], "same generators and Adam states")
    }

    /// A width-8 ResNet-18 trained with the generators (width 8, one mask epoch) on the first
    /// 2,000 attacker images for 3 epochs; the ASR of its own generated triggers against the
    /// committed clean width-8 model's on the same triggered images.
    func testShortRealDataRunPlantsTheBackdoor() throws {
        guard let data = AttackTrainingTests.data else { throw XCTSkip("shared CIFAR-10 not present") }
        let train = data.attacker.subset(Array(0..<2_000)), test = data.test.subset(Array(0..<500))
        var config = TrainingConfig()
        (config.epochs, config.learningRate, config.milestones, config.width, config.augment, config.batchSize) = (3, 0.05, [], 8, false, 64)
        var settings = AttackSettings(poisonType: .inputaware, target: 0, rate: 0.1, seed: 0)
        (settings.inputAware.generatorWidth, settings.inputAware.maskEpochs) = (8, 1)
        let folder = NSTemporaryDirectory() + "inputaware-run-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let trainer = try Trainer(config: config, trainSet: train, cleanTest: test, poisonTest: nil, outputDirectory: folder,
                                  backend: testBackend)
        trainer.quiet = true
        let joint = try XCTUnwrap(try settings.inputAwareTraining(trainSet: train, batchSize: config.batchSize, augment: false,
                                                                 on: testBackend))
        trainer.jointAttack = joint
        let start = Date()
        let records = try trainer.run()
        let poisonTest = try joint.poisonTest(from: test)
        XCTAssertEqual(poisonTest.count, test.labels.filter { $0 != 0 }.count)
        let (clean, _) = try Checkpoint.load(SharedData.packageRoot() + "/Fixtures/defenses/benign_w8/model.safetensors", on: testBackend)
        let asr = try Evaluation.evaluate(trainer.model, on: poisonTest).accuracy
        let cleanASR = try Evaluation.evaluate(clean, on: poisonTest).accuracy
        let accuracy = try Evaluation.evaluate(trainer.model, on: test).accuracy
        print(String(format: "inputaware: ASR %.1f%% (clean model %.1f%%), clean accuracy %.1f%%, %.0f s", 100 * asr, 100 * cleanASR,
                     100 * accuracy, Date().timeIntervalSince(start)))
        XCTAssertEqual(records.last?.poisonAcc ?? -1, asr, accuracy: 1e-9, "the trainer's ASR is on the generators' test set")
        // Three epochs on 2,000 images amplify the CPU's and the timed kernels' rounding: ASR 77.4% on
        // an AVX2 machine, 44.0% on a Zen 4 (AVX-512) one, against 5% for the clean model.
        XCTAssertGreaterThan(asr, cleanASR + 0.3, "the backdoor takes hold")
        XCTAssertGreaterThan(accuracy, 0.15, "the model still learns the task")
    }
}
