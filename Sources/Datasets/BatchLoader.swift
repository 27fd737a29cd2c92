import Foundation
import Support

/// Batches of an image set for one epoch after another: shuffled per epoch (seeded by seed and
/// epoch, so a resumed run sees the same order), augmented or test-normalised, the last partial
/// batch kept. Each epoch's batches are prepared one ahead on a background thread.
public final class BatchLoader {
    public let images: ImageSet
    public let batchSize: Int
    public let shuffle: Bool
    public let augment: Bool
    public let seed: UInt64
    public let normalization: Normalization
    /// A per-batch attack (WaNet, BPP) that makes each training batch instead of the plain
    /// augmentation; it gets its own stream per batch, so a resumed run poisons alike.
    public var poisoning: BatchPoisoning?

    public init(images: ImageSet, batchSize: Int, shuffle: Bool, augment: Bool, seed: UInt64,
                normalization: Normalization = .cifar10) {
        precondition(batchSize > 0, "batch size must be positive")
        self.images = images
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.normalization = normalization
    }

    /// Training loader: shuffled, augmented.
    public static func training(_ images: ImageSet, batchSize: Int, seed: UInt64) -> BatchLoader {
        BatchLoader(images: images, batchSize: batchSize, shuffle: true, augment: true, seed: seed)
    }

    /// Evaluation loader: in order, normalisation only.
    public static func evaluation(_ images: ImageSet, batchSize: Int) -> BatchLoader {
        BatchLoader(images: images, batchSize: batchSize, shuffle: false, augment: false, seed: 0)
    }

    public var batchesPerEpoch: Int { (images.count + batchSize - 1) / batchSize }

    /// The order images are visited in `epoch`.
    public func order(epoch: Int) -> [Int] {
        var indices = Array(0..<images.count)
        if shuffle {
            var generator = SeededGenerator(seed: seed, stream: "shuffle epoch \(epoch)")
            Datasets.shuffle(&indices, using: &generator)
        }
        return indices
    }

    /// Batch `number` of `epoch`, computed on the calling thread. Each batch's crops come from
    /// their own stream, so any batch can be recomputed alone.
    public func batch(_ number: Int, epoch: Int, order: [Int]? = nil) -> Batch {
        let order = order ?? self.order(epoch: epoch)
        let indices = self.indices(batch: number, order: order)
        if let poisoning {
            var generator = Self.poisoningStream(seed: seed, epoch: epoch, batch: number)
            return poisoning.trainingBatch(images, indices: indices, augment: augment, generator: &generator,
                                           normalization: normalization)
        }
        if augment {
            var generator = SeededGenerator(seed: seed, stream: "augment epoch \(epoch) batch \(number)")
            return Augmentation.trainingBatch(images, indices: indices, generator: &generator, normalization: normalization)
        }
        return Augmentation.testBatch(images, indices: indices, normalization: normalization)
    }

    /// The images of batch `number` of an epoch visited in `order`.
    public func indices(batch number: Int, order: [Int]) -> [Int] {
        Array(order[number * batchSize..<min((number + 1) * batchSize, order.count)])
    }

    /// The random stream a per-batch attack poisons batch `batch` of `epoch` from.
    public static func poisoningStream(seed: UInt64, epoch: Int, batch: Int) -> SeededGenerator {
        SeededGenerator(seed: seed, stream: "poison epoch \(epoch) batch \(batch)")
    }

    /// The batches of `epoch`, starting at batch `from` (to resume mid-epoch), prepared ahead
    /// on a background thread.
    public func epoch(_ epoch: Int, from start: Int = 0) -> Epoch {
        Epoch(loader: self, epoch: epoch, start: start)
    }

    /// Iterates one epoch's batches; stopping early (dropping the iterator) stops the producer.
    public final class Epoch: Sequence, IteratorProtocol {
        private let pipeline: Pipeline
        public let count: Int

        init(loader: BatchLoader, epoch: Int, start: Int) {
            count = Swift.max(0, loader.batchesPerEpoch - start)
            pipeline = Pipeline(depth: 2)
            let pipeline = self.pipeline
            let order = loader.order(epoch: epoch)
            let total = loader.batchesPerEpoch
            let thread = Thread {
                for number in start..<Swift.max(start, total) {
                    guard pipeline.waitForSlot() else { return }
                    pipeline.put(loader.batch(number, epoch: epoch, order: order))
                }
            }
            thread.name = "batch loader"
            thread.start()
        }

        public func next() -> Batch? {
            pipeline.taken < count ? pipeline.take() : nil
        }

        deinit { pipeline.cancel() }
    }

    /// A bounded hand-over between the producer thread and the consumer.
    final class Pipeline {
        private let lock = NSLock()
        private var ready = [Batch]()
        private let readyCount = DispatchSemaphore(value: 0)
        // Starts at zero and is raised to `depth`: libdispatch traps when a semaphore is freed
        // below its initial value, which an abandoned epoch would do.
        private let freeSlots = DispatchSemaphore(value: 0)
        private var cancelled = false
        private(set) var taken = 0

        init(depth: Int) {
            for _ in 0..<depth { freeSlots.signal() }
        }

        /// Blocks until there is room; false once the consumer has gone.
        func waitForSlot() -> Bool {
            freeSlots.wait()
            lock.lock(); defer { lock.unlock() }
            return !cancelled
        }

        func put(_ batch: Batch) {
            lock.lock(); ready.append(batch); lock.unlock()
            readyCount.signal()
        }

        func take() -> Batch {
            readyCount.wait()
            lock.lock()
            let batch = ready.removeFirst()
            taken += 1
            lock.unlock()
            freeSlots.signal()
            return batch
        }

        func cancel() {
            lock.lock(); cancelled = true; lock.unlock()
            freeSlots.signal()
        }
    }
}
