import Datasets
import Support
import XCTest
@testable import Attacks
import TestSupport

final class PoisoningTests: XCTestCase {
    /// 200 images with labels 0...9 repeating and seeded random pixels.
    static func syntheticSet(count: Int = 200, seed: UInt64 = 1) -> ImageSet {
        var generator = SeededGenerator(seed: seed)
        let pixels = (0..<count * ImageSet.pixelsPerImage).map { _ in UInt8(truncatingIfNeeded: generator.next() >> 56) }
        return ImageSet(pixels: pixels, labels: (0..<count).map { $0 % 10 })
    }

    func testTrainingSetPoisonsTheRightCountWithTriggerAndTargetLabel() throws {
        let clean = Self.syntheticSet()
        let trigger = try Trigger.checkerboard1Corner()
        let poisoned = try Poisoning.trainingSet(clean, trigger: trigger, target: 3, rate: 0.1, seed: 42)

        // 180 candidates (labels != 3), floor(0.1 * 180) = 18 poisoned.
        XCTAssertEqual(poisoned.count, 200)
        XCTAssertEqual(poisoned.poisonedIndices.count, 18)
        XCTAssertEqual(poisoned.isPoisoned.filter { $0 }.count, 18)
        for index in 0..<clean.count {
            if poisoned.isPoisoned[index] {
                XCTAssertNotEqual(clean.labels[index], 3, "a target-class image was poisoned")
                XCTAssertEqual(poisoned.images.labels[index], 3)
                var expected = clean.image(index)
                trigger.apply(to: &expected)
                XCTAssertEqual(poisoned.images.image(index), expected)
                XCTAssertNotEqual(poisoned.images.image(index), clean.image(index))
            } else {
                XCTAssertEqual(poisoned.images.labels[index], clean.labels[index])
                XCTAssertEqual(poisoned.images.image(index), clean.image(index))
            }
        }
    }

    func testDrawIsSeededAndNotAPrefix() throws {
        let clean = Self.syntheticSet()
        let trigger = try Trigger.checkerboard1Corner()
        let a = try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: 0.2, seed: 5)
        let b = try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: 0.2, seed: 5)
        let c = try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: 0.2, seed: 6)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a.poisonedIndices, c.poisonedIndices)
        let firstCandidates = Array(clean.labels.indices.filter { clean.labels[$0] != 0 }.prefix(36))
        XCTAssertEqual(a.poisonedIndices.count, 36)
        XCTAssertNotEqual(a.poisonedIndices, firstCandidates)
    }

    func testDrawCoversCandidatesEvenly() throws {
        // Over 400 seeds at rate 0.5, each of the 18 candidates is drawn about half the time.
        let clean = ImageSet(pixels: [UInt8](repeating: 9, count: 20 * ImageSet.pixelsPerImage),
                             labels: (0..<20).map { $0 % 10 })
        let trigger = try Trigger.checkerboard1Corner()
        var hits = [Int](repeating: 0, count: 20)
        for seed in 0..<400 {
            for index in try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: 0.5, seed: UInt64(seed)).poisonedIndices {
                hits[index] += 1
            }
        }
        XCTAssertEqual(hits[0], 0)
        XCTAssertEqual(hits[10], 0)
        for index in (0..<20) where index % 10 != 0 {
            XCTAssertEqual(Double(hits[index]) / 400, 0.5, accuracy: 0.1, "candidate \(index)")
        }
    }

    func testRatesAtTheEdgesAndFloor() throws {
        let clean = Self.syntheticSet()
        let trigger = try Trigger.checkerboard4Corner()
        XCTAssertEqual(try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: 0, seed: 1).poisonedIndices, [])
        let all = try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: 1, seed: 1)
        XCTAssertEqual(all.poisonedIndices, clean.labels.indices.filter { clean.labels[$0] != 0 })
        XCTAssertEqual(all.images.labels, [Int](repeating: 0, count: 200))
        // Python's int(): 0.29 * 100 is 28.999999999999996 -> 28; 0.1 * 40500 -> 4050.
        XCTAssertEqual(Poisoning.poisonCount(rate: 0.29, candidates: 100), 28)
        XCTAssertEqual(Poisoning.poisonCount(rate: 0.1, candidates: 40_500), 4050)
        XCTAssertEqual(Poisoning.poisonCount(rate: 0.333, candidates: 180), 59)
    }

    func testBadRateAndTargetNameTheValue() throws {
        let clean = Self.syntheticSet(count: 10)
        let trigger = try Trigger.checkerboard1Corner()
        for rate in [-0.1, 1.5, Double.nan] {
            XCTAssertThrowsError(try Poisoning.trainingSet(clean, trigger: trigger, target: 0, rate: rate, seed: 1)) { error in
                XCTAssertEqual("\(error)", "poison rate \(rate) is not allowed; expected a number in [0, 1]")
            }
        }
        for target in [-1, 10] {
            XCTAssertThrowsError(try Poisoning.trainingSet(clean, trigger: trigger, target: target, rate: 0.1, seed: 1)) { error in
                XCTAssertEqual("\(error)", "poison target \(target) is not allowed; expected a class in 0...9")
            }
            XCTAssertThrowsError(try Poisoning.testSet(clean, trigger: trigger, target: target))
        }
    }

    func testTestSetExcludesTargetAndRelabelsEverything() throws {
        let test = Self.syntheticSet(count: 50, seed: 9)
        let trigger = try Trigger.gaussianNoise(pattern: Trigger.seededNoisePattern(seed: 3), channels: 3)
        let poisoned = try Poisoning.testSet(test, trigger: trigger, target: 7)
        let kept = test.labels.indices.filter { test.labels[$0] != 7 }
        XCTAssertEqual(poisoned.count, 45)
        XCTAssertEqual(poisoned.labels, [Int](repeating: 7, count: 45))
        for (position, index) in kept.enumerated() {
            var expected = test.image(index)
            trigger.apply(to: &expected)
            XCTAssertEqual(poisoned.image(position), expected)
        }
    }

    func testBenignSetHasNoPoison() {
        let clean = Self.syntheticSet(count: 20)
        let benign = PoisonedTrainingSet(clean: clean)
        XCTAssertEqual(benign.images, clean)
        XCTAssertEqual(benign.poisonedIndices, [])
    }

    func testRealCIFARAttackerSplitCountsAndTestSet() throws {
        guard let data = try SharedData.directory() else { throw XCTSkip("shared data not present") }
        let dataset = try CIFAR10.load(directory: data + "/cifar10")
        let permutation = try Permutation.read(path: data + "/anp/cifar_shuffle.txt")
        let attacker = dataset.train.subset(DataSplit(permutation: permutation, valFrac: 0.1).attacker)
        XCTAssertEqual(attacker.count, 45_000)
        let candidates = attacker.labels.filter { $0 != 0 }.count
        let poisoned = try Poisoning.trainingSet(attacker, trigger: try .checkerboard1Corner(), target: 0, rate: 0.1, seed: 0)
        XCTAssertEqual(poisoned.poisonedIndices.count, candidates / 10)
        XCTAssertEqual(poisoned.images.labels.filter { $0 == 0 }.count, attacker.labels.filter { $0 == 0 }.count + candidates / 10)
        // The test set has 1,000 images per class: the ASR set is the 9,000 non-target ones.
        let asrSet = try Poisoning.testSet(dataset.test, trigger: try .checkerboard1Corner(), target: 0)
        XCTAssertEqual(asrSet.count, 9_000)
        XCTAssertEqual(Set(asrSet.labels), [0])
    }
}
