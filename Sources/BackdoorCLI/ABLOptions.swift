import ArgumentParser
import Attacks
import Backend
import Datasets
import Defenses
import Experiments
import Foundation
import Models
import Support
import Training

/// `train --defense`: a defense applied while training.
enum TrainingDefense: String, ExpressibleByArgument, CaseIterable {
    case none, abl
}

/// ABL's settings as `train` flags (defaults: BackdoorBench's config/defense/abl). Each flag is a
/// setting of `ABLSettings`, named alike (`--isolation-ratio` is isolation_ratio).
struct ABLOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "abl: epochs of the isolation phase, trained with local gradient ascent (BackdoorBench's tuning_epochs, 20).")
    var isolationEpochs: Int?
    @Option(help: "abl: learning rate of the isolation phase (BackdoorBench's lr, 0.01).") var isolationLr: Double?
    @Option(help: "abl: flood level of the isolation loss sign(L - gamma) L (0.5).") var gamma: Double?
    @Option(help: "abl: share of the training images isolated, those of lowest loss (0.01).") var isolationRatio: Double?
    @Option(parsing: .unconditional, help: "abl: epochs of training on the other images (60; 0 skips it).") var finetuningEpochs: Int?
    @Option(help: "abl: learning rate of that training (0.01).") var finetuningLr: Double?
    @Option(parsing: .unconditional, help: "abl: epoch of that training from which its learning rate is x0.1 (40).") var finetuningMilestone: Int?
    @Option(parsing: .unconditional, help: "abl: epochs of gradient ascent on the isolated images (20; 0 skips it).") var unlearningEpochs: Int?
    @Option(help: "abl: learning rate of the unlearning (the reference's 1e-4).") var unlearningLr: Double?
    @Option(parsing: .unconditional, help: "abl: batch size of every phase (256).") var ablBatchSize: Int?
    @Option(help: "abl: SGD weight decay of every phase (1e-4).") var ablWeightDecay: Double?

    /// (flag, setting, value) of each flag given.
    var given: [(flag: String, key: String, value: Double)] {
        let all: [(String, String, Double?)] = [
            ("--isolation-epochs", "isolation_epochs", isolationEpochs.map(Double.init)), ("--isolation-lr", "isolation_lr", isolationLr),
            ("--gamma", "gamma", gamma), ("--isolation-ratio", "isolation_ratio", isolationRatio),
            ("--finetuning-epochs", "finetuning_epochs", finetuningEpochs.map(Double.init)), ("--finetuning-lr", "finetuning_lr", finetuningLr),
            ("--finetuning-milestone", "finetuning_milestone", finetuningMilestone.map(Double.init)),
            ("--unlearning-epochs", "unlearning_epochs", unlearningEpochs.map(Double.init)), ("--unlearning-lr", "unlearning_lr", unlearningLr),
            ("--abl-batch-size", "batch_size", ablBatchSize.map(Double.init)), ("--abl-weight-decay", "weight_decay", ablWeightDecay),
        ]
        return all.compactMap { flag, key, value in value.map { (flag, key, $0) } }
    }

    /// The settings, with `augment` from `train --augment`; a value out of range names its flag.
    func settings(augment: Bool, seed: UInt64) throws -> ABLSettings {
        var overrides = Dictionary(uniqueKeysWithValues: given.map { ($0.key, $0.value) })
        overrides["augment"] = augment ? 1 : 0
        do { return try ABLSettings(overrides: overrides, seed: seed) } catch let error as DefenseSettingError {
            if let key = error.key, let value = error.value, let flag = given.first(where: { $0.key == key })?.flag {
                throw ValidationError("\(flag) \(String(format: "%g", value)) \(error.message)")
            }
            throw ValidationError(error.description)
        }
    }
}

extension TrainCommand {
    func validateDefense() throws {
        guard defense == .abl else {
            if let flag = abl.given.first?.flag { throw ValidationError("\(flag) is a setting of --defense abl, not of --defense none") }
            return
        }
        _ = try abl.settings(augment: augment, seed: seed)
        if resume { throw ValidationError("--defense abl runs its phases in one go; --resume is for plain training") }
        if attack.poisonType.poisonsPerBatch {
            throw ValidationError("--defense abl isolates poisoned images of a fixed training set; --poison-type "
                + "\(attack.poisonType.rawValue) poisons each batch as it is drawn, so there are none to isolate")
        }
    }

    /// ABL instead of plain training: model_last.safetensors, abl_result.json and abl_log.txt in --output-dir.
    func runABL() throws {
        let settings = try abl.settings(augment: augment, seed: seed)
        try TrainingFolder(path: outputDir).prepareFresh(overwrite: overwrite)
        let (prepared, truth) = try ExperimentData.prepareWithTruth(data: data, attack: attack, valFrac: valFrac, trainLimit: trainLimit,
                                                                    testLimit: testLimit, batchSize: settings.batchSize, seed: seed,
                                                                    outputDirectory: outputDir, quiet: quiet,
                                                                    backend: { try compute.backend(for: .inference) })
        let model = try network.architecture.model(width: network.width(width), seed: seed, on: compute.backend(for: .training))
        let triggered = try prepared.triggerInfo.map {
            try Poisoning.triggeredTestSet(prepared.cleanTest, trigger: $0.trigger, target: $0.target)
        }
        if !quiet {
            print("abl: training \(model.description) (\(model.parameterCount) parameters) on \(prepared.train.count) images"
                + " (\(prepared.poisonedCount) poisoned), \(model.backend.summary)")
        }
        var lines: [String] = []
        let logPath = (outputDir as NSString).appendingPathComponent("abl_log.txt")
        let result = try AntiBackdoorLearning.train(model, on: prepared.train, truth: truth, cleanTest: prepared.cleanTest,
                                                    poisonTest: prepared.poisonTest, triggered: triggered, settings: settings) { line in
            if !quiet { print(line) }
            lines.append(line)
            try AtomicFile.write(lines.joined(separator: "\n") + "\n", to: logPath)
        }
        let modelPath = (outputDir as NSString).appendingPathComponent(TrainingFolder.modelName)
        try Checkpoint.save(model, to: modelPath, extraMetadata: ["poison_type": attack.poisonType.rawValue, "defense": "abl"])
        try result.write(to: outputDir)
        if !quiet { print("model: \(modelPath)\nresult: \((outputDir as NSString).appendingPathComponent(ABLResult.fileName))") }
    }
}

extension ExperimentData {
    /// `prepare`, and which training images the attack changed (pixels or label) against the clean
    /// attacker split: the truth ABL's isolation is scored by.
    static func prepareWithTruth(data: DataOptions, attack: AttackOptions, valFrac: Double, trainLimit: Int?, testLimit: Int?,
                                 batchSize: Int, seed: UInt64, outputDirectory: String, quiet: Bool,
                                 backend: () throws -> Backend) throws -> (ExperimentData, [Bool]) {
        let (prepared, dataset, permutation) = try prepareFull(data: data, attack: attack, valFrac: valFrac, trainLimit: trainLimit,
                                                               testLimit: testLimit, batchSize: batchSize, seed: seed,
                                                               outputDirectory: outputDirectory, quiet: quiet, backend: backend)
        // The training set is the attacker split's first images in order (clean-label keeps that order too).
        let attacker = DataSplit(permutation: permutation, valFrac: valFrac).attacker.prefix(prepared.train.count)
        let truth = zip(0..<prepared.train.count, attacker).map { i, original in
            prepared.train.labels[i] != dataset.train.labels[original] || prepared.train.image(i) != dataset.train.image(original)
        }
        return (prepared, truth)
    }
}
