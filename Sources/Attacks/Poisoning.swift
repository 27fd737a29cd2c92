import Datasets
import Support

/// A training set after poisoning: the images (poisoned ones replaced), their labels (target
/// label on the poisoned ones for BadNets/Blend, unchanged for clean-label) and which images
/// carry the trigger.
public struct PoisonedTrainingSet: Equatable {
    public var images: ImageSet
    /// One flag per image, true where the image carries the trigger.
    public var isPoisoned: [Bool]

    public init(images: ImageSet, isPoisoned: [Bool]) {
        precondition(isPoisoned.count == images.count, "one poisoned flag per image")
        self.images = images
        self.isPoisoned = isPoisoned
    }

    /// A benign training set: nothing poisoned.
    public init(clean images: ImageSet) {
        self.init(images: images, isPoisoned: [Bool](repeating: false, count: images.count))
    }

    public var count: Int { images.count }
    /// Indices of the poisoned images, ascending.
    public var poisonedIndices: [Int] { isPoisoned.indices.filter { isPoisoned[$0] } }
}

/// BadNets/Blend poisoning of a training set and the attack-success test set, as the ANP
/// reference does it (`add_trigger_cifar`, `add_predefined_trigger_cifar`).
public enum Poisoning {
    public static let numClasses = 10

    public static func validate(rate: Double) throws {
        guard rate >= 0 && rate <= 1 else {
            throw AttackError.invalidValue(name: "poison rate", value: "\(rate)", allowed: "a number in [0, 1]")
        }
    }

    public static func validate(target: Int) throws {
        guard (0..<numClasses).contains(target) else {
            throw AttackError.invalidValue(name: "poison target", value: "\(target)",
                                           allowed: "a class in 0...\(numClasses - 1)")
        }
    }

    /// floor(rate x candidates), as the reference's `int(poison_rate * len(poison_cand))`.
    public static func poisonCount(rate: Double, candidates: Int) -> Int {
        Int((rate * Double(candidates)).rounded(.down))
    }

    /// Poisons floor(rate x candidates) images drawn without replacement (seeded) from those
    /// whose label is not `target`: each gets the trigger and the target label.
    public static func trainingSet(_ clean: ImageSet, trigger: Trigger, target: Int, rate: Double,
                                   seed: UInt64) throws -> PoisonedTrainingSet {
        try validate(rate: rate)
        try validate(target: target)
        var candidates = clean.labels.indices.filter { clean.labels[$0] != target }
        let count = poisonCount(rate: rate, candidates: candidates.count)
        // Partial Fisher-Yates: the first `count` slots end up a uniform sample without replacement.
        var generator = SeededGenerator(seed: seed, stream: "poison-training-set")
        for i in 0..<count {
            let j = i + Int(generator.next(upperBound: UInt64(candidates.count - i)))
            candidates.swapAt(i, j)
        }
        let chosen = candidates[0..<count].sorted()

        var images = clean
        trigger.apply(to: &images, at: chosen)
        var isPoisoned = [Bool](repeating: false, count: clean.count)
        for index in chosen {
            images.labels[index] = target
            isPoisoned[index] = true
        }
        return PoisonedTrainingSet(images: images, isPoisoned: isPoisoned)
    }

    /// The attack-success set: every test image whose true label is not `target`, in order,
    /// with the trigger and the target label. ASR is the accuracy on it.
    public static func testSet(_ test: ImageSet, trigger: Trigger, target: Int) throws -> ImageSet {
        var poisoned = try triggeredTestSet(test, trigger: trigger, target: target)
        poisoned.labels = [Int](repeating: target, count: poisoned.count)
        return poisoned
    }

    /// The same triggered non-target test images with their true labels: accuracy on them is
    /// the robust accuracy (how much of the model's skill the trigger leaves).
    public static func triggeredTestSet(_ test: ImageSet, trigger: Trigger, target: Int) throws -> ImageSet {
        try validate(target: target)
        var triggered = test.subset(test.labels.indices.filter { test.labels[$0] != target })
        trigger.apply(to: &triggered, at: Array(0..<triggered.count))
        return triggered
    }
}
