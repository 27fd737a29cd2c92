import Datasets
import Foundation
import NN
import Support
import Training

/// Pruning by mask value, as the reference's `prune_neuron_cifar.py`: neurons sorted by mask
/// (ascending, ties in file order); pruning a neuron sets its BN weight to 0 and keeps its bias.
public enum Pruning {
    public enum Mode: String, CaseIterable {
        case threshold, number
        public var fileName: String { "pruning_by_\(rawValue).txt" }
    }

    public static let sweepHeader = "No \t Layer Name \t Neuron Idx \t Mask \t PoisonLoss \t PoisonACC \t CleanLoss \t CleanACC\n"

    /// Stable ascending sort by mask value (Python's `sorted`).
    public static func sorted(_ scores: [NeuronScore]) -> [NeuronScore] {
        scores.enumerated().sorted { ($0.element.value, $0.offset) < ($1.element.value, $1.offset) }.map(\.element)
    }

    /// Neurons whose mask is at most `threshold`, lowest first.
    public static func neurons(_ scores: [NeuronScore], atOrBelow threshold: Double) -> [NeuronScore] {
        sorted(scores).filter { $0.value <= threshold }
    }

    /// Checks that every neuron names a BN layer of the model and a channel it has.
    public static func validate(_ scores: [NeuronScore], for model: Model, source: String) throws {
        // One line per BatchNorm channel, in model order, as `backdoor anp` writes it: a file cut
        // short or made for another width would otherwise prune only the neurons it lists.
        let expected = model.batchNorms.flatMap { layer in (0..<layer.channels).map { (layer.name, $0) } }
        let names = Set(model.batchNorms.map(\.name))
        for (i, score) in scores.enumerated() {
            // The header is line 1, so neuron i is on line i + 2 (blank lines aside).
            guard i < expected.count else {
                throw FileError(source, "neuron \(i + 1) (\(score.layer) \(score.index)) is one too many: \(model.description) has \(expected.count) BatchNorm neurons")
            }
            let (layer, index) = expected[i]
            guard score.layer == layer, score.index == index else {
                let hint = names.contains(score.layer) ? "" : "; \(score.layer) is not a BatchNorm layer of this model"
                throw FileError(source, "neuron \(i + 1) is \(score.layer) \(score.index), expected \(layer) \(index) (one line per BatchNorm channel of \(model.description), in order)\(hint)")
            }
        }
        guard scores.count == expected.count else {
            let (layer, index) = expected[scores.count]
            throw FileError(source, "ends after \(scores.count) neurons; \(model.description) has \(expected.count) (the next would be \(layer) \(index)); the file is cut short or was written for another model")
        }
    }

    /// Sets the BN weight of each neuron to 0 (biases and running statistics stay).
    public static func prune(_ model: Model, neurons: [NeuronScore]) throws {
        let layers = Dictionary(uniqueKeysWithValues: model.batchNorms.map { ($0.name, $0) })
        var byLayer: [String: [Int]] = [:]
        for neuron in neurons { byLayer[neuron.layer, default: []].append(neuron.index) }
        for (name, indices) in byLayer {
            guard let layer = layers[name] else { throw ANPError("cannot prune \(name): not a BatchNorm layer of the model") }
            var weights = try layer.weight.plainValues()
            for index in indices {
                guard index >= 0 && index < weights.count else {
                    throw ANPError("cannot prune \(name)[\(index)]: the layer has \(weights.count) channels")
                }
                weights[index] = 0
            }
            try layer.weight.setPlainValues(weights)
        }
    }

    /// One row of a pruning sweep, printed as the reference prints it.
    public struct SweepRow: Equatable {
        /// Neurons pruned so far.
        public var pruned: Int
        public var layer: String
        public var index: Int
        /// The "Mask" column: the threshold (threshold sweeps) or the last pruned neuron's mask.
        public var mask: Double
        public var metrics: BackdoorMetrics

        /// The reference's line: `{:.2f}` for the count in threshold sweeps, `{}` in number sweeps;
        /// the mask printed as Python prints a float (Swift's description is also the shortest
        /// round-trip form: "0.0", "0.05", "0.15000000000000002"); four decimals for the metrics.
        public func line(mode: Mode) -> String {
            let count = mode == .threshold ? String(format: "%.2f", Double(pruned)) : String(pruned)
            let m = metrics
            return "\(count) \t \(layer) \t \(index) \t \(mask) \t "
                + [m.poisonLoss, m.poisonAccuracy, m.cleanLoss, m.cleanAccuracy].map { String(format: "%.4f", $0) }
                .joined(separator: " \t ") + "\n"
        }
    }

    /// np.arange(0, max + step, step), element by element as numpy computes it (i * step).
    public static func thresholds(max: Double, step: Double) -> [Double] {
        let count = Int(((max + step) / step).rounded(.up))
        return (0..<Swift.max(count, 0)).map { Double($0) * step }
    }

    /// The reference's `evaluate_by_threshold` / `evaluate_by_number` on `model` (pruned in place,
    /// cumulatively). Threshold sweeps evaluate after pruning every neuron with mask <= t for t in
    /// 0, step, ..., max (+ step); the row names the first neuron left (the last one once all are
    /// pruned), as the reference does. Number sweeps prune ceil(step) more neurons per row, up to
    /// ceil(max) (+ one step), and name the last pruned neuron; they stop when neurons run out.
    public static func sweep(_ model: Model, scores: [NeuronScore], mode: Mode, max: Double, step: Double,
                             evaluate: (Model) throws -> BackdoorMetrics,
                             onRow: (SweepRow) throws -> Void = { _ in }) throws -> [SweepRow] {
        guard step > 0, step.isFinite else { throw ANPError("--pruning-step \(step) is invalid: expected a number > 0") }
        guard max >= 0, max.isFinite else { throw ANPError("--pruning-max \(max) is invalid: expected a number >= 0") }
        let order = sorted(scores)
        guard !order.isEmpty else { return [] }
        var rows: [SweepRow] = []
        var pruned = 0
        switch mode {
        case .threshold:
            for threshold in thresholds(max: max, step: step) {
                var batch: [NeuronScore] = []
                while pruned < order.count && order[pruned].value <= threshold {
                    batch.append(order[pruned])
                    pruned += 1
                }
                try prune(model, neurons: batch)
                let named = order[Swift.min(pruned, order.count - 1)]
                let row = SweepRow(pruned: pruned, layer: named.layer, index: named.index, mask: threshold,
                                   metrics: try evaluate(model))
                try onRow(row)
                rows.append(row)
            }
        case .number:
            let total = Int(max.rounded(.up)), perRow = Int(step.rounded(.up))
            var start = 0
            while start <= total && start < order.count {
                let end = Swift.min(start + perRow, order.count)
                try prune(model, neurons: Array(order[start..<end]))
                pruned = end
                let last = order[end - 1]
                let row = SweepRow(pruned: pruned, layer: last.layer, index: last.index, mask: last.value,
                                   metrics: try evaluate(model))
                try onRow(row)
                rows.append(row)
                start += perRow
            }
        }
        return rows
    }

    /// The sweep file: header and rows (the reference omits the newline of number rows; here
    /// every row ends with one so the file stays one row per line).
    public static func sweepText(_ rows: [SweepRow], mode: Mode) -> String {
        sweepHeader + rows.map { $0.line(mode: mode) }.joined()
    }
}

/// ANP's pruning threshold chosen on the defender's clean images (`LevelChoice` over the
/// candidate thresholds), with what the result files record about the decision.
public struct ThresholdChoice {
    /// What a threshold-file reader gets when no candidate kept the accuracy: below every mask
    /// (they lie in [0, 1]), so it prunes nothing.
    public static let nothingPruned = -1.0

    public var candidates: [Double]
    public var choice: LevelChoice<Double>
    /// Neurons each tried threshold prunes, in `choice.tried`'s order.
    public var prunedCounts: [Int]
    public var cleanImages: Int
    /// Whether `cleanImages` were held out from the mask fitting (else the masks were fitted on them).
    public var heldOut: Bool
    /// The neurons the chosen threshold prunes, lowest mask first.
    public var pruned: [NeuronScore]

    /// The chosen threshold, or `nothingPruned`.
    public var threshold: Double { choice.level ?? Self.nothingPruned }

    /// The rule and its outcome, for logs and result files.
    public var rule: String {
        let list = candidates.count > 3
            ? "\(Pruning.format(candidates[0])), \(Pruning.format(candidates[1])), ..., \(Pruning.format(candidates.last!))"
            : candidates.map(Pruning.format).joined(separator: ", ")
        let baseline = String(format: "%.4f", choice.baseline)
        let outcome = choice.level.map { ": \(Pruning.format($0))" } ?? ": the first candidate already did, nothing pruned"
        let images = heldOut ? "\(cleanImages) held-out images (not those the masks were fitted on)" : "\(cleanImages) images"
        return "the largest threshold of \(list) before the first whose clean accuracy on the defender's \(images) "
            + "falls by acc_ratio \(choice.accRatio) or more relative to the unpruned model's \(baseline) (the test set is not used)"
            + outcome
    }

    public var json: [String: Any] {
        ["rule": rule, "acc_ratio": choice.accRatio, "chosen_threshold": threshold, "defender_images": cleanImages, "held_out": heldOut,
         "defender_clean_acc_unpruned": choice.baseline, "candidates": candidates,
         "tried": zip(choice.tried, prunedCounts).map { ["threshold": $0.level, "pruned": $1, "defender_clean_acc": $0.accuracy] }]
    }
}

extension Pruning {
    /// A threshold as the logs print it ("0.3", not "0.30000000000000004").
    static func format(_ threshold: Double) -> String { String(format: "%g", threshold) }

    /// Tries `candidates` (increasing) on `model`, each pruning every neuron whose mask is at most
    /// it, judged by clean accuracy on `clean` (the defender's images; `heldOut`: not those the
    /// masks were fitted on); `model` is as before when this returns.
    public static func chooseThreshold(_ model: Model, scores: [NeuronScore], candidates: [Double], accRatio: Double,
                                       clean: ImageSet, heldOut: Bool = false, onTry: (Double, Int, Double) throws -> Void = { _, _, _ in }) throws
        -> ThresholdChoice {
        guard candidates == candidates.sorted(), !candidates.isEmpty else {
            throw ANPError("the candidate thresholds \(candidates) are not a non-empty increasing list")
        }
        guard accRatio > 0, accRatio <= 1 else { throw ANPError("acc_ratio \(accRatio) is out of range: expected a number in (0, 1]") }
        let original = try model.stateDict()
        defer { _ = try? model.load(stateDict: original) }
        var counts: [Int] = []
        let baseline = try Evaluation.evaluate(model, on: clean).accuracy
        // Candidates are increasing, so each pruning adds to the previous one's.
        let choice = try LevelChoice.choose(levels: candidates, baseline: baseline, accRatio: accRatio) { threshold in
            let neurons = neurons(scores, atOrBelow: threshold)
            try prune(model, neurons: neurons)
            counts.append(neurons.count)
            let accuracy = try Evaluation.evaluate(model, on: clean).accuracy
            try onTry(threshold, neurons.count, accuracy)
            return accuracy
        }
        return ThresholdChoice(candidates: candidates, choice: choice, prunedCounts: counts, cleanImages: clean.count,
                               heldOut: heldOut, pruned: choice.level.map { neurons(scores, atOrBelow: $0) } ?? [])
    }
}
