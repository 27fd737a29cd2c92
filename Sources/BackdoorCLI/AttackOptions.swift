import ArgumentParser
import Attacks
import Datasets
import DNNL
import Foundation
import Support

/// The attack a training set is poisoned with (the reference's flags).
struct AttackOptions: ParsableArguments {
    enum PoisonType: String, ExpressibleByArgument, CaseIterable {
        case benign, badnets, blend
        case cleanLabel = "clean-label"
    }

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

    var triggerKind: Trigger.Kind? {
        switch poisonType {
        case .benign: return nil
        case .badnets: return .checkerboard1Corner
        case .blend: return .gaussianNoise
        case .cleanLabel: return .checkerboard4Corner
        }
    }

    /// The trigger of the chosen attack, and where its pattern came from.
    func trigger(seed: UInt64) throws -> (Trigger, String?)? {
        guard let kind = triggerKind else { return nil }
        let alpha = triggerAlpha ?? Trigger.defaultAlpha(for: kind)
        if kind != .gaussianNoise { return (try Trigger.standard(kind, alpha: alpha), nil) }
        return try TriggerPattern.blendTrigger(patternFile: triggerPattern, alpha: alpha, seed: seed)
    }
}

enum DNNLThreads {
    static func describe() -> String { "\(Runtime.threads) thread(s), oneDNN \(Runtime.version)" }
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
        let attacker = DataSplit(permutation: split.permutation, valFrac: valFrac).attacker
        var test = dataset.test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }

        var train: ImageSet
        var poisonedCount = 0
        var info: TriggerInfo?
        var poisonTest: ImageSet?
        if attack.poisonType == .cleanLabel {
            let folder = try CleanLabelFolder.read(directory: attack.clbDir)
            guard folder.images.count == attacker.count else {
                throw ValidationError("--clb-dir \(attack.clbDir) holds \(folder.images.count) images, but the attacker split "
                    + "has \(attacker.count) (val-frac \(valFrac)); make it with the same split and --val-frac")
            }
            train = folder.images
            poisonedCount = folder.isPoisoned.filter { $0 }.count
        } else {
            let kept = trainLimit.map { Array(attacker.prefix($0)) } ?? attacker
            train = dataset.train.subset(kept)
        }
        if let (trigger, source) = try attack.trigger(seed: seed) {
            if attack.poisonType != .cleanLabel {
                let poisoned = try Poisoning.trainingSet(train, trigger: trigger, target: attack.poisonTarget,
                                                         rate: attack.poisonRate, seed: seed)
                train = poisoned.images
                poisonedCount = poisoned.poisonedIndices.count
            }
            poisonTest = try Poisoning.testSet(test, trigger: trigger, target: attack.poisonTarget)
            let triggerInfo = try TriggerInfo(poisonType: attack.poisonType.rawValue, trigger: trigger,
                                              target: attack.poisonTarget, patternSource: source)
            try triggerInfo.write(path: outputDirectory + "/" + TriggerInfo.fileName)
            info = triggerInfo
        }
        if let trainLimit, trainLimit < train.count { train = train.subset(Array(0..<trainLimit)) }
        if !quiet, let source = info?.patternSource { print("trigger pattern: \(source)") }
        return ExperimentData(train: train, cleanTest: test, poisonTest: poisonTest, poisonedCount: poisonedCount,
                              triggerInfo: info)
    }
}
