import Datasets
import Foundation
import NN

/// Fine-Pruning (Liu et al., RAID 2018) as BackdoorBench's defense/fp.py: the channels of the last
/// convolutional stage, as the classifier sees them (its pooled input), are ranked by mean
/// activation on the defender's clean images; the least active are pruned (masked out of the
/// classifier's input) in steps of ceil(channels * once_prune_ratio) while the defender's clean
/// accuracy stays within acc_ratio (relative) of the unpruned model's; then the model is
/// fine-tuned with the mask held.
public struct FPDefense: Defense {
    public var config: FineTuningConfig
    public var accRatio: Double
    public var oncePruneRatio: Double

    public init(config: FineTuningConfig = .backdoorBench, accRatio: Double = 0.1, oncePruneRatio: Double = 0.01) {
        self.config = config
        self.accRatio = accRatio
        self.oncePruneRatio = oncePruneRatio
    }
    public static let name = "fp"
    public static let defaults = FPDefense().settings
    /// BackdoorBench's 5%.
    public static let defaultCleanFraction = 0.05
    public init(settings: [String: Double], seed: UInt64) throws {
        self.init(config: try FineTuningConfig(settings: settings, seed: seed, defense: Self.name),
                  accRatio: settings["acc_ratio"]!, oncePruneRatio: settings["once_prune_ratio"]!)
        for (key, value) in [("acc_ratio", accRatio), ("once_prune_ratio", oncePruneRatio)] where !(value > 0 && value <= 1) {
            throw DefenseSettingError.outOfRange(Self.name, key, value, expected: "a fraction in (0, 1]")
        }
    }
    public var settings: [String: Double] {
        config.settings.merging(["acc_ratio": accRatio, "once_prune_ratio": oncePruneRatio]) { $1 }
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let layers = try DefenseLayers.of(model)
        let head = try layers.linear(model)
        let (features, labels) = try FinePruning.pooledFeatures(model, on: clean, layers: layers)
        let activations = FinePruning.meanActivations(features, channels: head.inFeatures)
        let ranking = FinePruning.ranking(activations)
        let weight = try head.weight.plainValues(), bias = try head.bias.plainValues()
        let levels = FinePruning.levels(channels: head.inFeatures, oncePruneRatio: oncePruneRatio)
        func accuracy(_ level: Int) -> Double {
            FinePruning.accuracy(features: features, labels: labels,
                                 weight: FinePruning.masked(weight, columns: head.inFeatures, pruned: Array(ranking.prefix(level))),
                                 bias: bias)
        }
        let choice = LevelChoice.choose(levels: levels, baseline: accuracy(0), accRatio: accRatio, accuracy: accuracy)
        let level = choice.level ?? 0
        let pruned = Array(ranking.prefix(level))
        try log(String(format: "fp: pruning %d of %d %@ channels (clean accuracy on the defender's images %.4f -> %.4f, "
                       + "stopping before a relative drop of %.2f)", level, head.inFeatures, layers.lastStage,
                       choice.baseline, choice.tried.first { $0.level == level }?.accuracy ?? choice.baseline, accRatio))
        let mask = HeadMask(head: head, pruned: pruned)
        try mask.afterStep()
        try FineTuning.run(model, on: clean, config: config, terms: [mask], label: "fp", log: log)
        return DefenseDecision(
            pruned: pruned.map { NeuronScore(layer: layers.lastStage, index: $0, value: activations[$0]) },
            details: [
                "pruned_channels": level, "channels": head.inFeatures, "masked": head.name + ".weight columns",
                "level_chosen_on": "the defender's clean images (\(clean.count)): the most channels pruned before "
                    + "their clean accuracy fell by acc_ratio relative to the unpruned model's",
                "levels": choice.tried.map { ["pruned": $0.level, "clean_acc": $0.accuracy] as [String: Any] },
            ])
    }
}

public enum FinePruning {
    /// The classifier's input (the pooled last stage, N x C) for each image, evaluation mode,
    /// without augmentation, and the labels.
    public static func pooledFeatures(_ model: Model, on images: ImageSet, layers: DefenseLayers, batchSize: Int = 256)
        throws -> (features: [Float], labels: [Int32]) {
        var features: [Float] = [], labels: [Int32] = []
        for batch in BatchLoader.evaluation(images, batchSize: batchSize).epoch(0) {
            let out = try model.forward(images: batch.images, count: batch.count, mode: .evaluation, taps: [layers.pooled])
            features += out.features[layers.pooled]!
            labels += batch.labels
        }
        return (features, labels)
    }

    /// Each channel's mean over the images (the reference's sum of the hooked input / N).
    public static func meanActivations(_ features: [Float], channels: Int) -> [Double] {
        let n = features.count / channels
        var sums = [Double](repeating: 0, count: channels)
        for i in 0..<n { for c in 0..<channels { sums[c] += Double(features[i * channels + c]) } }
        return sums.map { $0 / Double(max(n, 1)) }
    }

    /// Channels from least to most active; ties in index order (a stable argsort).
    public static func ranking(_ activations: [Double]) -> [Int] {
        activations.indices.sorted { (activations[$0], $0) < (activations[$1], $1) }
    }

    /// The numbers of channels tried: 0, s, 2s, ... below `channels`, s = ceil(channels * ratio).
    public static func levels(channels: Int, oncePruneRatio: Double) -> [Int] {
        Array(stride(from: 0, to: channels, by: max(1, Int((Double(channels) * oncePruneRatio).rounded(.up)))))
    }

    /// A [out, in] weight with the given input columns zeroed.
    public static func masked(_ weight: [Float], columns: Int, pruned: [Int]) -> [Float] {
        var w = weight
        for row in 0..<(weight.count / columns) { for c in pruned { w[row * columns + c] = 0 } }
        return w
    }

    /// Accuracy of the linear classifier on pooled features (what a full forward pass with that
    /// classifier gives: the mask changes nothing before it).
    public static func accuracy(features: [Float], labels: [Int32], weight: [Float], bias: [Float]) -> Double {
        let classes = bias.count, channels = weight.count / classes
        var logits = [Float](repeating: 0, count: labels.count * classes)
        for i in labels.indices {
            for k in 0..<classes {
                var sum = bias[k]
                for c in 0..<channels { sum += weight[k * channels + c] * features[i * channels + c] }
                logits[i * classes + k] = sum
            }
        }
        let predicted = CrossEntropy.predictions(logits: logits, classes: classes)
        return Double(zip(predicted, labels).filter { $0 == Int($1) }.count) / Double(max(labels.count, 1))
    }
}

/// Keeps pruned input columns of the classifier at zero through fine-tuning (PyTorch's
/// `prune.custom_from_mask` on the weight, as the reference).
public final class HeadMask: FineTuningTerm {
    public let head: Linear
    public let pruned: [Int]
    public init(head: Linear, pruned: [Int]) {
        self.head = head
        self.pruned = pruned
    }

    public func afterStep() throws {
        guard !pruned.isEmpty else { return }
        try head.weight.setPlainValues(FinePruning.masked(try head.weight.plainValues(), columns: head.inFeatures,
                                                          pruned: pruned))
    }
}
