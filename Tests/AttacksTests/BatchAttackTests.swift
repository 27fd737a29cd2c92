import Datasets
import Foundation
import Support
import XCTest
@testable import Attacks

/// What --poison-rate selects per attack, and WaNet's and BPP's per-batch poisoning.
final class BatchAttackTests: XCTestCase {
    /// 100 images, labels 0-9 ten times over (image i has label i % 10), random pixels.
    let set = PoisoningTests.syntheticSet(count: 100)

    func testPoisonRateMeaningPerSelection() throws {
        func count(_ selection: Poisoning.Selection, _ rate: Double) throws -> [Int] {
            try Poisoning.chooseImages(labels: set.labels, target: 3, rate: rate, selection: selection, seed: 1, stream: "t")
        }
        // BadNets/Blend: floor(rate x 90 non-target images), none of the target.
        XCTAssertEqual(try count(.nonTarget, 0.15).count, 13)
        XCTAssertFalse(try count(.nonTarget, 0.15).contains { set.labels[$0] == 3 })
        // FTrojan: round(rate x all 100), any class.
        XCTAssertEqual(try count(.wholeSet, 0.155).count, 16)
        XCTAssertEqual(try count(.wholeSet, 1).count, 100)
        // Clean-label: round(rate x 100), capped by the ten target images, only those.
        XCTAssertEqual(try count(.targetClass, 0.05).count, 5)
        XCTAssertEqual(try count(.targetClass, 0.1), Array(stride(from: 3, to: 100, by: 10)), "0.1: the whole target class")
        XCTAssertEqual(try count(.targetClass, 0.5).count, 10)
        // Python's round: half to even.
        XCTAssertEqual(try count(.wholeSet, 0.125).count, 12)
    }

    func testSIGPoisonsTargetImagesKeepingLabelsAndFTrojanRelabels() throws {
        let sig = AttackSettings(poisonType: .sig, target: 3, rate: 0.05, seed: 2)
        let sigSet = try sig.trainingSet(attackerSet: set, triggerInfo: try sig.triggerInfo().info)
        XCTAssertEqual(sigSet.poisonedIndices.count, 5)
        XCTAssertTrue(sigSet.poisonedIndices.allSatisfy { set.labels[$0] == 3 })
        XCTAssertEqual(sigSet.images.labels, set.labels)
        var expected = set
        try SIGTrigger().apply(to: &expected, at: sigSet.poisonedIndices)
        XCTAssertEqual(sigSet.images.pixels, expected.pixels)

        let ftrojan = AttackSettings(poisonType: .ftrojan, target: 3, rate: 0.2, seed: 2)
        let info = try XCTUnwrap(try ftrojan.triggerInfo().info)
        XCTAssertEqual(info.notes["poison_rate_meaning"], PoisonType.ftrojan.rateMeaning)
        let ftSet = try ftrojan.trainingSet(attackerSet: set, triggerInfo: info)
        XCTAssertEqual(ftSet.poisonedIndices.count, 20)
        XCTAssertTrue(ftSet.poisonedIndices.allSatisfy { ftSet.images.labels[$0] == 3 })
        XCTAssertTrue(ftSet.poisonedIndices.contains { set.labels[$0] != 3 })
    }

    func testWaNetBatchHasTriggeredNoiseModeAndCleanRows() throws {
        let warp = try WaNetWarp.random(seed: 5)
        let attack = try BatchAttack(method: .wanet(warp, crossRatio: 2), target: 7, rate: 0.1)
        let indices = Array(0..<64)
        var generator = SeededGenerator(seed: 1, stream: "batch")
        let batch = attack.poisoned(set, indices: indices, generator: &generator)
        // int(0.1 x 64) = 6 triggered, int(6 x 2) = 12 noise-mode, the rest clean.
        XCTAssertEqual(batch.triggered, (0..<64).map { $0 < 6 })
        XCTAssertEqual(batch.labels, (0..<64).map { $0 < 6 ? 7 : set.labels[$0] })
        let size = ImageSet.pixelsPerImage
        for row in [0, 5] {
            XCTAssertEqual(Array(batch.planes[row * size..<(row + 1) * size]),
                           WaNetWarp.sample(ImagePlanes.planes(set.image(row)), grid: warp.grid))
        }
        for row in [6, 17] {
            let plain = WaNetWarp.sample(ImagePlanes.planes(set.image(row)), grid: warp.grid)
            XCTAssertNotEqual(Array(batch.planes[row * size..<(row + 1) * size]), plain, "noise mode jitters the grid")
        }
        XCTAssertEqual(Array(batch.planes[18 * size..<19 * size]), ImagePlanes.planes(set.image(18)), "clean")
    }

    func testBPPNegativeSamplesAddAnotherImagesResidual() throws {
        let squeeze = try BPPSqueeze()
        let attack = try BatchAttack(method: .bpp(squeeze, negativeRatio: 0.25), target: 0, rate: 0.125)
        var generator = SeededGenerator(seed: 4, stream: "batch")
        let batch = attack.poisoned(set, indices: Array(0..<32), generator: &generator)
        XCTAssertEqual(batch.triggered.filter { $0 }.count, 4)
        let size = ImageSet.pixelsPerImage
        XCTAssertEqual(Array(batch.planes[0..<size]), squeeze.squeeze(ImagePlanes.planes(set.image(0))))
        for row in 4..<12 {
            XCTAssertEqual(batch.labels[row], set.labels[row], "negative samples keep their labels")
            let values = Array(batch.planes[row * size..<(row + 1) * size])
            XCTAssertTrue(values.allSatisfy { $0 == $0.rounded() && (0...255).contains($0) })
            XCTAssertNotEqual(values, ImagePlanes.planes(set.image(row)))
        }
        XCTAssertEqual(Array(batch.planes[12 * size..<13 * size]), ImagePlanes.planes(set.image(12)))
    }

    func testBelowOnePerBatchPoisonsOneWithThatProbability() throws {
        let attack = try BatchAttack(method: .bpp(try BPPSqueeze(), negativeRatio: 0), target: 0, rate: 0.01)
        var generator = SeededGenerator(seed: 9, stream: "batch")
        let triggered = (0..<2000).map { _ in attack.counts(batchSize: 50, generator: &generator).triggered }
        XCTAssertEqual(Set(triggered), [0, 1])
        // 0.01 x 50 = one half.
        XCTAssertEqual(Double(triggered.reduce(0, +)) / 2000, 0.5, accuracy: 0.05)
    }

    func testTrainingBatchIsTheEpochDrawNormalisedAndTheLoaderUsesIt() throws {
        let attack = try BatchAttack(method: .wanet(try WaNetWarp.random(seed: 2), crossRatio: 2), target: 1, rate: 0.1)
        let loader = BatchLoader(images: set, batchSize: 40, shuffle: true, augment: false, seed: 11)
        loader.poisoning = attack
        let draw = attack.epochDraw(set, batchSize: 40, seed: 11)
        // int(0.1 x 40) + int(0.1 x 40) + int(0.1 x 20) triggered images in epoch 0.
        XCTAssertEqual(draw.poisonedIndices.count, 10)
        XCTAssertTrue(draw.poisonedIndices.allSatisfy { draw.images.labels[$0] == 1 })
        var seen = 0
        for batch in loader.epoch(0) {
            let indices = loader.indices(batch: seen, order: loader.order(epoch: 0))
            // Without augmentation, the batch is the export's images (to rounding) with their labels.
            let exported = Augmentation.testBatch(draw.images, indices: indices)
            XCTAssertEqual(batch.labels, exported.labels)
            let worst = zip(batch.images, exported.images).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 0.5 / 255 / 0.19 + 1e-5)
            seen += 1
        }
        XCTAssertEqual(seen, 3)
        // With augmentation the batch differs, and the same stream gives the same batch again.
        var g1 = BatchLoader.poisoningStream(seed: 11, epoch: 0, batch: 0), g2 = g1
        let a = attack.trainingBatch(set, indices: Array(0..<40), augment: true, generator: &g1, normalization: .cifar10)
        let b = attack.trainingBatch(set, indices: Array(0..<40), augment: true, generator: &g2, normalization: .cifar10)
        XCTAssertEqual(a.images, b.images)
    }

    func testBatchAugmentationFlipsCropsAndRotatesWholeBatches() {
        // A batch of two images whose value is its column: every draw moves both alike.
        var images = [Float]()
        for _ in 0..<2 * 3 { for _ in 0..<32 { for x in 0..<32 { images.append(Float(x + 1)) } } }
        var changed = 0
        for seed in 0..<20 {
            var copy = images
            var generator = SeededGenerator(seed: UInt64(seed), stream: "aug")
            BatchAugmentation.apply(&copy, count: 2, using: &generator)
            XCTAssertEqual(Array(copy[0..<3072]), Array(copy[3072..<6144]), "one draw per batch")
            if copy != images { changed += 1 }
        }
        XCTAssertGreaterThan(changed, 14)
    }
}
