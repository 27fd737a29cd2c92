import Datasets
import NN
import Support

/// The label-consistent (clean-label) attack: some target-class images of the attacker's
/// training set are made hard to classify with PGD, then get the four-corner trigger; their
/// labels stay correct, so the model learns to rely on the trigger for the target class.
public enum CleanLabelAttack {
    /// The target-class images to poison: round(rate x all images of `labels`), at most the
    /// whole target class (BackdoorBench's clean-label meaning), a seeded draw, ascending.
    public static func chooseImages(labels: [Int], target: Int, rate: Double, seed: UInt64) throws -> [Int] {
        try Poisoning.chooseImages(labels: labels, target: target, rate: rate, selection: .targetClass,
                                   seed: seed, stream: "clean-label selection")
    }

    /// The poisoned training set: `attackerSet` with the chosen target-class images replaced by
    /// their PGD-perturbed, quantised, triggered versions. Labels are unchanged. With `limit`,
    /// only the first `limit` images are the training set the rate is a share of (a run that
    /// trains on a prefix of the split).
    public static func poison(_ attackerSet: ImageSet, classifier: ImageClassifier, target: Int, rate: Double,
                              trigger: Trigger, pgd: CleanLabelPGD, seed: UInt64,
                              limit: Int? = nil, progress: ProgressBar? = nil) throws -> PoisonedTrainingSet {
        try pgd.validate()
        let chosen = try chooseImages(labels: Array(attackerSet.labels.prefix(limit ?? attackerSet.count)),
                                      target: target, rate: rate, seed: seed)
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
