import Datasets
import NN
import Support
import XCTest
import Models
@testable import Attacks
import TestSupport

final class CleanLabelPGDTests: XCTestCase {
    static let normalization = Normalization.cifar10

    /// `count` seeded random images, labelled with the classifier's own clean predictions so
    /// every image starts out classified correctly.
    static func correctlyClassified(_ classifier: LinearClassifier, count: Int, seed: UInt64) -> ImageSet {
        var generator = SeededGenerator(seed: seed, stream: "pgd test images")
        let pixels = (0..<count * ImageSet.pixelsPerImage).map { _ in UInt8(truncatingIfNeeded: generator.next() >> 56) }
        let unlabelled = ImageSet(pixels: pixels, labels: [Int](repeating: 0, count: count))
        let batch = Augmentation.testBatch(unlabelled, indices: Array(0..<count))
        return ImageSet(pixels: pixels, labels: classifier.predictions(batch.images, count: count))
    }

    func testGradientOfTheTestClassifierMatchesFiniteDifferences() throws {
        let classifier = LinearClassifier(seed: 1, scale: 0.01)
        var generator = SeededGenerator(seed: 2)
        var input = (0..<2 * LinearClassifier.inputSize).map { _ in generator.nextGaussian() }
        let labels: [Int32] = [3, 7]
        let analytic = try classifier.lossAndInputGradient(images: input, labels: labels).inputGradient
        for index in [0, 1000, 3071, 3072 + 5, 2 * 3072 - 1] {
            let h: Float = 1e-2
            let saved = input[index]
            input[index] = saved + h
            let up = try classifier.lossAndInputGradient(images: input, labels: labels).losses.reduce(0, +)
            input[index] = saved - h
            let down = try classifier.lossAndInputGradient(images: input, labels: labels).losses.reduce(0, +)
            input[index] = saved
            XCTAssertEqual((up - down) / (2 * h), analytic[index], accuracy: 2e-3, "coordinate \(index)")
        }
    }

    func testPerturbationStaysWithinEpsilonAfterQuantisationAndLossRises() throws {
        let classifier = LinearClassifier(seed: 3, scale: 0.0005)
        let images = Self.correctlyClassified(classifier, count: 20, seed: 4)
        let pgd = CleanLabelPGD(iterations: 12, restarts: 1, batchSize: 8)
        let (perturbed, losses) = try pgd.perturb(images, classifier: classifier, seed: 5)

        XCTAssertEqual(perturbed.labels, images.labels)
        let deviations = zip(perturbed.pixels, images.pixels).map { abs(Int($0) - Int($1)) }
        XCTAssertLessThanOrEqual(deviations.max()!, 16, "||delta||_inf <= 16/255 after quantisation")
        XCTAssertEqual(deviations.max()!, 16, "PGD reaches the boundary of the ball")

        let cleanBatch = Augmentation.testBatch(images, indices: Array(0..<images.count))
        let cleanLosses = CleanLabelPGD.losses(classifier.forward(cleanBatch.images, count: images.count),
                                               labels: images.labels.map(Int32.init), classes: 10)
        let perturbedBatch = Augmentation.testBatch(perturbed, indices: Array(0..<images.count))
        let quantisedLosses = CleanLabelPGD.losses(classifier.forward(perturbedBatch.images, count: images.count),
                                                   labels: images.labels.map(Int32.init), classes: 10)
        for i in 0..<images.count {
            XCTAssertGreaterThan(losses[i], cleanLosses[i], "image \(i): loss rises")
            XCTAssertGreaterThan(quantisedLosses[i], cleanLosses[i], "image \(i): loss rises after quantisation")
        }
        // Every image ends misclassified (the model is linear and epsilon is large for it).
        XCTAssertEqual(zip(classifier.predictions(perturbedBatch.images, count: images.count), images.labels)
            .filter { $0 == $1 }.count, 0)
    }

    /// Follows every image through the recorded model calls of one batch.
    func testOnlyCorrectlyClassifiedImagesMoveAndTheBestAttemptIsKept() throws {
        let classifier = LinearClassifier(seed: 6, scale: 0.0003)
        let images = Self.correctlyClassified(classifier, count: 16, seed: 7)
        let pgd = CleanLabelPGD(stepSize: 1 / 255, iterations: 6, restarts: 2, batchSize: 16)
        let clean = CleanLabelPGD.pixelsNCHW(images, indices: Array(0..<16))
        var generator = SeededGenerator(seed: 8)
        let outcome = try pgd.attack(clean: clean, labels: images.labels.map(Int32.init), classifier: classifier,
                                     generator: &generator, progress: nil)

        let size = LinearClassifier.inputSize
        let mean = Self.normalization.mean, std = Self.normalization.std
        func pixelSpace(_ normalised: ArraySlice<Float>) -> [Float] {
            normalised.enumerated().map { offset, value in value * std[offset / 1024] + mean[offset / 1024] }
        }
        // Which clean image a recorded row is: the one within epsilon of it.
        func identify(_ row: [Float]) -> Int {
            let matches = (0..<16).filter { image in
                zip(row, clean[image * size..<(image + 1) * size]).allSatisfy { abs($0 - $1) <= pgd.epsilon + 1e-5 }
            }
            XCTAssertEqual(matches.count, 1)
            return matches.first ?? -1
        }

        XCTAssertEqual(classifier.logitsCalls.count, 3, "one final evaluation per attempt")
        var call = 0
        var frozenImages = 0, movingSteps = 0
        for attempt in 0..<3 {
            var active = Set(0..<16)
            var lastSeen = [Int: [Float]]()
            var lastCorrect = [Int: Bool]()
            // Gradient calls of this attempt: until the set of images sent stops (a new attempt starts with all 16).
            var steps = 0
            while call < classifier.gradientCalls.count, steps < pgd.iterations {
                let record = classifier.gradientCalls[call]
                if steps > 0 && record.labels.count == 16 && active.count < 16 { break }
                var sent = Set<Int>()
                for row in 0..<record.labels.count {
                    let values = pixelSpace(record.images[row * size..<(row + 1) * size])
                    let image = identify(values)
                    sent.insert(image)
                    XCTAssertTrue(active.contains(image), "attempt \(attempt): image \(image) was sent after being misclassified")
                    if let previous = lastSeen[image] {
                        // One step moves each pixel by at most the step size.
                        let change = zip(values, previous).map { abs($0 - $1) }.max()!
                        XCTAssertLessThanOrEqual(change, pgd.stepSize + 1e-5)
                        movingSteps += 1
                    }
                    lastSeen[image] = values
                    let logits = record.logits[row * 10..<(row + 1) * 10]
                    let predicted = logits.indices.max { logits[$0] < logits[$1] }! - logits.startIndex
                    lastCorrect[image] = predicted == Int(record.labels[row])
                }
                XCTAssertEqual(sent, active)
                active = Set(active.filter { lastCorrect[$0] == true })
                call += 1
                steps += 1
            }
            // The final evaluation: frozen images are exactly where they were found misclassified.
            let final = classifier.logitsCalls[attempt]
            for image in 0..<16 {
                let values = pixelSpace(final[image * size..<(image + 1) * size])
                let last = try XCTUnwrap(lastSeen[image])
                let change = zip(values, last).map { abs($0 - $1) }.max()!
                if lastCorrect[image] == false {
                    frozenImages += 1
                    XCTAssertLessThanOrEqual(change, 1e-5, "attempt \(attempt): misclassified image \(image) moved")
                }
                // The attempt's loss for this image is the loss of this final input.
                let loss = CleanLabelPGD.losses(classifier.forward(Array(final[image * size..<(image + 1) * size]), count: 1),
                                                labels: [Int32(images.labels[image])], classes: 10)[0]
                XCTAssertEqual(outcome.attemptLosses[attempt][image], loss, accuracy: 1e-4)
            }
        }
        XCTAssertEqual(call, classifier.gradientCalls.count, "every gradient call belongs to an attempt")
        XCTAssertGreaterThan(frozenImages, 0, "some images were found misclassified and frozen")
        XCTAssertGreaterThan(movingSteps, 16, "images kept moving while correct")

        // Across attempts each image keeps the perturbation with the largest loss.
        var attemptsUsed = Set<Int>()
        for image in 0..<16 {
            let losses = outcome.attemptLosses.map { $0[image] }
            let best = losses.indices.max { losses[$0] < losses[$1] }!
            XCTAssertEqual(outcome.bestAttempt[image], best)
            XCTAssertEqual(outcome.bestLoss[image], losses[best])
            attemptsUsed.insert(best)
            let kept = outcome.best[image * size..<(image + 1) * size]
            let fromAttempt = pixelSpace(classifier.logitsCalls[best][image * size..<(image + 1) * size])
            XCTAssertLessThanOrEqual(zip(kept, fromAttempt).map { abs($0 - $1) }.max()!, 1e-5)
        }
        XCTAssertGreaterThan(attemptsUsed.count, 1, "different images keep different attempts")
    }

    func testMisclassifiedImagesNeverMove() throws {
        // Labels that the model gets wrong from the start, far from any decision boundary: no
        // gradient step is taken, so each image stays at its random start.
        let classifier = LinearClassifier(seed: 9, scale: 0.0005)
        let correct = Self.correctlyClassified(classifier, count: 6, seed: 10)
        let wrong = ImageSet(pixels: correct.pixels, labels: correct.labels.map { ($0 + 5) % 10 })
        let pgd = CleanLabelPGD(epsilon: 1 / 255, iterations: 5, restarts: 0, batchSize: 6)
        let (perturbed, _) = try pgd.perturb(wrong, classifier: classifier, seed: 11)
        XCTAssertEqual(classifier.gradientCalls.count, 1, "after the first call no image is still correct")
        XCTAssertLessThanOrEqual(zip(perturbed.pixels, wrong.pixels).map { abs(Int($0) - Int($1)) }.max()!, 1)
    }

    func testQuantisationRoundsHalfUp() {
        XCTAssertEqual(CleanLabelPGD.quantise(0.5), 128)  // 127.5 -> 128
        XCTAssertEqual(CleanLabelPGD.quantise(0.25), 64)  // 63.75 -> 64
        XCTAssertEqual(CleanLabelPGD.quantise(0.75), 191)  // 191.25 -> 191
        XCTAssertEqual(CleanLabelPGD.quantise(0), 0)
        XCTAssertEqual(CleanLabelPGD.quantise(1), 255)
        XCTAssertEqual(CleanLabelPGD.quantise(-0.1), 0)
        XCTAssertEqual(CleanLabelPGD.quantise(1.1), 255)
    }

    func testBadSettingsNameTheValue() {
        XCTAssertThrowsError(try CleanLabelPGD(epsilon: 0).validate()) { error in
            XCTAssertTrue("\(error)".hasPrefix("PGD epsilon 0.0 is not allowed"), "\(error)")
        }
        XCTAssertThrowsError(try CleanLabelPGD(iterations: 0).validate())
        XCTAssertThrowsError(try CleanLabelPGD(restarts: -1).validate())
        XCTAssertThrowsError(try CleanLabelPGD(stepSize: -1).validate())
        XCTAssertThrowsError(try CleanLabelPGD(batchSize: 0).validate())
    }

    // MARK: The whole attack

    func testCleanLabelPoisonsTargetImagesKeepsLabelsAndAddsTheTrigger() throws {
        let classifier = LinearClassifier(seed: 12, scale: 0.0005)
        let images = Self.correctlyClassified(classifier, count: 40, seed: 13)
        let target = images.labels[0]
        let targetImages = images.labels.indices.filter { images.labels[$0] == target }
        let trigger = try Trigger.checkerboard4Corner()
        let poisoned = try CleanLabelAttack.poison(images, classifier: classifier, target: target, rate: 0.05,
                                                   trigger: trigger, pgd: CleanLabelPGD(iterations: 4, batchSize: 16), seed: 14)
        let chosen = poisoned.poisonedIndices
        // round(0.05 x 40 images) = 2, a share of the whole set drawn from the target class.
        XCTAssertGreaterThan(targetImages.count, 2)
        XCTAssertEqual(chosen.count, 2)
        // At 0.5 the share (20) exceeds the target class: all of it.
        XCTAssertEqual(try CleanLabelAttack.chooseImages(labels: images.labels, target: target, rate: 0.5, seed: 14), targetImages)
        XCTAssertTrue(chosen.allSatisfy { images.labels[$0] == target })
        XCTAssertEqual(poisoned.images.labels, images.labels, "clean-label: labels unchanged")
        XCTAssertEqual(try CleanLabelAttack.chooseImages(labels: images.labels, target: target, rate: 0.05, seed: 14), chosen)
        for index in 0..<images.count {
            let before = Array(images.image(index)), after = Array(poisoned.images.image(index))
            guard chosen.contains(index) else {
                XCTAssertEqual(after, before)
                continue
            }
            for row in 0..<32 {
                for column in 0..<32 {
                    for channel in 0..<3 {
                        let offset = (row * 32 + column) * 3 + channel
                        if trigger.mask[row * 32 + column] == 1 {
                            XCTAssertEqual(Double(after[offset]), trigger.pattern[row * 32 + column])
                        } else {
                            XCTAssertLessThanOrEqual(abs(Int(after[offset]) - Int(before[offset])), 16)
                        }
                    }
                }
            }
            XCTAssertNotEqual(after, before)
        }
    }
}

/// PGD against the project's ResNet-18 (a narrow one, so the debug build stays quick).
final class CleanLabelPGDResNetTests: XCTestCase {
    func testPGDRaisesTheLossOfAResNetWithinEpsilon() throws {
        let model = try ResNet18.model(width: 2, seed: 3, on: testBackend)
        var generator = SeededGenerator(seed: 4)
        let pixels = (0..<4 * ImageSet.pixelsPerImage).map { _ in UInt8(truncatingIfNeeded: generator.next() >> 56) }
        let unlabelled = ImageSet(pixels: pixels, labels: [0, 0, 0, 0])
        let cleanLogits = try model.logits(images: Augmentation.testBatch(unlabelled, indices: [0, 1, 2, 3]).images, count: 4)
        let predicted = (0..<4).map { CleanLabelPGD.argmax(cleanLogits[$0 * 10..<($0 + 1) * 10]) }
        let images = ImageSet(pixels: pixels, labels: predicted)

        let pgd = CleanLabelPGD(stepSize: 4 / 255, iterations: 3, restarts: 0, batchSize: 4)
        let (perturbed, losses) = try pgd.perturb(images, classifier: model, seed: 5)
        XCTAssertLessThanOrEqual(zip(perturbed.pixels, images.pixels).map { abs(Int($0) - Int($1)) }.max()!, 16)
        let before = CleanLabelPGD.losses(cleanLogits, labels: predicted.map(Int32.init), classes: 10)
        let afterLogits = try model.logits(images: Augmentation.testBatch(perturbed, indices: [0, 1, 2, 3]).images, count: 4)
        let after = CleanLabelPGD.losses(afterLogits, labels: predicted.map(Int32.init), classes: 10)
        XCTAssertGreaterThan(losses.reduce(0, +), before.reduce(0, +))
        XCTAssertGreaterThan(after.reduce(0, +), before.reduce(0, +))
    }
}
