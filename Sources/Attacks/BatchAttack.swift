import Datasets
import Support

/// WaNet and BPP poison each training batch as it is drawn, as their reference training loops
/// do: the first `int(rate x batch size)` images of the shuffled batch get the trigger and the
/// target label (with fewer than one per batch, one with probability `rate x batch size`, as
/// BackdoorBench's `generalize_to_lower_pratio`); the next ones are the attack's helpers that keep
/// their labels: WaNet's noise mode (`cross_ratio` times as many, warped with a jittered grid),
/// BPP's negative samples (`int(neg_ratio x batch size)`, each plus the squeeze residual of a
/// random training image). The rest stay clean. Then the batch is normalised and, when the run
/// augments, gets the reference's batch augmentation (`BatchAugmentation`).
public struct BatchAttack: BatchPoisoning, Equatable {
    public enum Method: Equatable {
        case wanet(WaNetWarp, crossRatio: Double)
        case bpp(BPPSqueeze, negativeRatio: Double)
    }

    public let method: Method
    public let target: Int
    public let rate: Double

    public init(method: Method, target: Int, rate: Double) throws {
        try Poisoning.validate(rate: rate)
        try Poisoning.validate(target: target)
        switch method {
        case let .wanet(_, crossRatio) where !(crossRatio >= 0 && crossRatio.isFinite):
            throw AttackError.invalidValue(name: "cross ratio", value: "\(crossRatio)", allowed: "a number >= 0")
        case let .bpp(_, negativeRatio) where !(0...1).contains(negativeRatio):
            throw AttackError.invalidValue(name: "negative ratio", value: "\(negativeRatio)", allowed: "a number in [0, 1]")
        default: break
        }
        self.method = method
        self.target = target
        self.rate = rate
    }

    /// How many images of a batch of `size` carry the trigger and how many are helpers.
    func counts(batchSize size: Int, generator: inout SeededGenerator) -> (triggered: Int, helpers: Int) {
        let share = rate * Double(size)
        let triggered = share >= 1 ? Int(share) : (Double(generator.nextFloat()) < share ? 1 : 0)
        let helpers: Int
        switch method {
        case let .wanet(_, crossRatio): helpers = Int(Double(triggered) * crossRatio)
        case let .bpp(_, negativeRatio): helpers = Int(Double(size) * negativeRatio)
        }
        return (triggered, min(helpers, size - triggered))
    }

    /// The batch before normalisation: float planes (NCHW, 0-255), labels, and which rows carry the trigger.
    public func poisoned(_ images: ImageSet, indices: [Int], generator: inout SeededGenerator)
        -> (planes: [Double], labels: [Int], triggered: [Bool]) {
        let (triggered, helpers) = counts(batchSize: indices.count, generator: &generator)
        var planes = [Double]()
        planes.reserveCapacity(indices.count * ImageSet.pixelsPerImage)
        var labels = indices.map { images.labels[$0] }
        for (row, index) in indices.enumerated() {
            let clean = ImagePlanes.planes(images.image(index))
            switch (method, row) {
            case let (.wanet(warp, _), row) where row < triggered:
                planes += WaNetWarp.sample(clean, grid: warp.grid)
                labels[row] = target
            case let (.wanet(warp, _), row) where row < triggered + helpers:
                planes += WaNetWarp.sample(clean, grid: warp.noisyGrid(using: &generator))
            case let (.bpp(squeeze, _), row) where row < triggered:
                planes += squeeze.squeeze(clean)
                labels[row] = target
            case let (.bpp(squeeze, _), row) where row < triggered + helpers:
                // The residual of a random training image's stored (truncated) squeeze.
                let other = ImagePlanes.planes(images.image(Int(generator.next(upperBound: UInt64(images.count)))))
                let residual = zip(squeeze.squeeze(other), other).map { $0.rounded(.towardZero) - $1 }
                planes += zip(clean, residual).map { min(max($0 + $1, 0), 255) }
            default:
                planes += clean
            }
        }
        return (planes, labels, (0..<indices.count).map { $0 < triggered })
    }

    public func trainingBatch(_ images: ImageSet, indices: [Int], augment: Bool, generator: inout SeededGenerator,
                              normalization: Normalization) -> Batch {
        let batch = poisoned(images, indices: indices, generator: &generator)
        let plane = ImageSet.height * ImageSet.width
        var floats = [Float](repeating: 0, count: batch.planes.count)
        for i in floats.indices {
            let channel = i / plane % 3
            floats[i] = (Float(batch.planes[i]) / 255 - normalization.mean[channel]) / normalization.std[channel]
        }
        if augment { BatchAugmentation.apply(&floats, count: indices.count, using: &generator) }
        return Batch(images: floats, labels: batch.labels.map(Int32.init))
    }

    /// One epoch's draw as a fixed set, for `poison --export`: the batches of `loader`'s epoch
    /// `epoch`, poisoned as training would, rounded to bytes (before augmentation). Flags mark
    /// the triggered images only (not WaNet's noise-mode or BPP's negative samples).
    public func epochDraw(_ images: ImageSet, batchSize: Int, seed: UInt64, epoch: Int = 0) -> PoisonedTrainingSet {
        let loader = BatchLoader(images: images, batchSize: batchSize, shuffle: true, augment: false, seed: seed)
        let order = loader.order(epoch: epoch)
        var out = images
        var flags = [Bool](repeating: false, count: images.count)
        for number in 0..<loader.batchesPerEpoch {
            let indices = loader.indices(batch: number, order: order)
            // The loader's stream, so the export is the batches epoch `epoch` trains on.
            var generator = BatchLoader.poisoningStream(seed: seed, epoch: epoch, batch: number)
            let batch = poisoned(images, indices: indices, generator: &generator)
            for (row, index) in indices.enumerated() {
                let planes = Array(batch.planes[row * ImageSet.pixelsPerImage..<(row + 1) * ImageSet.pixelsPerImage])
                ImagePlanes.store(planes, into: &out.pixels, image: index, rule: .toNearestOrAwayFromZero)
                out.labels[index] = batch.labels[row]
                flags[index] = batch.triggered[row]
            }
        }
        return PoisonedTrainingSet(images: out, isPoisoned: flags)
    }
}
