import ArgumentParser
import Attacks
import Experiments
import Foundation
import Models

/// The flags of `backdoor run` and `backdoor sweep`: a preset, a config file, and flags over both.
/// Each setting flag is one dotted key of the config (`--epochs` is `training.epochs`).
struct ExperimentOptions: ParsableArguments {
    @Option(help: "Settings to start from: \(ExperimentConfigFile.presetNames.joined(separator: ", ")) (Presets/*.yaml; quick: minutes on a 2-core CPU, homework: the assignment's full scale, benchmark: every attack x every defense at the quick scale).")
    var preset = "quick"
    @Option(help: "YAML config file laid over the preset (its own `preset:` key picks the preset); flags override it.")
    var config: String?
    @Option(help: "Run folder (stage folders, summary.json or leaderboard.json, report).") var outputDir = "runs/experiment"
    @Option(help: "CIFAR-10 folder (default $BACKDOOR_DATA_DIR, else ./data).") var dataDir: String?
    @Option(help: "Permutation of the 50,000 training indices (data.split_file; default: the ANP reference's cifar_shuffle.txt, shipped; `seeded`: one from --seed, written to the run folder).")
    var splitFile: String?
    @Flag(help: "Skip the stages whose outputs exist for the same configuration; continue an interrupted stage.")
    var resume = false
    @Flag(help: "No progress bars or per-epoch lines.") var quiet = false
    @OptionGroup var compute: ComputeOptions

    @Option(help: "Network (model.name): resnet18 | preact-resnet18 | vgg16-bn | vgg19-bn | mobilenetv2.") var model: String?
    @Option(parsing: .unconditional, help: "Base width of the ResNet family (model.width; 64 is the real model). Not for VGG or MobileNetV2.") var width: Int?
    @Option(parsing: .unconditional, help: "Training epochs.") var epochs: Int?
    @Option(parsing: .unconditional, help: "Training batch size.") var batchSize: Int?
    @Option(help: "Initial learning rate.") var lr: Double?
    @Option(help: "Epochs at which the learning rate is multiplied by 0.1, comma-separated.") var milestones: String?
    @Option(help: "Random crop and flip in training (true or false).") var augment: Bool?
    @Option(parsing: .unconditional, help: "Train on the first N images of the attacker's split.") var trainLimit: Int?
    @Option(help: "Per-epoch, ANP-log and pruning-sweep evaluations on the first N test images.")
    var testLimit: Int?
    @Option(help: "Before/after numbers (summary.json, leaderboard) on the first N test images (default: all 10,000).")
    var evalLimit: Int?
    @Option(help: "Share to poison: floor(rate x non-target images) for BadNets, Blend; round(rate x training images) capped by the target class for clean-label, SIG (0.1: all of it); round(rate x training images) for FTrojan, TrojanNN; int(rate x batch size) per batch for WaNet, BPP, inputaware. Sets every attack's rate, over the config's attack.settings.<attack>.poison_rate (the quick preset's for WaNet, BPP, FTrojan).")
    var poisonRate: Double?
    @Option(help: "Target class of the backdoor (0-9).") var poisonTarget: Int?
    @Option(help: "32x32 PNG pattern for the Blend trigger (default: the papers' cifar_gaussian_noise.png, shipped; `seeded`: the tool's own seeded noise).") var triggerPattern: String?
    @Option(help: "PGD iterations per attempt of the clean-label attack.") var pgdIters: Int?
    @Option(help: "TrojanNN: sign-gradient steps of its pattern against the run's clean model (attack.trojannn.steps).") var trojannnSteps: Int?
    @Option(help: "ANP perturbation budget.") var anpEps: Double?
    @Option(help: "ANP: weight of the natural loss (1 - alpha weighs the perturbed loss).") var anpAlpha: Double?
    @Option(help: "ANP mask-optimisation iterations.") var anpIters: Int?
    @Option(help: "ANP iterations between log lines (each evaluates the test sets).") var anpPrintEvery: Int?
    @Option(help: "Fraction of the training set held by the defender (ANP's clean data).") var anpFrac: Double?
    @Option(parsing: .unconditional, help: "Prune every neuron whose mask is at most this (defense.pruning.threshold; drops the preset's acc_ratio).")
    var threshold: Double?
    @Option(help: "Prune at the largest sweep threshold before the first that costs this fraction of the unpruned model's clean accuracy on the defender's images (defense.pruning.acc_ratio; drops the preset's fixed threshold).")
    var accRatio: Double?
    @Option(help: "With --acc-ratio: choose the threshold on this share of the training set after ANP's images (inside the defender's share, never trained on), not on the images the masks were fitted on (defense.pruning.holdout_frac; 0: ANP's own).")
    var holdoutFrac: Double?
    @Option(parsing: .unconditional, help: "Seed of initialisation, shuffling, augmentation, poisoning, split and the defenses.", transform: parseSeed)
    var seed: UInt64?

    /// (flag, config key, value) of every setting flag given.
    var settingFlags: [(flag: String, key: String, value: Any)] {
        let all: [(String, String, Any?)] = [
            ("--split-file", "data.split_file", splitFile), ("--train-limit", "data.train_limit", trainLimit),
            ("--model", "model.name", model), ("--width", "model.width", width),
            ("--epochs", "training.epochs", epochs), ("--batch-size", "training.batch_size", batchSize), ("--lr", "training.lr", lr),
            ("--milestones", "training.milestones", milestones.map { text in
                text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? -1 } }),
            ("--augment", "training.augment", augment),
            ("--poison-rate", "attack.poison_rate", poisonRate), ("--poison-target", "attack.target", poisonTarget),
            ("--trigger-pattern", "attack.trigger_pattern", triggerPattern), ("--pgd-iters", "attack.pgd.iterations", pgdIters),
            ("--trojannn-steps", "attack.trojannn.steps", trojannnSteps),
            ("--anp-eps", "defense.anp.eps", anpEps), ("--anp-alpha", "defense.anp.alpha", anpAlpha),
            ("--anp-iters", "defense.anp.iterations", anpIters), ("--anp-print-every", "defense.anp.print_every", anpPrintEvery),
            ("--anp-frac", "defense.anp.frac", anpFrac), ("--threshold", "defense.pruning.threshold", threshold),
            // One of the two decides the threshold: either flag clears the other's key (null removes it).
            ("--threshold", "defense.pruning.acc_ratio", threshold.map { _ in NSNull() }),
            ("--acc-ratio", "defense.pruning.acc_ratio", accRatio), ("--acc-ratio", "defense.pruning.threshold", accRatio.map { _ in NSNull() }),
            ("--holdout-frac", "defense.pruning.holdout_frac", holdoutFrac),
            ("--test-limit", "evaluation.test_limit", testLimit), ("--eval-limit", "evaluation.eval_limit", evalLimit),
            ("--seed", "seed", seed),
        ]
        // The flag's rate is every attack's: it clears the attacks' own (attack.settings.<attack>.poison_rate).
        let ownRates: [(String, String, Any?)] = PoisonType.experimentAttacks.map {
            ("--poison-rate", "attack.settings.\($0.rawValue).poison_rate", poisonRate.map { _ in NSNull() })
        }
        return (all + ownRates).compactMap { flag, key, value in value.map { (flag, key, $0) } }
    }

    /// The preset, the config file and the flags, with `extra` keys (a command's own flags) on top.
    func settings(extra: [(flag: String, key: String, value: Any)] = []) throws -> ExperimentSettings {
        let flags = settingFlags + extra
        do {
            return try ExperimentConfigFile.settings(preset: preset, configFile: config,
                                                     flags: Dictionary(flags.map { ($0.key, $0.value) }) { $1 })
        } catch let error as ConfigError where error.source == ExperimentConfigFile.commandLine {
            let flag = flags.first { $0.key == error.key }?.flag ?? error.key
            throw ValidationError(error.value.map { "\(flag) \($0) \(error.message)" } ?? "\(flag): \(error.message)")
        }
    }

    func validate() throws {
        if threshold != nil && accRatio != nil {
            throw ValidationError("--threshold fixes the threshold and --acc-ratio chooses it on the defender's images: give one of them")
        }
        if let milestones { _ = try parseMilestones(milestones) }
        if let model, let architecture = Architecture(flagName: model) { try FlagLimits.width(width, model: architecture) }
        _ = try settings()
    }
}
