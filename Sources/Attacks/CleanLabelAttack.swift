import Datasets
import NN
import Support

/// The label-consistent (clean-label) attack: some target-class images of the attacker's
/// training set are made hard to classify with PGD, then get the four-corner trigger; their
/// labels stay correct, so the model learns to rely on the trigger for the target class.
public enum CleanLabelAttack {
    /// floor(rate x target-class images), as for BadNets/Blend.
    public static func poisonCount(rate: Double, targetImages: Int) -> Int {
        Poisoning.poisonCount(rate: rate, candidates: targetImages)
    }

    /// The target-class images to poison: a seeded draw without replacement, ascending.
    public static func chooseImages(labels: [Int], target: Int, rate: Double, seed: UInt64) throws -> [Int] {
        try Poisoning.validate(rate: rate)
        try Poisoning.validate(target: target)
        var candidates = labels.indices.filter { labels[$0] == target }
        let count = poisonCount(rate: rate, targetImages: candidates.count)
        var generator = SeededGenerator(seed: seed, stream: "clean-label selection")
        for i in 0..<count {
            let j = i + Int(generator.next(upperBound: UInt64(candidates.count - i)))
            candidates.swapAt(i, j)
        }
        return candidates[0..<count].sorted()
    }

    /// The poisoned training set: `attackerSet` with the chosen target-class images replaced by
    /// their PGD-perturbed, quantised, triggered versions. Labels are unchanged.
    public static func poison(_ attackerSet: ImageSet, classifier: ImageClassifier, target: Int, rate: Double,
                              trigger: Trigger, pgd: CleanLabelPGD, seed: UInt64,
                              progress: ProgressBar? = nil) throws -> PoisonedTrainingSet {
        try pgd.validate()
        let chosen = try chooseImages(labels: attackerSet.labels, target: target, rate: rate, seed: seed)
        let perturbed = try pgd.perturb(attackerSet.subset(chosen), classifier: classifier, seed: seed, progress: progress)
        var images = attackerSet
        var isPoisoned = [Bool](repeating: false, count: attackerSet.count)
        let size = ImageSet.pixelsPerImage
        for (row, index) in chosen.enumerated() {
            images.pixels.replaceSubrange(index * size..<(index + 1) * size, with: perturbed.images.image(row))
            isPoisoned[index] = true
        }
        trigger.apply(to: &images, at: chosen)
        return PoisonedTrainingSet(images: images, isPoisoned: isPoisoned)
    }
}
