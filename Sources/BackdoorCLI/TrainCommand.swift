import ArgumentParser
import Attacks
import Datasets
import Experiments
import Foundation
import NN
import Models
import Support
import Training

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a network (--model, default ResNet-18) on (possibly poisoned) CIFAR-10, logging clean accuracy and ASR per epoch.")

    @OptionGroup var compute: ComputeOptions
    @OptionGroup var data: DataOptions
    @OptionGroup var attack: AttackOptions
    @OptionGroup var network: ModelOption

    @Option(parsing: .unconditional, help: "Epochs.") var epochs = 50
    @Option(parsing: .unconditional, help: "Batch size.") var batchSize = 128
    @Option(help: "Initial learning rate.") var lr: Float = 0.1
    @Option(help: "The reference's random crop and flip in training (true or false; off makes a quick backdoor take hold sooner).")
    var augment = true
    @Option(help: "Epochs at which the learning rate is multiplied by 0.1, comma-separated.") var milestones = "30,40"
    @Option(parsing: .unconditional, help: "Base width of the ResNet family (default 64, the real model; 32 and 16 are CPU-sized). Not for VGG or MobileNetV2.") var width: Int?
    @Option(parsing: .unconditional, help: "Seed for initialisation, shuffling, augmentation and poisoning.", transform: parseSeed) var seed: UInt64 = 0
    @Option(help: "Fraction of the training set kept as the defender's clean split.") var valFrac = 0.1
    @Option(parsing: .unconditional, help: "Train on the first N images of the attacker's split only (quick runs).") var trainLimit: Int?
    @Option(parsing: .unconditional, help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @Option(help: "Output folder (models, logs, trigger information).") var outputDir = "runs/train"
    @Flag(help: "Continue from the last completed epoch of an interrupted run in --output-dir.") var resume = false
    @Flag(help: "Replace an earlier run in --output-dir (its models, logs and trigger information are removed first).")
    var overwrite = false
    @Flag(help: "No progress bars or per-epoch lines.") var quiet = false
    @Option(help: ArgumentHelp("Training-time defense: none or abl (Anti-Backdoor Learning).",
                               discussion: "abl trains through its own phases (isolation, fine-tuning on the rest, unlearning of the isolated images) "
                                   + "with the flags below instead of --epochs, --lr, --milestones and --batch-size; --augment applies to "
                                   + "its fine-tuning and unlearning. Writes model_last.safetensors, abl_result.json and abl_log.txt."))
    var defense: TrainingDefense = .none
    @OptionGroup var abl: ABLOptions

    func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive, got \(lr)") }
        try FlagLimits.width(width, model: network.architecture)
        guard valFrac >= 0, valFrac < 1 else { throw ValidationError("--val-frac must be in [0, 1), got \(valFrac)") }
        try FlagLimits.trainLimit(trainLimit, valFrac: valFrac)
        try FlagLimits.testLimit(testLimit)
        _ = try parseMilestones(milestones)
        if resume && overwrite { throw ValidationError("--resume continues the run in --output-dir, --overwrite replaces it: choose one") }
        // Before the data is read: the attack's own settings, named by their flags.
        try attack.settings(seed: seed).validateNamingFlags()
        try validateDefense()
    }

    /// Everything besides `TrainingConfig` that changes the trained model, by flag: a resumed
    /// run must match all of it (a BadNets state resumed as Blend made a hybrid model).
    var resultSettings: [String: String] {
        var settings = ["--poison-type": attack.poisonType.rawValue, "--val-frac": "\(valFrac)",
                        "--train-limit": trainLimit.map(String.init) ?? "all", "--test-limit": testLimit.map(String.init) ?? "all",
                        "--split-file": data.splitFile ?? "seeded", "--conv-algorithm": (compute.convAlgorithm ?? Workload.training.defaultAlgorithm).rawValue]
        if attack.poisonType != .benign {
            settings["--poison-target"] = "\(attack.poisonTarget)"
            settings["--poison-rate"] = "\(attack.poisonRate)"
            settings["--trigger-alpha"] = attack.triggerAlpha.map { "\($0)" } ?? "default"
            settings["--trigger-pattern"] = attack.triggerPattern ?? "seeded"
        }
        if attack.poisonType == .cleanLabel { settings["--clb-dir"] = attack.clbDir }
        settings.merge(attack.resultSettings) { $1 }
        return settings
    }

    /// Refuses to mix two runs in one folder, before the data step writes anything there.
    func checkOutputFolder(_ config: TrainingConfig) throws {
        let folder = TrainingFolder(path: outputDir)
        if resume {
            try folder.prepareResume(config: config, settings: resultSettings)
        } else {
            try folder.prepareFresh(overwrite: overwrite)
        }
    }

    func run() throws {
        if defense == .abl { return try runABL() }
        var config = TrainingConfig()
        config.epochs = epochs
        config.batchSize = batchSize
        config.learningRate = lr
        config.milestones = try parseMilestones(milestones)
        config.architecture = network.architecture.rawValue
        config.width = network.width(width)
        config.seed = seed
        config.augment = augment
        try checkOutputFolder(config)

        let prepared = try ExperimentData.prepare(data: data, attack: attack, valFrac: valFrac, trainLimit: trainLimit,
                                                  testLimit: testLimit, batchSize: batchSize, seed: seed, outputDirectory: outputDir,
                                                  quiet: quiet, backend: { try compute.backend(for: .inference) })
        let trainer = try Trainer(config: config, trainSet: prepared.train, cleanTest: prepared.cleanTest,
                                  poisonTest: prepared.poisonTest, outputDirectory: outputDir,
                                  backend: compute.backend(for: .training))
        trainer.quiet = quiet
        trainer.checkpointMetadata = ["poison_type": attack.poisonType.rawValue]
        trainer.runSettings = resultSettings
        trainer.batchPoisoning = prepared.batchAttack
        let settings = attack.settings(seed: seed)
        let inputAware = try settings.inputAwareTraining(trainSet: prepared.train, batchSize: batchSize, augment: augment,
                                                         on: trainer.model.backend)
        trainer.jointAttack = inputAware
        if !quiet {
            print("training \(trainer.model.description) (\(trainer.model.parameterCount) parameters) on \(prepared.train.count) images"
                + " (\(prepared.poisonedCount) poisoned), \(trainer.model.backend.summary)")
        }
        try trainer.run(resume: resume)
        if let inputAware {
            // The trigger is what training made: its information is written once the generators are trained.
            try settings.triggerInfo(trained: inputAware.attack).write(path: outputDir + "/" + TriggerInfo.fileName)
        }
        if !quiet { print("model: \(trainer.modelPath)") }
    }
}
