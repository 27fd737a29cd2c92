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
            `backdoor clean-label` wrote to --clb-dir. WaNet and BPP poison every training batch afresh: for them the \
            arrays are one epoch's draw (epoch 1's batches of --batch-size, before augmentation, rounded to bytes), \
            and backdoor_list.npy marks the triggered images only (not the noise-mode or negative samples).
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var attack: AttackOptions
    @OptionGroup var compute: ComputeOptions
    @Option(help: "Fraction of the training set kept as the defender's clean split.") var valFrac = 0.1
    @Option(parsing: .unconditional, help: "Seed for the poisoned-image draw, the seeded Blend pattern and a missing split.", transform: parseSeed) var seed: UInt64 = 0
    @Option(help: "Folder to write the arrays, trigger information and examples to.") var export: String
    @Option(parsing: .unconditional, help: "WaNet, BPP, inputaware: the training batch size whose epoch draw is written.") var batchSize = 128
    @Option(help: "Input-aware: the trigger information of a `backdoor train --poison-type inputaware` run (its trained generators).")
    var triggerInfo: String?

    func validate() throws {
        guard attack.poisonType != .benign else {
            // benign is the option's default (for train), so the likely cause is a missing flag.
            let attacks = Attacks.PoisonType.allCases.filter { $0 != .benign }.map(\.rawValue)
            throw ValidationError("poison needs --poison-type \(attacks.dropLast().joined(separator: ", ")) or \(attacks.last!) "
                + "(benign, the default, poisons nothing)")
        }
        guard valFrac >= 0, valFrac < 1 else { throw ValidationError("--val-frac must be in [0, 1), got \(valFrac)") }
        if attack.poisonType.trainsTrigger && triggerInfo == nil {
            throw ValidationError("poison --poison-type inputaware needs --trigger-info: its trigger is a pair of generators trained "
                + "with the classifier; `backdoor train --poison-type inputaware` writes them to trigger_info.safetensors")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        try attack.settings(seed: seed).validateNamingFlags()
    }

    func run() throws {
        let settings = attack.settings(seed: seed)
        let (trigger, note) = try attack.triggerInfo(seed: seed, backend: { try compute.backend(for: .inference) }, quiet: false)
        if let note { print("note: \(note)") }
        let dataset = try data.load()
        let split = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: export, seed: seed)
        let attackerSet = dataset.train.subset(DataSplit(permutation: split.permutation, valFrac: valFrac).attacker)
        var poisoned = try settings.trainingSet(attackerSet: attackerSet, triggerInfo: trigger)
        let batchAttack = try settings.batchAttack(triggerInfo: trigger)
        if let batchAttack { poisoned = batchAttack.epochDraw(attackerSet, batchSize: batchSize, seed: seed) }
        var info = trigger
        if settings.poisonType.trainsTrigger, let triggerInfo {
            (poisoned, info) = try inputAwareDraw(triggerInfo, settings: settings, attackerSet: attackerSet)
        }
        let files = try PoisonedSetFolder.export(poisoned, clean: attackerSet, triggerInfo: info!, to: export)

        let alpha = settings.poisonType.triggerKind == nil ? "" : ", alpha \(settings.effectiveAlpha)"
        print("\(settings.poisonType.rawValue): \(poisoned.poisonedIndices.count) of \(poisoned.count) attacker-split images "
            + "poisoned\(batchAttack == nil && !settings.poisonType.trainsTrigger ? "" : " in one epoch's draw (batch size \(batchSize))") (target \(settings.target)\(alpha)); "
            + "--poison-rate \(settings.rate) is a \(settings.poisonType.rateMeaning); split from \(split.path)")
        for file in files { print("wrote \(file)") }
    }

    /// Input-aware's epoch draw with the generators of a trained run, at this command's rate and target.
    func inputAwareDraw(_ path: String, settings: AttackSettings, attackerSet: ImageSet) throws -> (PoisonedTrainingSet, TriggerInfo) {
        let backend = try compute.backend(for: .inference)
        let read = try TriggerInfo.read(path: path, backend: backend)
        guard case let .inputAware(trained) = read.trigger else {
            throw ValidationError("--trigger-info \(path) holds a \(read.poisonType) trigger; expected the generators of "
                + "`backdoor train --poison-type inputaware`")
        }
        let attack = try InputAwareAttack(stateDicts: try trained.stateDicts(), generatorWidth: trained.settings.generatorWidth,
                                          target: settings.target, rate: settings.rate, on: backend, source: path)
        let draw = try InputAwareTraining(attack, trainSet: attackerSet, batchSize: batchSize, augment: false, seed: seed).epochDraw()
        return (draw, try settings.triggerInfo(trained: attack))
    }
}

extension AttackOptions {
    /// The library's description of the attack these flags choose.
    func settings(seed: UInt64) -> AttackSettings {
        AttackSettings(poisonType: Attacks.PoisonType(rawValue: poisonType.rawValue)!, target: poisonTarget,
                       rate: poisonRate, alpha: triggerAlpha, patternPath: triggerPattern,
                       cleanLabelDirectory: clbDir, seed: seed, data: dataTriggers, trojannn: trojannn,
                       inputAware: (try? inputAware.settings(crossRatio: crossRatio)) ?? InputAwareSettings())
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
                               "PGD iterations": "--iters", "PGD restarts": "--restarts", "PGD batch size": "--batch-size",
                               "SIG delta": "--sig-delta", "SIG frequency": "--sig-f", "WaNet k": "--wanet-k", "WaNet s": "--wanet-s",
                               "grid rescale": "--grid-rescale", "cross ratio": "--cross-ratio", "squeeze num": "--squeeze-num",
                               "negative ratio": "--neg-ratio", "FTrojan magnitude": "--ftrojan-magnitude",
                               "FTrojan window": "--ftrojan-window", "FTrojan channels": "--ftrojan-channels",
                               "FTrojan positions": "--ftrojan-positions", "TrojanNN model": "--trojannn-model",
                               "TrojanNN layer": "--trojannn-layer", "TrojanNN neurons": "--trojannn-neurons",
                               "TrojanNN target value": "--trojannn-target-value", "TrojanNN steps": "--trojannn-steps",
                               "TrojanNN step size": "--trojannn-step-size", "TrojanNN epsilon": "--trojannn-eps"]

    static func describe(_ error: AttackError) -> String {
        guard case let .invalidValue(name, value, allowed) = error, let flag = flagForValue[name] else { return "\(error)" }
        return "\(flag) \(value) is not allowed; expected \(allowed)"
    }
}
