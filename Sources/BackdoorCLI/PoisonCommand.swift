import ArgumentParser
import Attacks
import Datasets
import Foundation
import Support

struct PoisonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poison",
        abstract: "Write the poisoned attacker training set as numpy arrays, with its trigger information and a PNG of examples.",
        discussion: """
            Writes, in the attacker split's order: data.npy (uint8, N x 32 x 32 x 3), label.npy (int64, N), \
            backdoor_list.npy (uint8, N, 1 where poisoned), trigger_info.safetensors (+ .json, see docs/trigger-info.md) \
            and examples.png (clean images above their poisoned versions). For clean-label, the set is the one \
            `backdoor clean-label` wrote to --clb-dir.
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var attack: AttackOptions
    @Option(help: "Fraction of the training set kept as the defender's clean split.") var valFrac = 0.1
    @Option(parsing: .unconditional, help: "Seed for the poisoned-image draw, the seeded Blend pattern and a missing split.", transform: parseSeed) var seed: UInt64 = 0
    @Option(help: "Folder to write the arrays, trigger information and examples to.") var export: String

    func validate() throws {
        guard attack.poisonType != .benign else {
            // benign is the option's default (for train), so the likely cause is a missing flag.
            throw ValidationError("poison needs --poison-type badnets, blend or clean-label (benign, the default, poisons nothing)")
        }
        guard valFrac >= 0, valFrac < 1 else { throw ValidationError("--val-frac must be in [0, 1), got \(valFrac)") }
        try attack.settings(seed: seed).validateNamingFlags()
    }

    func run() throws {
        let settings = attack.settings(seed: seed)
        let (trigger, note) = try settings.triggerInfo()
        if let note { print("note: \(note)") }
        let dataset = try data.load()
        let split = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: export, seed: seed)
        let attackerSet = dataset.train.subset(DataSplit(permutation: split.permutation, valFrac: valFrac).attacker)
        let poisoned = try settings.trainingSet(attackerSet: attackerSet, triggerInfo: trigger)
        let files = try PoisonedSetFolder.export(poisoned, clean: attackerSet, triggerInfo: trigger!, to: export)

        print("\(settings.poisonType.rawValue): \(poisoned.poisonedIndices.count) of \(poisoned.count) attacker-split images "
            + "poisoned (target \(settings.target), alpha \(settings.effectiveAlpha)); split from \(split.path)")
        for file in files { print("wrote \(file)") }
    }
}

extension AttackOptions {
    /// The library's description of the attack these flags choose.
    func settings(seed: UInt64) -> AttackSettings {
        AttackSettings(poisonType: Attacks.PoisonType(rawValue: poisonType.rawValue)!, target: poisonTarget,
                       rate: poisonRate, alpha: triggerAlpha, patternPath: triggerPattern,
                       cleanLabelDirectory: clbDir, seed: seed)
    }
}

extension AttackSettings {
    /// `validate()` with the library's value names replaced by the flags that set them.
    func validateNamingFlags() throws {
        do {
            try validate()
        } catch let error as AttackError {
            throw ValidationError(AttackFlags.describe(error))
        }
    }
}

/// Attack errors worded with the command-line flags rather than the library's value names.
enum AttackFlags {
    static let flagForValue = ["poison rate": "--poison-rate", "poison target": "--poison-target",
                               "trigger alpha": "--trigger-alpha", "PGD epsilon": "--eps", "PGD step size": "--step-size",
                               "PGD iterations": "--iters", "PGD restarts": "--restarts", "PGD batch size": "--batch-size"]

    static func describe(_ error: AttackError) -> String {
        guard case let .invalidValue(name, value, allowed) = error, let flag = flagForValue[name] else { return "\(error)" }
        return "\(flag) \(value) is not allowed; expected \(allowed)"
    }
}
