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

/// Poisoning a training set once (BadNets and Blend as the ANP reference's `add_trigger_cifar`;
/// SIG and FTrojan as BackdoorBench) and the attack-success test set.
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

    /// Which training images an attack poisons and what `--poison-rate` means for it.
    public enum Selection: String, Equatable {
        /// BadNets, Blend (the ANP reference): floor(rate x non-target images), relabelled to the target.
        case nonTarget = "non-target"
        /// FTrojan (BackdoorBench): round(rate x all images), any class, relabelled to the target.
        case wholeSet = "whole-set"
        /// SIG and PGD clean-label (BackdoorBench): round(rate x all images), at most the whole
        /// target class, drawn from it; labels kept.
        case targetClass = "target-class"

        /// The meaning, for --help and the trigger information.
        public var rateMeaning: String {
            switch self {
            case .nonTarget: return "share of the non-target training images (floor(rate x non-target images)), relabelled to the target"
            case .wholeSet: return "share of the whole training set (round(rate x images)), relabelled to the target"
            case .targetClass: return "share of the whole training set (round(rate x images)), at most the whole target class, labels kept"
            }
        }
    }

    /// floor(rate x candidates), as the reference's `int(poison_rate * len(poison_cand))`.
    public static func poisonCount(rate: Double, candidates: Int) -> Int {
        Int((rate * Double(candidates)).rounded(.down))
    }

    /// The images `selection` poisons among `labels`: a seeded draw without replacement from
    /// `stream`, ascending.
    public static func chooseImages(labels: [Int], target: Int, rate: Double, selection: Selection,
                                    seed: UInt64, stream: String) throws -> [Int] {
        try validate(rate: rate)
        try validate(target: target)
        var candidates: [Int], count: Int
        // round() as Python's: half to even.
        let shareOfAll = Int((rate * Double(labels.count)).rounded(.toNearestOrEven))
        switch selection {
        case .nonTarget:
            candidates = labels.indices.filter { labels[$0] != target }
            count = poisonCount(rate: rate, candidates: candidates.count)
        case .wholeSet:
            candidates = Array(labels.indices)
            count = shareOfAll
        case .targetClass:
            candidates = labels.indices.filter { labels[$0] == target }
            count = min(shareOfAll, candidates.count)
        }
        // Partial Fisher-Yates: the first `count` slots end up a uniform sample without replacement.
        var generator = SeededGenerator(seed: seed, stream: stream)
        for i in 0..<count {
            let j = i + Int(generator.next(upperBound: UInt64(candidates.count - i)))
            candidates.swapAt(i, j)
        }
        return candidates[0..<count].sorted()
    }

    /// Poisons the images `selection` chooses (seeded): each gets the trigger, and the target
    /// label unless the attack is clean-label.
    public static func trainingSet<T: ImageTrigger>(_ clean: ImageSet, trigger: T, target: Int, rate: Double,
                                                    selection: Selection = .nonTarget, seed: UInt64) throws -> PoisonedTrainingSet {
        let chosen = try chooseImages(labels: clean.labels, target: target, rate: rate, selection: selection,
                                      seed: seed, stream: "poison-training-set")
        var images = clean
        trigger.apply(to: &images, at: chosen)
        var isPoisoned = [Bool](repeating: false, count: clean.count)
        for index in chosen {
            if selection != .targetClass { images.labels[index] = target }
            isPoisoned[index] = true
        }
        return PoisonedTrainingSet(images: images, isPoisoned: isPoisoned)
    }

    /// The attack-success set: every test image whose true label is not `target`, in order,
    /// with the trigger and the target label. ASR is the accuracy on it.
    public static func testSet<T: ImageTrigger>(_ test: ImageSet, trigger: T, target: Int) throws -> ImageSet {
        var poisoned = try triggeredTestSet(test, trigger: trigger, target: target)
        poisoned.labels = [Int](repeating: target, count: poisoned.count)
        return poisoned
    }

    /// The same triggered non-target test images with their true labels: accuracy on them is
    /// the robust accuracy (how much of the model's skill the trigger leaves).
    public static func triggeredTestSet<T: ImageTrigger>(_ test: ImageSet, trigger: T, target: Int) throws -> ImageSet {
        try validate(target: target)
        var triggered = test.subset(test.labels.indices.filter { test.labels[$0] != target })
        trigger.apply(to: &triggered, at: Array(0..<triggered.count))
        return triggered
    }
}
