import Backend
import Datasets
import Foundation
import Formats
import Models
import NN
import Support

/// Hyper-parameters of a training run (the reference's defaults).
public struct TrainingConfig: Codable, Equatable {
    public var epochs = 50
    public var batchSize = 128
    public var learningRate: Float = 0.1
    public var milestones = [30, 40]
    public var momentum: Float = 0.9
    public var weightDecay: Float = 5e-4
    /// `Architecture`'s raw value (a checkpoint's `architecture`).
    public var architecture = Architecture.resnet18.rawValue
    /// The stem's channel count: 64 is the real ResNet-18, PreAct-ResNet18 and VGG, 32 MobileNetV2.
    public var width = 64
    public var seed: UInt64 = 0
    /// The reference's random crop and flip; off trades accuracy for a faster backdoor (a corner
    /// trigger is often cropped away), for CPU-sized runs.
    public var augment = true
    public init() {}

    enum CodingKeys: String, CodingKey {
        case epochs, batchSize, learningRate, milestones, momentum, weightDecay, architecture, width, seed, augment
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epochs = try c.decode(Int.self, forKey: .epochs)
        batchSize = try c.decode(Int.self, forKey: .batchSize)
        learningRate = try c.decode(Float.self, forKey: .learningRate)
        milestones = try c.decode([Int].self, forKey: .milestones)
        momentum = try c.decode(Float.self, forKey: .momentum)
        weightDecay = try c.decode(Float.self, forKey: .weightDecay)
        // Resume states written before the zoo trained ResNet-18.
        architecture = try c.decodeIfPresent(String.self, forKey: .architecture) ?? Architecture.resnet18.rawValue
        width = try c.decode(Int.self, forKey: .width)
        seed = try c.decode(UInt64.self, forKey: .seed)
        // Resume states written before the flag existed were augmented.
        augment = try c.decodeIfPresent(Bool.self, forKey: .augment) ?? true
    }
}

/// One row of the per-epoch log (the reference's columns).
public struct EpochRecord: Codable, Equatable {
    public var epoch: Int
    public var lr: Double
    public var time: Double
    public var trainLoss, trainAcc: Double
    public var poisonLoss, poisonAcc: Double
    public var cleanLoss, cleanAcc: Double

    enum CodingKeys: String, CodingKey {
        case epoch, lr, time
        case trainLoss = "train_loss", trainAcc = "train_acc", poisonLoss = "poison_loss", poisonAcc = "poison_acc"
        case cleanLoss = "clean_loss", cleanAcc = "clean_acc"
    }

    public static let header = "Epoch \t lr \t Time \t TrainLoss \t TrainACC \t PoisonLoss \t PoisonACC \t CleanLoss \t CleanACC"

    public var line: String {
        String(format: "%d \t %.3f \t %.1f \t %.4f \t %.4f \t %.4f \t %.4f \t %.4f \t %.4f", epoch, lr, time,
               trainLoss, trainAcc, poisonLoss, poisonAcc, cleanLoss, cleanAcc)
    }
}

public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
}

/// Trains a model of the zoo epoch by epoch with SGD and a multi-step schedule, evaluating clean accuracy
/// and attack success rate after every epoch. Writes `model_init.safetensors`,
/// `model_last.safetensors`, `train_log.txt`, `train_log.jsonl` and, after each completed epoch,
/// `resume_state.safetensors` so `resume` continues exactly where an interrupted run stopped.
public final class Trainer {
    public let config: TrainingConfig
    public let model: Model
    /// The optimiser and its momentum buffers, kept across epochs and in the resume state.
    public let sgd: SGD
    public let trainSet: ImageSet
    public let cleanTest: ImageSet
    public let poisonTest: ImageSet?
    public let outputDirectory: String
    public var quiet = false
    public var checkpointMetadata: [String: String] = [:]
    /// Settings outside `config` that change the result (attack, data limits), by flag name:
    /// stored in the resume state, and a resumed run must have the same.
    public var runSettings: [String: String] = [:]
    /// Called after each epoch's checkpoint (for progress in a larger pipeline); an error thrown
    /// here stops training as an interruption would, leaving a resumable state.
    public var onEpoch: ((EpochRecord) throws -> Void)?
    /// WaNet and BPP poison each batch as it is drawn rather than the training set once.
    public var batchPoisoning: BatchPoisoning?
    /// Input-aware trains its generators with the classifier: it remakes each batch and learns
    /// from the classifier's input gradient; its poisoned test set is remade after each epoch.
    public var jointAttack: JointTrainingAttack?

    public var modelPath: String { outputDirectory + "/model_last.safetensors" }
    var resumePath: String { outputDirectory + "/resume_state.safetensors" }

    /// The model is built on `backend`; its options (e.g. oneDNN's convolution algorithm) are the
    /// caller's choice (Winograd's scratch memory would push a width-64 batch-128 step past 1 GiB).
    public init(config: TrainingConfig, trainSet: ImageSet, cleanTest: ImageSet, poisonTest: ImageSet?,
                outputDirectory: String, backend: Backend) throws {
        self.config = config
        self.trainSet = trainSet
        self.cleanTest = cleanTest
        self.poisonTest = poisonTest
        self.outputDirectory = outputDirectory
        guard let architecture = Architecture(rawValue: config.architecture) else {
            throw TrainingError(description: "unknown architecture \"\(config.architecture)\"; expected one of "
                + ModelZoo.architectures.joined(separator: ", "))
        }
        model = try architecture.model(width: config.width, seed: config.seed, on: backend)
        sgd = SGD(learningRate: config.learningRate, momentum: config.momentum, weightDecay: config.weightDecay)
    }

    /// Runs the remaining epochs; returns every epoch's record (resumed ones included).
    @discardableResult
    public func run(resume: Bool = false) throws -> [EpochRecord] {
        try Folder.create(outputDirectory)
        var records: [EpochRecord] = []
        var startEpoch = 0
        if resume, FileManager.default.fileExists(atPath: resumePath) {
            (startEpoch, records) = try restore()
            say("resuming after epoch \(startEpoch) of \(config.epochs)")
        } else {
            try Checkpoint.save(model, to: outputDirectory + "/model_init.safetensors", extraMetadata: checkpointMetadata)
        }
        let jsonLog = try JSONLinesWriter(path: outputDirectory + "/train_log.jsonl", truncate: true)
        for record in records { try jsonLog.append(record.dictionary) }
        var logText = EpochRecord.header + "\n" + records.map { $0.line + "\n" }.joined()
        try AtomicFile.write(logText, to: outputDirectory + "/train_log.txt")
        say(EpochRecord.header)
        for record in records { say(record.line) }

        let schedule = MultiStepSchedule(baseLearningRate: config.learningRate, milestones: config.milestones)
        let loader = BatchLoader(images: trainSet, batchSize: config.batchSize, shuffle: true, augment: config.augment,
                                 seed: config.seed)
        loader.poisoning = batchPoisoning
        if startEpoch == 0 { try jointAttack?.prepare(log: say) }
        for epoch in startEpoch..<config.epochs {
            let start = Date()
            let lr = schedule.learningRate(epoch: epoch)
            sgd.learningRate = lr
            let progress = ProgressBar(total: trainSet.count, label: "epoch \(epoch + 1)/\(config.epochs)", quiet: quiet)
            var lossSum = 0.0, correct = 0, seen = 0
            for (number, clean) in loader.epoch(epoch).enumerated() {
                let batch = try jointAttack?.trainingBatch(clean, epoch: epoch, number: number) ?? clean
                let logits = try model.forward(images: batch.images, count: batch.count, mode: .training)
                let ce = CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: model.numClasses)
                guard ce.meanLoss.isFinite else {
                    throw divergence(loss: ce.meanLoss, epoch: epoch + 1, images: seen, learningRate: lr)
                }
                if let gradient = try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true,
                                                     wantInputGradient: jointAttack != nil) {
                    try jointAttack?.learn(inputGradient: gradient, epoch: epoch)
                }
                try sgd.step(model.parameters)
                lossSum += Double(ce.meanLoss) * Double(batch.count)
                correct += ce.correct
                seen += batch.count
                progress.suffix = String(format: "loss %.4f acc %.4f", lossSum / Double(seen), Double(correct) / Double(seen))
                progress.update(to: seen)
            }
            progress.finish()
            let poison = try (jointAttack.map { try $0.poisonTest(from: cleanTest) } ?? poisonTest).map {
                try Evaluation.evaluate(model, on: $0)
            }
            let clean = try Evaluation.evaluate(model, on: cleanTest)
            let record = EpochRecord(epoch: epoch + 1, lr: Double(lr), time: Date().timeIntervalSince(start),
                                     trainLoss: lossSum / Double(max(seen, 1)), trainAcc: Double(correct) / Double(max(seen, 1)),
                                     poisonLoss: poison?.loss ?? 0, poisonAcc: poison?.accuracy ?? 0,
                                     cleanLoss: clean.loss, cleanAcc: clean.accuracy)
            records.append(record)
            try Checkpoint.save(model, to: modelPath, extraMetadata: checkpointMetadata)
            try saveResumeState(completedEpochs: epoch + 1, records: records)
            try jsonLog.append(record.dictionary)
            logText += record.line + "\n"
            try AtomicFile.write(logText, to: outputDirectory + "/train_log.txt")
            say(record.line)
            try onEpoch?(record)
        }
        return records
    }

    private func say(_ line: String) {
        if !quiet { print(line) }
    }

    /// Model, momentum buffers and the log so far, written atomically after each epoch.
    private func saveResumeState(completedEpochs: Int, records: [EpochRecord]) throws {
        var tensors = try model.stateDict()
        for (k, v) in try sgd.state(model.parameters) { tensors[k] = v }
        tensors.merge(try jointAttack?.trainingState().prefixed(Self.jointPrefix) ?? [:]) { $1 }
        let log = String(decoding: try JSONEncoder().encode(records), as: UTF8.self)
        let configText = String(decoding: try JSONEncoder().encode(config), as: UTF8.self)
        let settings = String(decoding: try JSONEncoder().encode(runSettings), as: UTF8.self)
        let state = SafeTensors(tensors: tensors, metadata: ["completed_epochs": String(completedEpochs), "records": log,
                                                            "config": configText, TrainingFolder.settingsKey: settings])
        try TrainingFolder.sealed(state).write(path: resumePath)
        try TrainingFolder(path: outputDirectory).writeManifest(completedEpochs: completedEpochs)
    }

    /// The error of a diverged step, naming the last saved model only when there is one.
    private func divergence(loss: Float, epoch: Int, images: Int, learningRate: Float) -> TrainingError {
        let saved = TrainingFolder(path: outputDirectory).manifestEpoch(matching: TrainingFolder.modelName)
        let model = saved.map { "The last good model is \(modelPath) (after epoch \($0))." }
            ?? "No epoch completed, so there is no trained model; try a lower --lr."
        return TrainingError(description: "loss became \(loss) in epoch \(epoch) after \(images) images "
            + "(learning rate \(learningRate)); stopped. " + model)
    }

    private func restore() throws -> (Int, [EpochRecord]) {
        // What a kill during a write left (`backdoor run --resume` comes here without the CLI's check).
        AtomicFile.removeStaleTemporaries(in: outputDirectory)
        let file = try SafeTensors.read(path: resumePath)
        try TrainingFolder.verify(file, source: resumePath)
        try TrainingFolder.checkSameSettings(stored: file.metadata, config: config, settings: runSettings, source: resumePath)
        guard let completed = file.metadata["completed_epochs"].flatMap(Int.init),
              let log = file.metadata["records"],
              let records = try? JSONDecoder().decode([EpochRecord].self, from: Data(log.utf8)) else {
            throw FileError(resumePath, "resume state lacks completed_epochs or records")
        }
        let modelTensors = file.tensors.filter { !$0.key.hasPrefix("momentum.") && !$0.key.hasPrefix(Self.jointPrefix) }
        try model.load(stateDict: modelTensors, source: resumePath)
        try sgd.restore(model.parameters, from: file.tensors)
        if let jointAttack {
            let own = file.tensors.under(Self.jointPrefix)
            guard !own.isEmpty else {
                throw FileError(resumePath, "holds no state of the attack's own networks (joint.*), which this run trains; "
                    + "train afresh with --overwrite")
            }
            try jointAttack.restoreTrainingState(own, source: resumePath)
        }
        return (completed, records)
    }

    /// The resume state's keys of a jointly trained attack (Input-aware's generators and Adam states).
    static let jointPrefix = "joint."
}

extension EpochRecord {
    public var dictionary: [String: Any] {
        ["epoch": epoch, "lr": lr, "time": time, "train_loss": trainLoss, "train_acc": trainAcc,
         "poison_loss": poisonLoss, "poison_acc": poisonAcc, "clean_loss": cleanLoss, "clean_acc": cleanAcc]
    }
}
