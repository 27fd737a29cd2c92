import ArgumentParser
import Attacks
import Datasets
import Foundation
import NN
import Models
import Support
import Training

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a ResNet-18 on (possibly poisoned) CIFAR-10, logging clean accuracy and ASR per epoch.")

    @OptionGroup var compute: ComputeOptions
    @OptionGroup var data: DataOptions
    @OptionGroup var attack: AttackOptions

    @Option(help: "Epochs.") var epochs = 50
    @Option(help: "Batch size.") var batchSize = 128
    @Option(help: "Initial learning rate.") var lr: Float = 0.1
    @Option(help: "Epochs at which the learning rate is multiplied by 0.1, comma-separated.") var milestones = "30,40"
    @Option(help: "Base width of the ResNet-18 (64 is the real model; 32 and 16 are CPU-sized).") var width = 64
    @Option(help: "Seed for initialisation, shuffling, augmentation and poisoning.") var seed: UInt64 = 0
    @Option(help: "Fraction of the training set kept as the defender's clean split.") var valFrac = 0.1
    @Option(help: "Train on the first N images of the attacker's split only (quick runs).") var trainLimit: Int?
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @Option(help: "Output folder (models, logs, trigger information).") var outputDir = "runs/train"
    @Flag(help: "Continue from the last completed epoch of an interrupted run in --output-dir.") var resume = false
    @Flag(help: "No progress bars or per-epoch lines.") var quiet = false

    func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive, got \(lr)") }
        guard width >= 1 else { throw ValidationError("--width must be at least 1, got \(width)") }
        guard valFrac >= 0, valFrac < 1 else { throw ValidationError("--val-frac must be in [0, 1), got \(valFrac)") }
        if let trainLimit, trainLimit < 1 { throw ValidationError("--train-limit must be at least 1, got \(trainLimit)") }
        if let testLimit, testLimit < 1 { throw ValidationError("--test-limit must be at least 1, got \(testLimit)") }
        _ = try parseMilestones(milestones)
    }

    func run() throws {
        var config = TrainingConfig()
        config.epochs = epochs
        config.batchSize = batchSize
        config.learningRate = lr
        config.milestones = try parseMilestones(milestones)
        config.width = width
        config.seed = seed

        let prepared = try ExperimentData.prepare(data: data, attack: attack, valFrac: valFrac, trainLimit: trainLimit,
                                                  testLimit: testLimit, seed: seed, outputDirectory: outputDir,
                                                  quiet: quiet)
        let trainer = try Trainer(config: config, trainSet: prepared.train, cleanTest: prepared.cleanTest,
                                  poisonTest: prepared.poisonTest, outputDirectory: outputDir,
                                  backend: compute.backend(for: .training))
        trainer.quiet = quiet
        trainer.checkpointMetadata = ["poison_type": attack.poisonType.rawValue]
        if !quiet {
            print("training ResNet-18 width \(width) (\(trainer.model.parameterCount) parameters) on \(prepared.train.count) images"
                + " (\(prepared.poisonedCount) poisoned), \(trainer.model.backend.summary)")
        }
        try trainer.run(resume: resume)
        if !quiet { print("model: \(trainer.modelPath)") }
    }
}
