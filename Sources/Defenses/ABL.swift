import Datasets
import Foundation
import NN
import Support
import Training

/// Settings of Anti-Backdoor Learning (Li et al., NeurIPS 2021) with the defaults of BackdoorBench's
/// defense/abl.py and config/defense/abl/cifar10.yaml. Named numbers like the defenses' settings, so
/// the CLI, config files and the experiment runner set them one way.
public struct ABLSettings: Equatable {
    /// Epochs of the isolation phase, with local gradient ascent (BackdoorBench: tuning_epochs).
    public var isolationEpochs = 20
    /// Its constant learning rate (BackdoorBench: lr).
    public var isolationLearningRate: Float = 0.01
    /// The flood level of the isolation loss: batches whose mean CE is below it are ascended (gamma / flooding).
    public var gamma: Float = 0.5
    /// Share of the training set isolated: the images of lowest loss after isolation.
    public var isolationRatio = 0.01
    /// Epochs of training on the other images (finetuning_epochs; 0 skips it, finetuning_ascent_model False).
    public var finetuningEpochs = 60
    /// The reference's learning_rate_finetuning: 0.01, times 0.1 from epoch 40 (its lr_finetuning_init is unused).
    public var finetuningLearningRate: Float = 0.01
    public var finetuningMilestone = 40
    /// Epochs of gradient ascent on the isolated images.
    public var unlearningEpochs = 20
    /// The reference's learning_rate_unlearning: 1e-4 throughout (its lr_unlearning_init 5e-4 is unused).
    public var unlearningLearningRate: Float = 1e-4
    public var batchSize = 256
    public var momentum: Float = 0.9
    public var weightDecay: Float = 1e-4
    /// Random crop and flip while fine-tuning and unlearning (the reference's train transform;
    /// isolation always sees the plain images, its test transform).
    public var augment = true
    public var seed: UInt64 = 0

    public init() {}

    public static let name = "abl"

    public static let defaults: [String: Double] = ABLSettings().settings

    public var settings: [String: Double] {
        ["isolation_epochs": Double(isolationEpochs), "isolation_lr": Double(isolationLearningRate), "gamma": Double(gamma),
         "isolation_ratio": isolationRatio, "finetuning_epochs": Double(finetuningEpochs),
         "finetuning_lr": Double(finetuningLearningRate), "finetuning_milestone": Double(finetuningMilestone),
         "unlearning_epochs": Double(unlearningEpochs), "unlearning_lr": Double(unlearningLearningRate),
         "batch_size": Double(batchSize), "momentum": Double(momentum), "weight_decay": Double(weightDecay),
         "augment": augment ? 1 : 0]
    }

    /// The settings named by `overrides` over the defaults, checked; an unknown key or a value out
    /// of range is an error naming it and what is expected.
    public init(overrides: [String: Double], seed: UInt64) throws {
        for key in overrides.keys.sorted() where Self.defaults[key] == nil {
            throw DefenseSettingError("\(key) is not a setting of abl; its settings are "
                + Self.defaults.keys.sorted().joined(separator: ", "))
        }
        let s = Self.defaults.merging(overrides) { $1 }
        func whole(_ key: String, atLeast minimum: Int) throws -> Int {
            let value = s[key]!
            guard value >= Double(minimum), value == value.rounded(), value < 1e9 else {
                throw DefenseSettingError.outOfRange(Self.name, key, value, expected: "a whole number at least \(minimum)")
            }
            return Int(value)
        }
        func positive(_ key: String) throws -> Float {
            guard s[key]! > 0, s[key]!.isFinite else {
                throw DefenseSettingError.outOfRange(Self.name, key, s[key]!, expected: "a positive number")
            }
            return Float(s[key]!)
        }
        isolationEpochs = try whole("isolation_epochs", atLeast: 1)
        finetuningEpochs = try whole("finetuning_epochs", atLeast: 0)
        finetuningMilestone = try whole("finetuning_milestone", atLeast: 0)
        unlearningEpochs = try whole("unlearning_epochs", atLeast: 0)
        batchSize = try whole("batch_size", atLeast: 1)
        isolationLearningRate = try positive("isolation_lr")
        finetuningLearningRate = try positive("finetuning_lr")
        unlearningLearningRate = try positive("unlearning_lr")
        guard s["gamma"]! >= 0, s["gamma"]!.isFinite else {
            throw DefenseSettingError.outOfRange(Self.name, "gamma", s["gamma"]!, expected: "a number at least 0")
        }
        gamma = Float(s["gamma"]!)
        guard s["isolation_ratio"]! > 0, s["isolation_ratio"]! < 1 else {
            throw DefenseSettingError.outOfRange(Self.name, "isolation_ratio", s["isolation_ratio"]!, expected: "a number in (0, 1)")
        }
        isolationRatio = s["isolation_ratio"]!
        guard (0...1).contains(s["momentum"]!) else {
            throw DefenseSettingError.outOfRange(Self.name, "momentum", s["momentum"]!, expected: "a number in [0, 1]")
        }
        momentum = Float(s["momentum"]!)
        guard s["weight_decay"]! >= 0, s["weight_decay"]!.isFinite else {
            throw DefenseSettingError.outOfRange(Self.name, "weight_decay", s["weight_decay"]!, expected: "a number at least 0")
        }
        weightDecay = Float(s["weight_decay"]!)
        guard [0, 1].contains(s["augment"]!) else {
            throw DefenseSettingError.outOfRange(Self.name, "augment", s["augment"]!, expected: "0 or 1")
        }
        augment = s["augment"]! == 1
        self.seed = seed
    }
}

/// One phase of an ABL run: its last epoch's training loss and accuracy and the model's test metrics after it.
public struct ABLPhase: Codable, Equatable {
    public var name: String
    public var epochs: Int
    /// The images the phase trained on.
    public var images: Int
    /// Mean cross-entropy and accuracy of its last epoch's training-mode forwards (nil without epochs).
    public var trainLoss: Double?
    public var trainAccuracy: Double?
    public var metrics: DefenseMetrics
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case name, epochs, images, metrics, seconds
        case trainLoss = "train_loss", trainAccuracy = "train_acc"
    }
}

/// Which images the isolation phase set apart, and, where the truth is known, how many were poisoned.
public struct ABLIsolation: Codable, Equatable {
    /// Training-set indices of the isolated images, ascending.
    public var isolated: [Int]
    /// The largest loss among them.
    public var lossThreshold: Double
    /// Poisoned images in the whole training set (nil: truth unknown).
    public var poisonedImages: Int?
    /// The isolation scored as a detection: precision is the share of isolated images that were
    /// poisoned, recall the share of poisoned images isolated, AUROC that of the negated loss.
    public var metrics: DetectionMetrics?

    enum CodingKeys: String, CodingKey {
        case isolated, metrics
        case lossThreshold = "loss_threshold", poisonedImages = "poisoned_images"
    }
}

/// abl_result.json: one schema for the writer and any reader.
public struct ABLResult: Codable, Equatable {
    public var settings: [String: Double]
    public var images: Int
    public var isolation: ABLIsolation
    /// isolation, finetuning, unlearning (in that order; phases with no epochs are left out).
    public var phases: [ABLPhase]
    public var seconds: Double

    public static let fileName = "abl_result.json"

    /// The metrics after the last phase: the defended model's.
    public var final: DefenseMetrics { phases.last!.metrics }

    public func write(to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try encoder.encode(self), as: UTF8.self) + "\n",
                             to: (directory as NSString).appendingPathComponent(Self.fileName))
    }

    public static func read(path: String) throws -> ABLResult {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read the ABL result") }
        do { return try JSONDecoder().decode(ABLResult.self, from: data) } catch {
            throw FileError(path, "is not an \(fileName): \(error)")
        }
    }
}

/// Anti-Backdoor Learning: trains a model on a poisoned training set so that it ends without the
/// backdoor. Poisoned images are learned faster than clean ones, so after a few epochs whose loss is
/// held near gamma (local gradient ascent) they are among the lowest-loss images; those are set
/// apart, the model trains on the rest, then ascends the loss of the set-apart images.
public enum AntiBackdoorLearning {
    /// Trains `model` (freshly initialised) in place on `trainSet` through the three phases and
    /// returns what it did. `truth` (which training images are poisoned) only scores the isolation.
    /// The test sets judge the model after each phase; `poisonTest` (ASR) and `triggered` (robust
    /// accuracy) may be nil for a clean run.
    public static func train(_ model: Model, on trainSet: ImageSet, truth: [Bool]?, cleanTest: ImageSet, poisonTest: ImageSet?,
                             triggered: ImageSet?, settings: ABLSettings, log: (String) throws -> Void) throws -> ABLResult {
        let start = Date()
        if let truth, truth.count != trainSet.count {
            throw DefenseError("abl: the truth names \(truth.count) images, the training set has \(trainSet.count)")
        }
        let isolatedCount = Int(Double(trainSet.count) * settings.isolationRatio)
        guard isolatedCount >= 1 else {
            throw DefenseError("abl: isolation_ratio \(settings.isolationRatio) of \(trainSet.count) training images isolates none; "
                + "expected a ratio of at least 1/\(trainSet.count)")
        }
        var phases: [ABLPhase] = []
        func judge(_ name: String, epochs: Int, images: Int, last: CleanEpoch.Outcome?, since: Date) throws {
            let metrics = try DefenseMetrics.evaluate(model, clean: cleanTest, poison: poisonTest, triggered: triggered)
            phases.append(ABLPhase(name: name, epochs: epochs, images: images, trainLoss: last?.loss, trainAccuracy: last?.accuracy,
                                   metrics: metrics, seconds: Date().timeIntervalSince(since)))
            try log("abl: after \(name): " + describe(metrics))
        }

        // Isolation: the plain images (no augmentation), loss held at gamma.
        var phaseStart = Date()
        let isolationSGD = optimiser(settings, learningRate: settings.isolationLearningRate)
        let isolationLoader = BatchLoader(images: trainSet, batchSize: settings.batchSize, shuffle: true, augment: false,
                                          seed: settings.seed)
        var last: CleanEpoch.Outcome?
        for epoch in 0..<settings.isolationEpochs {
            last = try epochLogged("isolation", model, isolationLoader, epoch: epoch, of: settings.isolationEpochs,
                                   sgd: isolationSGD, flood: settings.gamma, log: log)
        }
        let losses = try Evaluation.losses(model, on: trainSet)
        let isolated = isolate(losses: losses, count: isolatedCount)
        let isolation = score(isolated: isolated, losses: losses, truth: truth)
        try log("abl: isolated \(isolated.count) of \(trainSet.count) images (loss <= \(String(format: "%.4g", isolation.lossThreshold)))"
            + (isolation.metrics.map { ", \($0.truePositives) of them poisoned: precision \(String(format: "%.4f", $0.precision))" } ?? ""))
        try judge("isolation", epochs: settings.isolationEpochs, images: trainSet.count, last: last, since: phaseStart)

        // The reference's second optimiser serves fine-tuning and unlearning (momentum carries over).
        let sgd = optimiser(settings, learningRate: settings.finetuningLearningRate)
        let isolatedSet = Set(isolated)
        let others = trainSet.subset(trainSet.labels.indices.filter { !isolatedSet.contains($0) })
        if settings.finetuningEpochs > 0 {
            phaseStart = Date()
            let schedule = MultiStepSchedule(baseLearningRate: settings.finetuningLearningRate, milestones: [settings.finetuningMilestone])
            let loader = BatchLoader(images: others, batchSize: settings.batchSize, shuffle: true, augment: settings.augment,
                                     seed: settings.seed)
            for epoch in 0..<settings.finetuningEpochs {
                sgd.learningRate = schedule.learningRate(epoch: epoch)
                last = try epochLogged("finetuning", model, loader, epoch: epoch, of: settings.finetuningEpochs, sgd: sgd, log: log)
            }
            try judge("finetuning", epochs: settings.finetuningEpochs, images: others.count, last: last, since: phaseStart)
        }
        if settings.unlearningEpochs > 0 {
            phaseStart = Date()
            sgd.learningRate = settings.unlearningLearningRate
            let loader = BatchLoader(images: trainSet.subset(isolated), batchSize: settings.batchSize, shuffle: true,
                                     augment: settings.augment, seed: settings.seed)
            for epoch in 0..<settings.unlearningEpochs {
                last = try epochLogged("unlearning", model, loader, epoch: epoch, of: settings.unlearningEpochs, sgd: sgd,
                                       ascend: true, log: log)
            }
            try judge("unlearning", epochs: settings.unlearningEpochs, images: isolated.count, last: last, since: phaseStart)
        }
        return ABLResult(settings: settings.settings, images: trainSet.count, isolation: isolation, phases: phases,
                         seconds: Date().timeIntervalSince(start))
    }

    /// The `count` images of lowest loss (ties: the lower index first), as ascending indices.
    static func isolate(losses: [Float], count: Int) -> [Int] {
        let order = losses.indices.sorted { (losses[$0], $0) < (losses[$1], $1) }
        return order.prefix(count).sorted()
    }

    static func score(isolated: [Int], losses: [Float], truth: [Bool]?) -> ABLIsolation {
        var flagged = [Bool](repeating: false, count: losses.count)
        for i in isolated { flagged[i] = true }
        let metrics = truth.map { DetectionMetrics(flagged: flagged, truth: $0, scores: losses.map { -Double($0) }) }
        return ABLIsolation(isolated: isolated, lossThreshold: Double(isolated.map { losses[$0] }.max() ?? 0),
                            poisonedImages: truth.map { $0.filter { $0 }.count }, metrics: metrics)
    }

    /// SGD as the reference builds it: momentum, weight decay, Nesterov.
    private static func optimiser(_ settings: ABLSettings, learningRate: Float) -> SGD {
        let sgd = SGD(learningRate: learningRate, momentum: settings.momentum, weightDecay: settings.weightDecay)
        sgd.nesterov = true
        return sgd
    }

    private static func epochLogged(_ phase: String, _ model: Model, _ loader: BatchLoader, epoch: Int, of epochs: Int, sgd: SGD,
                                    ascend: Bool = false, flood: Float? = nil, log: (String) throws -> Void) throws -> CleanEpoch.Outcome {
        let start = Date()
        let outcome = try CleanEpoch.run(model, loader: loader, epoch: epoch, sgd: sgd, ascend: ascend, flood: flood)
        try log(String(format: "abl %@: epoch %d/%d lr %.5g loss %.4f train acc %.4f (%.1f s)", phase, epoch + 1, epochs,
                       Double(sgd.learningRate), outcome.loss, outcome.accuracy, Date().timeIntervalSince(start)))
        return outcome
    }

    private static func describe(_ m: DefenseMetrics) -> String {
        func percent(_ x: Double?) -> String { x.map { String(format: "%.2f%%", 100 * $0) } ?? "n/a" }
        return "clean acc \(percent(m.cleanAccuracy)), ASR \(percent(m.attackSuccessRate)), robust acc \(percent(m.robustAccuracy))"
    }
}
