import ArgumentParser
import Attacks
import Datasets

import Foundation
import Support

extension Attacks.PoisonType: ExpressibleByArgument {}

/// The attack a training set is poisoned with (the reference's flags).
struct AttackOptions: ParsableArguments {
    typealias PoisonType = Attacks.PoisonType

    @Option(help: "Attack: benign, badnets, blend or clean-label.") var poisonType: PoisonType = .benign
    @Option(help: "Target class of the backdoor (0-9).") var poisonTarget = 0
    @Option(help: "Fraction of the non-target training images to poison (BadNets, Blend).") var poisonRate = 0.1
    @Option(help: "Trigger opacity (default 1.0 for BadNets and clean-label, 0.2 for Blend).") var triggerAlpha: Double?
    @Option(help: "32x32 PNG pattern for the Blend trigger (default: the tool's own seeded noise).") var triggerPattern: String?
    @Option(help: "Folder with the clean-label attack's data.npy, label.npy, backdoor_list.npy.") var clbDir = "data/clean-label/0.1"

    func validate() throws {
        guard (0...1).contains(poisonRate) else {
            throw ValidationError("--poison-rate must be in [0, 1], got \(poisonRate)")
        }
        guard (0...9).contains(poisonTarget) else {
            throw ValidationError("--poison-target must be a class in 0-9, got \(poisonTarget)")
        }
        if let triggerAlpha, !(0...1).contains(triggerAlpha) {
            throw ValidationError("--trigger-alpha must be in [0, 1], got \(triggerAlpha)")
        }
    }
}

/// The images of one experiment: the attacker's (possibly poisoned) training split, the clean
/// test set and the ASR test set, with the trigger information saved beside the outputs.
struct ExperimentData {
    var train: ImageSet
    var cleanTest: ImageSet
    var poisonTest: ImageSet?
    var poisonedCount: Int
    var triggerInfo: TriggerInfo?

    static func prepare(data: DataOptions, attack: AttackOptions, valFrac: Double, trainLimit: Int?, testLimit: Int?,
                        seed: UInt64, outputDirectory: String, quiet: Bool) throws -> ExperimentData {
        let dataset = try data.load()
        let split = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDirectory, seed: seed)
        let settings = attack.settings(seed: seed)
        let (info, note) = try settings.triggerInfo()
        if let note, !quiet { print("note: \(note)") }
        let prepared = try make(dataset: dataset, permutation: split.permutation, settings: settings, triggerInfo: info,
                                valFrac: valFrac, trainLimit: trainLimit, testLimit: testLimit)
        if let info { try info.write(path: outputDirectory + "/" + TriggerInfo.fileName) }
        return prepared
    }

    /// The experiment's images from a loaded dataset and split (no files written): the attacker's
    /// split (after the first `valFrac` of the permutation) poisoned by `settings`, limited to
    /// `trainLimit` images, and the first `testLimit` test images with their triggered twins.
    static func make(dataset: CIFAR10.DataSet, permutation: [Int], settings: AttackSettings, triggerInfo info: TriggerInfo?,
                     valFrac: Double, trainLimit: Int?, testLimit: Int?) throws -> ExperimentData {
        let attacker = DataSplit(permutation: permutation, valFrac: valFrac).attacker
        var test = dataset.test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }
        // Clean-label folders hold the whole attacker split; other attacks poison the limited set.
        let limitFirst = settings.poisonType != .cleanLabel
        let attackerSet = dataset.train.subset(limitFirst ? Array(attacker.prefix(trainLimit ?? attacker.count)) : attacker)
        var poisoned = try settings.trainingSet(attackerSet: attackerSet, triggerInfo: info)
        if !limitFirst, let trainLimit, trainLimit < poisoned.count {
            let kept = Array(0..<trainLimit)
            poisoned = PoisonedTrainingSet(images: poisoned.images.subset(kept), isPoisoned: kept.map { poisoned.isPoisoned[$0] })
        }
        let poisonTest = try info.map { try Poisoning.testSet(test, trigger: $0.trigger, target: $0.target) }
        return ExperimentData(train: poisoned.images, cleanTest: test, poisonTest: poisonTest,
                              poisonedCount: poisoned.poisonedIndices.count, triggerInfo: info)
    }
}
