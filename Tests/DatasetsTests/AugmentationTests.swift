import Datasets
import Foundation
import Support
import XCTest
import TestSupport

final class AugmentationTests: XCTestCase {
    /// The transform written plainly: pad the HWC image with zeros, crop, mirror, normalise.
    func reference(_ images: ImageSet, _ index: Int, _ crop: CropFlip) -> [Float] {
        let image = Array(images.image(index))
        var padded = [UInt8](repeating: 0, count: 40 * 40 * 3)
        for y in 0..<32 { for x in 0..<32 { for c in 0..<3 {
            padded[((y + 4) * 40 + x + 4) * 3 + c] = image[(y * 32 + x) * 3 + c]
        } } }
        var out = [Float](repeating: 0, count: 3 * 32 * 32)
        for c in 0..<3 { for y in 0..<32 { for x in 0..<32 {
            let cropX = crop.flip ? 31 - x : x
            let value = padded[((y + crop.top) * 40 + cropX + crop.left) * 3 + c]
            out[(c * 32 + y) * 32 + x] = (Float(value) / 255 - Normalization.cifar10.mean[c]) / Normalization.cifar10.std[c]
        } } }
        return out
    }

    func testEveryCropAndFlipMatchesThePaddedImage() {
        let images = randomImageSet(count: 2, seed: 1)
        for top in 0...8 { for left in 0...8 { for flip in [false, true] {
            let crop = CropFlip(top: top, left: left, flip: flip)
            let batch = Augmentation.batch(images, indices: [1], crops: [crop])
            XCTAssertEqual(batch.images, reference(images, 1, crop), "\(crop)")
        } } }
    }

    func testFlipMirrorsExactly() {
        let images = randomImageSet(count: 1, seed: 2)
        for crop in [CropFlip.identity, CropFlip(top: 1, left: 7, flip: false)] {
            let plain = Augmentation.batch(images, indices: [0], crops: [crop]).images
            var mirroredCrop = crop
            mirroredCrop.flip = true
            let mirrored = Augmentation.batch(images, indices: [0], crops: [mirroredCrop]).images
            for row in 0..<(3 * 32) {
                XCTAssertEqual(Array(mirrored[row * 32..<(row + 1) * 32]), Array(plain[row * 32..<(row + 1) * 32].reversed()))
            }
        }
    }

    func testTestBatchIsNormalisationOnlyInNCHW() {
        let images = randomImageSet(count: 3, seed: 3)
        let batch = Augmentation.testBatch(images, indices: [2, 0])
        XCTAssertEqual(batch.labels, [Int32(images.labels[2]), Int32(images.labels[0])])
        let image = Array(images.image(2))
        for (c, y, x) in [(0, 0, 0), (1, 5, 9), (2, 31, 31)] {
            let expected = (Float(image[(y * 32 + x) * 3 + c]) / 255 - Normalization.cifar10.mean[c]) / Normalization.cifar10.std[c]
            XCTAssertEqual(batch.images[(c * 32 + y) * 32 + x], expected)
        }
        // Padding pixels normalise zero: channel 0's value for a black pixel.
        XCTAssertEqual(Normalization.cifar10.apply(0, channel: 0), -0.4914 / 0.2023, accuracy: 1e-6)
    }

    /// Offsets cover 0...8 uniformly, and about half the images are flipped.
    func testDrawsStayInsideThePaddedImage() {
        var generator = SeededGenerator(seed: 11)
        var tops = [Int](repeating: 0, count: 9), lefts = [Int](repeating: 0, count: 9), flips = 0
        let n = 90_000
        for _ in 0..<n {
            let crop = Augmentation.draw(using: &generator)
            tops[crop.top] += 1
            lefts[crop.left] += 1
            if crop.flip { flips += 1 }
        }
        for count in tops + lefts { XCTAssertEqual(Double(count), 10_000, accuracy: 400) }  // 4 sigma
        XCTAssertEqual(Double(flips), 45_000, accuracy: 600)
    }

    func testSameSeedSameBatchesOtherSeedOthers() {
        let images = randomImageSet(count: 20, seed: 4)
        func batch(_ seed: UInt64) -> Batch {
            var generator = SeededGenerator(seed: seed)
            return Augmentation.trainingBatch(images, indices: Array(0..<20), generator: &generator)
        }
        XCTAssertEqual(batch(5).images, batch(5).images)
        XCTAssertNotEqual(batch(5).images, batch(6).images)
    }

    /// On real images the reference constants centre each channel; their std values (below the
    /// true ones, as in the reference code) leave a spread of about 1.2-1.3.
    func testNormalisedStatisticsOnSharedData() throws {
        let data = try CIFAR10.load(directory: try Fixture.sharedData() + "/cifar10")
        let batch = Augmentation.testBatch(data.test, indices: Array(0..<2000))
        let plane = 32 * 32
        for c in 0..<3 {
            var sum = 0.0, squares = 0.0
            for n in 0..<batch.count {
                for p in 0..<plane {
                    let v = Double(batch.images[(n * 3 + c) * plane + p])
                    sum += v
                    squares += v * v
                }
            }
            let count = Double(batch.count * plane)
            let mean = sum / count, std = (squares / count - mean * mean).squareRoot()
            XCTAssertEqual(mean, 0, accuracy: 0.06, "channel \(c) mean")
            XCTAssertTrue((1.1...1.4).contains(std), "channel \(c) std \(std)")
        }
    }
}

final class BatchLoaderTests: XCTestCase {
    func testEpochCoversEveryImageOnceWithPartialLastBatch() {
        let images = randomImageSet(count: 23, seed: 1)
        let loader = BatchLoader.training(images, batchSize: 5, seed: 3)
        XCTAssertEqual(loader.batchesPerEpoch, 5)
        let batches = Array(loader.epoch(0))
        XCTAssertEqual(batches.map(\.count), [5, 5, 5, 5, 3])
        let order = loader.order(epoch: 0)
        XCTAssertEqual(Set(order), Set(0..<23))
        XCTAssertEqual(batches.flatMap(\.labels), order.map { Int32(images.labels[$0]) })
    }

    func testOrderDependsOnSeedAndEpochOnly() {
        let images = randomImageSet(count: 50, seed: 1)
        let a = BatchLoader.training(images, batchSize: 8, seed: 3)
        let b = BatchLoader.training(images, batchSize: 8, seed: 3)
        XCTAssertEqual(a.order(epoch: 2), b.order(epoch: 2))
        XCTAssertNotEqual(a.order(epoch: 1), a.order(epoch: 2))
        XCTAssertNotEqual(a.order(epoch: 1), BatchLoader.training(images, batchSize: 8, seed: 4).order(epoch: 1))
        XCTAssertEqual(BatchLoader.evaluation(images, batchSize: 8).order(epoch: 5), Array(0..<50))
    }

    /// Batches from the background thread equal batches computed directly, and resuming
    /// mid-epoch gives the remaining batches unchanged.
    func testPrefetchedAndResumedBatchesAreTheSame() {
        let images = randomImageSet(count: 40, seed: 9)
        let loader = BatchLoader.training(images, batchSize: 6, seed: 12)
        let all = Array(loader.epoch(3))
        XCTAssertEqual(all.count, 7)
        for (number, batch) in all.enumerated() {
            XCTAssertEqual(batch.images, loader.batch(number, epoch: 3).images)
        }
        let resumed = Array(loader.epoch(3, from: 4))
        XCTAssertEqual(resumed.map(\.images), all[4...].map(\.images))
        XCTAssertNotEqual(Array(loader.epoch(4)).first!.images, all.first!.images)
    }

    /// Leaving an epoch early stops its producer instead of blocking it forever.
    func testAbandonedEpochDoesNotHang() {
        let loader = BatchLoader.training(randomImageSet(count: 100, seed: 1), batchSize: 4, seed: 1)
        for _ in 0..<20 {
            let epoch = loader.epoch(0)
            XCTAssertNotNil(epoch.next())
        }
        XCTAssertEqual(Array(loader.epoch(1)).count, 25)
    }

    func testEvaluationLoaderIsInOrderAndUnaugmented() {
        let images = randomImageSet(count: 10, seed: 5)
        let batches = Array(BatchLoader.evaluation(images, batchSize: 4).epoch(0))
        XCTAssertEqual(batches.flatMap(\.images), Augmentation.testBatch(images, indices: Array(0..<10)).images)
    }
}
