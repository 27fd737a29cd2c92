import Datasets
import Foundation
import Models
import NN

/// Settings of a fine-tuning run on the defender's clean images (FT, FP, NAD and FST share the loop).
public struct FineTuningConfig: Equatable {
    public enum Schedule: String, Equatable {
        /// PyTorch's CosineAnnealingLR stepped per epoch (T_max: `cosineTMax`).
        case cosine
        /// The learning rate throughout (NAD's student: the reference's adjust_learning_rate at lr 0.01).
        case constant
    }

    public var epochs: Int
    public var batchSize: Int
    public var learningRate: Float
    public var momentum: Float = 0.9
    public var weightDecay: Float
    public var schedule: Schedule = .cosine
    /// The cosine schedule's T_max; nil: `epochs`. BackdoorBench hard-codes 100 (its default epochs).
    public var cosineTMax: Int?
    /// The reference's random crop (padding 4) and horizontal flip.
    public var augment = true
    /// The loss's label smoothing (`CrossEntropy`'s; FT-SAM's 0.1).
    public var labelSmoothing: Float = 0
    /// The schedule steps once per batch instead of once per epoch (FT-SAM's `scheduler.step()`).
    public var schedulePerBatch = false
    public var seed: UInt64 = 0

    public init(epochs: Int, batchSize: Int, learningRate: Float, weightDecay: Float, schedule: Schedule = .cosine) {
        (self.epochs, self.batchSize, self.learningRate, self.weightDecay, self.schedule) =
            (epochs, batchSize, learningRate, weightDecay, schedule)
    }

    /// BackdoorBench's FT and FP (config/defense/ft|fp): 100 epochs, batch 256, lr 0.01 cosine with
    /// T_max 100 (argparser_opt_scheduler's), SGD momentum 0.9, weight decay 5e-4.
    public static let backdoorBench: FineTuningConfig = {
        var config = FineTuningConfig(epochs: 100, batchSize: 256, learningRate: 0.01, weightDecay: 5e-4)
        config.cosineTMax = 100
        return config
    }()

    public func learningRate(epoch: Int) -> Float {
        switch schedule {
        case .cosine:
            return CosineSchedule(baseLearningRate: learningRate, tMax: cosineTMax ?? epochs).learningRate(epoch: epoch)
        case .constant: return learningRate
        }
    }

    public var settings: [String: Double] {
        ["epochs": Double(epochs), "batch_size": Double(batchSize), "lr": Double(learningRate),
         "momentum": Double(momentum), "weight_decay": Double(weightDecay), "augment": augment ? 1 : 0,
         "cosine_t_max": schedule == .cosine ? Double(cosineTMax ?? epochs) : 0]
    }

    /// The configuration named by `settings` (the keys of `settings` above; cosine_t_max 0 is a
    /// constant learning rate), checked.
    public init(settings: [String: Double], seed: UInt64, defense: String) throws {
        func integer(_ key: String) throws -> Int {
            let value = settings[key]!
            guard value >= 1, value == value.rounded(), value < 1e9 else {
                throw DefenseSettingError.outOfRange(defense, key, value, expected: "a whole number at least 1")
            }
            return Int(value)
        }
        self.init(epochs: try integer("epochs"), batchSize: try integer("batch_size"), learningRate: Float(settings["lr"]!),
                  weightDecay: Float(settings["weight_decay"]!), schedule: settings["cosine_t_max"]! == 0 ? .constant : .cosine)
        if schedule == .cosine { cosineTMax = try integer("cosine_t_max") }
        momentum = Float(settings["momentum"]!)
        augment = settings["augment"]! != 0
        self.seed = seed
        guard learningRate > 0, learningRate.isFinite else {
            throw DefenseSettingError.outOfRange(defense, "lr", settings["lr"]!, expected: "a positive number")
        }
        guard (0...1).contains(momentum) else {
            throw DefenseSettingError.outOfRange(defense, "momentum", settings["momentum"]!, expected: "a number in [0, 1]")
        }
        guard weightDecay >= 0, weightDecay.isFinite else {
            throw DefenseSettingError.outOfRange(defense, "weight_decay", settings["weight_decay"]!, expected: "a number at least 0")
        }
    }
}

/// An extra term of the fine-tuning loss, with the hooks it needs around each SGD step.
public protocol FineTuningTerm: AnyObject {
    /// Modules whose outputs the term reads (taps of the model's forward).
    var taps: [String] { get }
    /// The term's value on this batch and its gradients into the tapped outputs.
    func loss(features: [String: [Float]], batch: Batch) throws -> (value: Double, tapGradients: [String: [Float]])
    /// Adds the term's gradients with respect to parameters (after the model's backward).
    func addParameterGradients() throws
    /// Runs after each SGD step (projections, masks).
    func afterStep() throws
}

extension FineTuningTerm {
    public var taps: [String] { [] }
    public func loss(features: [String: [Float]], batch: Batch) throws -> (value: Double, tapGradients: [String: [Float]]) {
        (0, [:])
    }
    public func addParameterGradients() throws {}
    public func afterStep() throws {}
}

/// One epoch of fine-tuning, for the log.
public struct FineTuningEpoch: Equatable {
    public var epoch: Int
    public var learningRate: Float
    public var loss: Double
    public var extraLoss: Double
    public var accuracy: Double
    public var seconds: Double

    public var line: String {
        String(format: "lr %.5f loss %.4f (extra terms %.4f) train acc %.4f (%.1f s)", learningRate, loss, extraLoss,
               accuracy, seconds)
    }
}

public struct DefenseError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum FineTuning {
    /// Fine-tunes `model` in place on `clean` with cross-entropy plus `terms`; logs one line per
    /// epoch prefixed by `label`. With `sharpness`, each step takes the gradient at the weights
    /// SAM perturbs towards the loss's local maximum (a second forward and backward per batch).
    @discardableResult
    public static func run(_ model: Model, on clean: ImageSet, config: FineTuningConfig, terms: [FineTuningTerm] = [],
                           sharpness: SharpnessAwareMinimisation? = nil, label: String,
                           log: (String) throws -> Void) throws -> [FineTuningEpoch] {
        guard clean.count > 0 else { throw DefenseError("\(label): the defender has no clean images to fine-tune on") }
        let sgd = SGD(learningRate: config.learningRate, momentum: config.momentum, weightDecay: config.weightDecay)
        let loader = BatchLoader(images: clean, batchSize: config.batchSize, shuffle: true, augment: config.augment,
                                 seed: config.seed)
        var taps: [String] = []
        for tap in terms.flatMap(\.taps) where !taps.contains(tap) { taps.append(tap) }

        /// Forward and backward of the batch: every parameter's gradient of CE + terms.
        func gradients(_ batch: Batch, epoch: Int) throws -> (ce: CrossEntropy.Result, extra: Double) {
            let (logits, features) = try model.forward(images: batch.images, count: batch.count, mode: .training, taps: taps)
            let ce = CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: model.numClasses,
                                           smoothing: config.labelSmoothing)
            var extra = 0.0
            var tapGradients: [String: [Float]] = [:]
            for term in terms {
                let (value, gradients) = try term.loss(features: features, batch: batch)
                extra += value
                for (name, g) in gradients {
                    tapGradients[name] = tapGradients[name].map { zip($0, g).map { $0 + $1 } } ?? g
                }
            }
            guard ce.meanLoss.isFinite, extra.isFinite else {
                throw DefenseError("\(label): loss became \(Double(ce.meanLoss) + extra) in epoch \(epoch + 1) "
                    + "(learning rate \(sgd.learningRate)); try a lower --lr")
            }
            try model.backward(logitsGradient: ce.logitsGradient, tapGradients: tapGradients, weightGradients: true,
                               wantInputGradient: false)
            for term in terms { try term.addParameterGradients() }
            return (ce, extra)
        }

        var records: [FineTuningEpoch] = []
        var step = 0
        for epoch in 0..<config.epochs {
            let start = Date()
            if !config.schedulePerBatch { sgd.learningRate = config.learningRate(epoch: epoch) }
            var lossSum = 0.0, extraSum = 0.0, correct = 0, seen = 0
            for batch in loader.epoch(epoch) {
                if config.schedulePerBatch { sgd.learningRate = config.learningRate(epoch: step) }
                step += 1
                let (ce, extra) = try gradients(batch, epoch: epoch)
                if let sharpness {
                    try sharpness.perturb(model.parameters, learningRateFraction: Double(sgd.learningRate / config.learningRate))
                    try sharpness.withFrozenStatistics(model) { _ = try gradients(batch, epoch: epoch) }
                    try sharpness.restore(model.parameters)
                }
                try sgd.step(model.parameters)
                for term in terms { try term.afterStep() }
                lossSum += (Double(ce.meanLoss) + extra) * Double(batch.count)
                extraSum += extra * Double(batch.count)
                correct += ce.correct
                seen += batch.count
            }
            let record = FineTuningEpoch(epoch: epoch + 1, learningRate: sgd.learningRate, loss: lossSum / Double(seen),
                                         extraLoss: extraSum / Double(seen), accuracy: Double(correct) / Double(seen),
                                         seconds: Date().timeIntervalSince(start))
            records.append(record)
            try log("\(label): epoch \(record.epoch)/\(config.epochs) " + record.line)
        }
        return records
    }

    /// An independent copy of a model (same architecture, parameters and statistics).
    public static func copy(_ model: Model) throws -> Model {
        var metadata = model.settings
        metadata["architecture"] = model.architecture
        return try Checkpoint.model(from: model.stateDict(), metadata: metadata, source: "copy of the model",
                                    on: model.backend).model
    }
}

/// The modules a defense works on, per architecture of the zoo.
public struct DefenseLayers: Equatable {
    /// Stage outputs for attention distillation (NAD), shallow to deep; empty where it is refused.
    public var stages: [String]
    /// The module whose output is the classifier's input, N x C x 1 x 1 (FP ranks its channels).
    public var pooled: String
    /// The last convolutional stage those channels belong to (named in FP's pruned list).
    public var lastStage: String
    /// The linear classifier (FP masks its input columns, FST re-initialises it).
    public var head: String

    public static func of(_ model: Model) throws -> DefenseLayers {
        guard let architecture = Architecture(rawValue: model.architecture) else {
            throw DefenseError("no defense layers known for architecture \"\(model.architecture)\"; expected one of "
                + ModelZoo.architectures.joined(separator: ", "))
        }
        switch architecture {
        case .resnet18, .preactResNet18:
            return DefenseLayers(stages: ["layer2", "layer3", "layer4"], pooled: "avgpool", lastStage: "layer4", head: "linear")
        case .vgg16, .vgg19:
            // `features` ends with a max pool to 1 x 1, so its output is the classifier's input.
            return DefenseLayers(stages: [], pooled: "features", lastStage: "features", head: "classifier")
        case .mobileNetV2:
            return DefenseLayers(stages: [], pooled: "avgpool", lastStage: "bn2", head: "linear")
        }
    }

    /// The classifier of `model`.
    public func linear(_ model: Model) throws -> Linear {
        guard let head = model.namedModules().first(where: { $0.name == head })?.module as? Linear else {
            throw DefenseError("\(model.description) has no linear classifier named \"\(head)\"")
        }
        return head
    }
}
