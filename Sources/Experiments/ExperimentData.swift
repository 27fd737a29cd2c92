import Attacks
import Datasets
import Foundation

/// The images of one experiment: the attacker's (possibly poisoned) training split, the clean
/// test set and the ASR test set, with the trigger information saved beside the outputs.
public struct ExperimentData {
    public var train: ImageSet
    public var cleanTest: ImageSet
    public var poisonTest: ImageSet?
    /// Training images poisoned (for WaNet and BPP: the triggered images of one epoch).
    public var poisonedCount: Int
    public var triggerInfo: TriggerInfo?
    /// WaNet and BPP: the poisoning the trainer applies to every batch.
    public var batchAttack: BatchAttack?

    /// The experiment's images from a loaded dataset and split (no files written): the attacker's
    /// split (after the first `valFrac` of the permutation) limited to `trainLimit` images, poisoned
    /// by `settings` unless `poisonedSet` (the poison stage's, built from that split) is given, and
    /// the first `testLimit` test images with their triggered twins.
    public static func make(dataset: CIFAR10.DataSet, permutation: [Int], settings: AttackSettings, triggerInfo info: TriggerInfo?,
                            poisonedSet: PoisonedTrainingSet? = nil, valFrac: Double, trainLimit: Int?, testLimit: Int?,
                            batchSize: Int) throws -> ExperimentData {
        let attacker = DataSplit(permutation: permutation, valFrac: valFrac).attacker
        var test = dataset.test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }
        var poisoned = try poisonedSet
            ?? settings.trainingSet(attackerSet: dataset.train.subset(Array(attacker.prefix(trainLimit ?? attacker.count))),
                                    triggerInfo: info)
        // Clean-label sets hold the whole attacker split (its rate counts the limited images).
        if let trainLimit, trainLimit < poisoned.count {
            let kept = Array(0..<trainLimit)
            poisoned = PoisonedTrainingSet(images: poisoned.images.subset(kept), isPoisoned: kept.map { poisoned.isPoisoned[$0] })
        }
        let poisonTest = try info.map { try Poisoning.testSet(test, trigger: $0.trigger, target: $0.target) }
        let batchAttack = try settings.batchAttack(triggerInfo: info)
        let perEpoch = batchAttack.map { attack in
            let batches = (poisoned.count + batchSize - 1) / batchSize
            return Int(attack.rate * Double(batchSize)) * (batches - 1) + Int(attack.rate * Double(poisoned.count - (batches - 1) * batchSize))
        }
        return ExperimentData(train: poisoned.images, cleanTest: test, poisonTest: poisonTest,
                              poisonedCount: perEpoch ?? poisoned.poisonedIndices.count, triggerInfo: info, batchAttack: batchAttack)
    }
}
