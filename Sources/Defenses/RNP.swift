import Datasets
import Foundation
import NN
import Support
import Training

/// Settings of Reconstructive Neuron Pruning, named and defaulted as the authors' `main.py`
/// (bboylyg/RNP) and BackdoorBench's `defense/rnp.py`.
public struct RNPConfig: Equatable {
    /// Weight of the recovering loss.
    public var alpha: Float = 0.2
    /// Unlearning stops after the first epoch whose training accuracy is at most this.
    public var cleanThreshold = 0.2
    public var unlearningLearningRate: Float = 0.01
    public var recoveringLearningRate: Float = 0.2
    /// Unlearning runs epochs 0 ... unlearningEpochs (the reference's `range(0, epochs + 1)`).
    public var unlearningEpochs = 20
    public var recoveringEpochs = 20
    /// Unlearning learning rate x0.1 at these epochs.
    public var schedule = [10, 20]
    public var batchSize = 128
    public var pruningBy: Pruning.Mode = .threshold
    public var pruningMax = 0.9
    public var pruningStep = 0.05
    /// The chosen level: the last of the sweep before the first whose clean accuracy on the
    /// defender's images falls by this fraction of the unpruned model's (`LevelChoice`; BackdoorBench's
    /// acc_ratio test, applied to the defender's images instead of the test set).
    public var accRatio = 0.1
    /// A fixed pruning level (threshold or number) instead of the choice (BackdoorBench's pruning_number).
    public var pruningNumber: Double?
    public var seed: UInt64 = 0

    public init() {}

    public func validate() throws {
        func fail(_ key: String, _ value: Double, _ expected: String) -> DefenseSettingError {
            .outOfRange(RNPDefense.name, key, value, expected: expected)
        }
        guard alpha > 0, alpha.isFinite else { throw fail("alpha", Double(alpha), "a number > 0") }
        guard cleanThreshold >= 0, cleanThreshold <= 1 else { throw fail("clean_threshold", Double(cleanThreshold), "a number in [0, 1]") }
        guard unlearningLearningRate > 0, unlearningLearningRate.isFinite else {
            throw fail("unlearning_lr", Double(unlearningLearningRate), "a number > 0")
        }
        guard recoveringLearningRate > 0, recoveringLearningRate.isFinite else {
            throw fail("recovering_lr", Double(recoveringLearningRate), "a number > 0")
        }
        guard unlearningEpochs >= 0 else { throw fail("unlearning_epochs", Double(unlearningEpochs), "an integer >= 0") }
        guard recoveringEpochs >= 1 else { throw fail("recovering_epochs", Double(recoveringEpochs), "an integer >= 1") }
        guard batchSize >= 1 else { throw fail("batch_size", Double(batchSize), "an integer >= 1") }
        guard pruningMax >= 0, pruningMax.isFinite else { throw fail("pruning_max", Double(pruningMax), "a number >= 0") }
        guard pruningStep > 0, pruningStep.isFinite else { throw fail("pruning_step", Double(pruningStep), "a number > 0") }
        guard accRatio > 0, accRatio <= 1 else { throw fail("acc_ratio", Double(accRatio), "a number in (0, 1]") }
        if let pruningNumber, !(pruningNumber >= 0 && pruningNumber.isFinite) {
            throw fail("pruning_number", Double(pruningNumber), "a number >= 0")
        }
    }
}

/// RNP (Li et al., ICML 2023) as the authors' code: unlearn the defender's clean images by
/// gradient ascent until the training accuracy collapses, learn BatchNorm neuron masks (no
/// noise: ANP's masked BatchNorm with eps 0) that recover the unlearned model's clean accuracy,
/// then prune the ORIGINAL model's neurons by mask value. The level is chosen on the defender's
/// clean images only, never on triggered test images.
public enum RNP {
    public struct Result {
        /// Every BatchNorm neuron's recovered mask, in model order.
        public var scores: [NeuronScore]
        /// Training loss and accuracy of each unlearning epoch run.
        public var unlearning: [(loss: Double, accuracy: Double)]
        /// The sweep's rows, evaluated on the defender's clean images (poison columns NaN).
        public var sweep: [Pruning.SweepRow]
        public var cleanAccuracyBefore: Double
        public var pruned: [NeuronScore]
        /// How the pruning level was chosen, for result.json.
        public var selection: String
    }

    /// Runs RNP on `model` in place: at the end it holds the original weights with the chosen neurons pruned.
    public static func run(_ model: Model, clean: ImageSet, config: RNPConfig,
                           log: (String) throws -> Void = { _ in }) throws -> Result {
        try config.validate()
        guard clean.count > 0 else { throw DefenseError("rnp: the defender has no clean images (--clean-frac)") }
        let original = try model.stateDict()
        let loader = BatchLoader.training(clean, batchSize: config.batchSize, seed: config.seed)

        // 1. Unlearning: SGD on -CE (momentum 0.9, weight decay 5e-4, x0.1 at the milestones).
        let sgd = SGD(learningRate: config.unlearningLearningRate, momentum: 0.9, weightDecay: 5e-4)
        let schedule = MultiStepSchedule(baseLearningRate: config.unlearningLearningRate, milestones: config.schedule)
        var unlearning: [(loss: Double, accuracy: Double)] = []
        for epoch in 0...config.unlearningEpochs {
            sgd.learningRate = schedule.learningRate(epoch: epoch)
            let outcome = try CleanEpoch.run(model, loader: loader, epoch: epoch, sgd: sgd, ascend: true)
            unlearning.append((outcome.loss, outcome.accuracy))
            try log(String(format: "rnp: unlearning epoch %d: lr %.4f, loss %.4f, accuracy %.4f", epoch, sgd.learningRate,
                           outcome.loss, outcome.accuracy))
            if outcome.accuracy <= config.cleanThreshold { break }
        }
        if let last = unlearning.last, last.accuracy > config.cleanThreshold {
            try log("rnp: the training accuracy stayed above --clean-threshold \(config.cleanThreshold); recovering from the last epoch's model")
        }

        // 2. Recovering: masks only, SGD (momentum 0.9) on alpha * CE, clamped to [0, 1].
        var maskConfig = ANPConfig()
        maskConfig.eps = 0
        maskConfig.alpha = config.alpha
        maskConfig.learningRate = config.recoveringLearningRate
        maskConfig.batchSize = config.batchSize
        let optimizer = try MaskOptimizer(model: model, config: maskConfig)
        var generator = SeededGenerator(seed: config.seed, stream: "rnp")
        for epoch in 1...config.recoveringEpochs {
            var lossSum = 0.0, correct = 0, seen = 0
            for batch in loader.epoch(config.unlearningEpochs + epoch) {
                let step = try optimizer.step(images: batch.images, labels: batch.labels, generator: &generator)
                lossSum += Double(step.loss) * Double(batch.count)
                correct += step.correct
                seen += batch.count
            }
            try log(String(format: "rnp: recovering epoch %d/%d: loss %.4f, accuracy %.4f", epoch, config.recoveringEpochs,
                           lossSum / Double(seen), Double(correct) / Double(seen)))
        }
        let scores = MaskFile.scores(layers: optimizer.layers.map(\.name), masks: try optimizer.masks)
        optimizer.detach()

        // 3. Pruning the original model, the level chosen on the defender's clean images.
        try model.load(stateDict: original)
        let before = try Evaluation.evaluate(model, on: clean)
        let rows = try Pruning.sweep(model, scores: scores, mode: config.pruningBy, max: config.pruningMax,
                                     step: config.pruningStep) { m in
            let r = try Evaluation.evaluate(m, on: clean)
            return BackdoorMetrics(poisonLoss: .nan, poisonAccuracy: .nan, cleanLoss: r.loss, cleanAccuracy: r.accuracy)
        } onRow: { row in
            try log(String(format: "rnp: pruning by %@ at %@: %d neurons, defender clean accuracy %.4f", config.pruningBy.rawValue,
                           "\(row.mask)", row.pruned, row.metrics.cleanAccuracy))
        }
        try model.load(stateDict: original)
        let order = Pruning.sorted(scores)
        let pruned: [NeuronScore]
        let selection: String
        if let level = config.pruningNumber {
            pruned = config.pruningBy == .threshold ? Pruning.neurons(scores, atOrBelow: level)
                : Array(order.prefix(Int(level.rounded(.up))))
            selection = "fixed --pruning-number \(level) (pruning by \(config.pruningBy.rawValue))"
        } else {
            let kept = LevelChoice.choose(levels: rows, baseline: before.accuracy, accRatio: config.accRatio) { $0.metrics.cleanAccuracy }.level
            pruned = Array(order.prefix(kept?.pruned ?? 0))
            selection = "the last \(config.pruningBy.rawValue) level of the sweep (0 to \(config.pruningMax) by \(config.pruningStep)) "
                + "before the first whose clean accuracy on the defender's \(clean.count) images falls by a relative \(config.accRatio) "
                + "or more below the unpruned " + String(format: "%.4f", before.accuracy)
                + (kept.map { ": \($0.mask)" } ?? ": the first level already did, nothing pruned")
        }
        try Pruning.prune(model, neurons: pruned)
        try log("rnp: pruned \(pruned.count) of \(scores.count) neurons; level: \(selection)")
        return Result(scores: scores, unlearning: unlearning, sweep: rows, cleanAccuracyBefore: before.accuracy,
                      pruned: pruned, selection: selection)
    }
}

/// RNP as a defense: result.json gets the pruned neurons, how the level was chosen and the sweep
/// on the defender's images.
public struct RNPDefense: Defense {
    public var config: RNPConfig
    public init(config: RNPConfig = RNPConfig()) { self.config = config }
    public static let name = "rnp"
    /// The authors' --ratio.
    public static let defaultCleanFraction = 0.01
    /// Every setting by its config name (the authors' flags; pruning_by 0: threshold, 1: number;
    /// pruning_number -1: chosen on the defender's data), as the runner's defense registry takes them.
    public var settings: [String: Double] {
        ["alpha": Double(config.alpha), "clean_threshold": config.cleanThreshold,
         "unlearning_lr": Double(config.unlearningLearningRate), "recovering_lr": Double(config.recoveringLearningRate),
         "unlearning_epochs": Double(config.unlearningEpochs), "recovering_epochs": Double(config.recoveringEpochs),
         "batch_size": Double(config.batchSize), "pruning_by": config.pruningBy == .threshold ? 0 : 1,
         "pruning_max": config.pruningMax, "pruning_step": config.pruningStep, "acc_ratio": config.accRatio,
         "pruning_number": config.pruningNumber ?? -1]
    }

    public static let defaults = RNPDefense().settings

    /// From settings keyed as `settings` (missing keys take the defaults); validated.
    public init(settings: [String: Double], seed: UInt64) throws {
        let s = Self.defaults.merging(settings) { $1 }
        var c = RNPConfig()
        c.alpha = Float(s["alpha"]!)
        c.cleanThreshold = s["clean_threshold"]!
        c.unlearningLearningRate = Float(s["unlearning_lr"]!)
        c.recoveringLearningRate = Float(s["recovering_lr"]!)
        c.unlearningEpochs = Int(s["unlearning_epochs"]!)
        c.recoveringEpochs = Int(s["recovering_epochs"]!)
        c.batchSize = Int(s["batch_size"]!)
        guard s["pruning_by"]! == 0 || s["pruning_by"]! == 1 else {
            throw DefenseSettingError.outOfRange(Self.name, "pruning_by", s["pruning_by"]!, expected: "0 (threshold) or 1 (number)")
        }
        c.pruningBy = s["pruning_by"]! == 0 ? .threshold : .number
        c.pruningMax = s["pruning_max"]!
        c.pruningStep = s["pruning_step"]!
        c.accRatio = s["acc_ratio"]!
        c.pruningNumber = s["pruning_number"]! == -1 ? nil : s["pruning_number"]!
        c.seed = seed
        try c.validate()
        self.init(config: c)
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let result = try RNP.run(model, clean: clean, config: config, log: log)
        return DefenseDecision(pruned: result.pruned, details: [
            "pruning_by": config.pruningBy.rawValue, "selection": result.selection,
            "unlearning_epochs_run": result.unlearning.count,
            "unlearned_train_acc": result.unlearning.last?.accuracy ?? 0,
            "defender_clean_acc_before": result.cleanAccuracyBefore,
            "sweep": result.sweep.map { ["level": $0.mask, "pruned": $0.pruned, "defender_clean_acc": $0.metrics.cleanAccuracy] as [String: Any] },
        ])
    }
}
