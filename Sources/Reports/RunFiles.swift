import Foundation
import Support

// Parsers for the files of a run folder (layout: docs/run-folder.md). Each `load(path:)` throws
// a `FileError` naming the file (and line) for missing or malformed content.

/// `summary.json`: the headline numbers of each attack, the preset and the configuration.
public struct RunSummary: Equatable {
    public struct Attack: Equatable {
        public var cleanAccuracyBefore: Double
        public var attackSuccessRateBefore: Double
        public var cleanAccuracyAfter: Double
        public var attackSuccessRateAfter: Double
        public var threshold: Double
        public var prunedNeurons: Int
        public var seconds: Double
    }

    public var attacks: [String: Attack]
    public var preset: String?
    /// The `config` object as pretty, key-sorted JSON text (nil when absent).
    public var configurationJSON: String?

    public static func load(path: String) throws -> RunSummary {
        let root = try RunFileReader.jsonObject(path)
        guard let attacksObject = try root.optionalObject("attacks") else {
            throw root.error("missing object \"attacks\"")
        }
        var attacks: [String: Attack] = [:]
        for (name, value) in attacksObject {
            guard let object = value as? [String: Any] else {
                throw root.error("attacks.\(name) should be an object, found \(JSONFields.describe(value))")
            }
            let fields = JSONFields(object, path: path)
            do {
                attacks[name] = Attack(
                    cleanAccuracyBefore: try fields.number("clean_acc_before"),
                    attackSuccessRateBefore: try fields.number("asr_before"),
                    cleanAccuracyAfter: try fields.number("clean_acc_after"),
                    attackSuccessRateAfter: try fields.number("asr_after"),
                    threshold: try fields.number("threshold"),
                    prunedNeurons: try fields.integer("pruned_neurons"),
                    seconds: try fields.number("seconds"))
            } catch let error as FileError {
                throw FileError(path, "attacks.\(name): \(error.message)")
            }
        }
        return RunSummary(
            attacks: attacks,
            preset: try root.optionalString("preset"),
            configurationJSON: try root.optionalObject("config").map { try JSONOutput.string($0) })
    }
}

/// One record of `train/train_log.jsonl` (per epoch) or `anp/anp_log.jsonl` (per logged
/// iteration). Metrics a writer left out are nil.
public struct LogRecord: Equatable {
    /// The epoch (1-based) or the ANP iteration.
    public var step: Int
    public var learningRate: Double?
    public var seconds: Double?
    public var trainLoss: Double?
    public var trainAccuracy: Double?
    public var poisonLoss: Double?
    /// Accuracy on triggered test images relabelled to the target: the attack success rate.
    public var poisonAccuracy: Double?
    public var cleanLoss: Double?
    public var cleanAccuracy: Double?
}

public enum LogFile {
    /// Training log: one record per epoch, keyed by `epoch`.
    public static func loadTraining(path: String) throws -> [LogRecord] {
        try load(path: path, stepKey: "epoch")
    }

    /// ANP log: one record per logged iteration, keyed by `iteration`.
    public static func loadANP(path: String) throws -> [LogRecord] {
        try load(path: path, stepKey: "iteration")
    }

    static func load(path: String, stepKey: String) throws -> [LogRecord] {
        var records: [LogRecord] = []
        for fields in try RunFileReader.jsonLines(path) {
            let step = try fields.integer(stepKey)
            if let previous = records.last, step <= previous.step {
                throw fields.error("\"\(stepKey)\" \(step) does not follow \(previous.step)")
            }
            records.append(LogRecord(
                step: step,
                learningRate: try fields.optionalNumber("lr"),
                seconds: try fields.optionalNumber("time"),
                trainLoss: try fields.optionalNumber("train_loss"),
                trainAccuracy: try fields.optionalNumber("train_acc"),
                poisonLoss: try fields.optionalNumber("poison_loss"),
                poisonAccuracy: try fields.optionalNumber("poison_acc"),
                cleanLoss: try fields.optionalNumber("clean_loss"),
                cleanAccuracy: try fields.optionalNumber("clean_acc")))
        }
        return records
    }
}

/// Splits a tab-separated line of the ANP reference files, whose fields carry stray spaces
/// (`No \t Layer Name \t ...`).
private func tabFields(_ line: String) -> [String] {
    line.components(separatedBy: "\t").map { $0.trimmingCharacters(in: .whitespaces) }
}

private func isBlank(_ line: String) -> Bool {
    line.trimmingCharacters(in: .whitespaces).isEmpty
}

/// `anp/mask_values.txt`: the optimised ANP mask of every BN neuron.
public struct MaskValues: Equatable {
    public struct Entry: Equatable {
        public var layer: String
        public var neuron: Int
        public var value: Double
    }

    public var entries: [Entry]

    /// Layer names in order of first appearance (the model's order).
    public var layers: [String] {
        var seen = Set<String>()
        return entries.map(\.layer).filter { seen.insert($0).inserted }
    }

    public func values(layer: String) -> [Double] {
        entries.filter { $0.layer == layer }.map(\.value)
    }

    public static let header = ["No", "Layer Name", "Neuron Idx", "Mask Score"]

    public static func load(path: String) throws -> MaskValues {
        let lines = try RunFileReader.lines(path)
        guard let first = lines.first, tabFields(first) == header else {
            throw FileError(path, "line 1: expected the header \(header.joined(separator: "\\t"))")
        }
        var entries: [Entry] = []
        for (index, line) in lines.enumerated().dropFirst() where !isBlank(line) {
            let fields = tabFields(line)
            let place = "line \(index + 1): "
            guard fields.count == 4 else {
                throw FileError(path, place + "expected 4 tab-separated fields (No, layer, neuron, mask), found \(fields.count)")
            }
            guard let neuron = Int(fields[2]), neuron >= 0 else {
                throw FileError(path, place + "neuron index \"\(fields[2])\" is not a non-negative integer")
            }
            guard let value = Double(fields[3]), value.isFinite else {
                throw FileError(path, place + "mask score \"\(fields[3])\" is not a number")
            }
            guard !fields[1].isEmpty else { throw FileError(path, place + "empty layer name") }
            entries.append(Entry(layer: fields[1], neuron: neuron, value: value))
        }
        return MaskValues(entries: entries)
    }
}

/// `prune/pruning_by_threshold.txt` or `prune/pruning_by_number.txt`: the model's state after
/// pruning up to each row.
public struct PruningTable: Equatable {
    public struct Row: Equatable {
        /// Neurons pruned so far.
        public var pruned: Int
        /// The last neuron pruned (layer and index).
        public var layer: String
        public var neuron: Int
        /// The threshold (threshold file) or the mask value of the last neuron (number file).
        public var mask: Double
        public var poisonLoss: Double
        public var attackSuccessRate: Double
        public var cleanLoss: Double
        public var cleanAccuracy: Double
    }

    public var rows: [Row]

    public static let header = ["No", "Layer Name", "Neuron Idx", "Mask", "PoisonLoss", "PoisonACC",
                                "CleanLoss", "CleanACC"]

    public static func load(path: String) throws -> PruningTable {
        let lines = try RunFileReader.lines(path)
        guard let first = lines.first, tabFields(first) == header else {
            throw FileError(path, "line 1: expected the header \(header.joined(separator: "\\t"))")
        }
        var rows: [Row] = []
        for (index, line) in lines.enumerated().dropFirst() where !isBlank(line) {
            let fields = tabFields(line)
            let place = "line \(index + 1): "
            guard fields.count == header.count else {
                throw FileError(path, place + "expected \(header.count) tab-separated fields, found \(fields.count)")
            }
            var numbers: [Double] = []
            for column in [0, 3, 4, 5, 6, 7] {
                guard let value = Double(fields[column]), value.isFinite else {
                    throw FileError(path, place + "\(header[column]) \"\(fields[column])\" is not a number")
                }
                numbers.append(value)
            }
            // The reference writes the count as "12.00" in the threshold file.
            guard numbers[0] >= 0, numbers[0] == numbers[0].rounded() else {
                throw FileError(path, place + "No \"\(fields[0])\" is not a neuron count")
            }
            guard let neuron = Int(fields[2]) else {
                throw FileError(path, place + "Neuron Idx \"\(fields[2])\" is not an integer")
            }
            for (column, value) in [(5, numbers[3]), (7, numbers[5])] where !(0...1).contains(value) {
                throw FileError(path, place + "\(header[column]) \(value) is not a fraction in [0, 1]")
            }
            rows.append(Row(pruned: Int(numbers[0]), layer: fields[1], neuron: neuron, mask: numbers[1],
                            poisonLoss: numbers[2], attackSuccessRate: numbers[3],
                            cleanLoss: numbers[4], cleanAccuracy: numbers[5]))
        }
        return PruningTable(rows: rows)
    }
}

/// `prune/result.json`: the chosen threshold and the pruned model's accuracy.
public struct PruneResult: Equatable {
    public var threshold: Double
    public var prunedNeurons: Int
    public var cleanAccuracy: Double
    public var attackSuccessRate: Double

    public static func load(path: String) throws -> PruneResult {
        let fields = try RunFileReader.jsonObject(path)
        return PruneResult(threshold: try fields.number("threshold"),
                           prunedNeurons: try fields.integer("pruned_neurons"),
                           cleanAccuracy: try fields.number("clean_acc"),
                           attackSuccessRate: try fields.number("asr"))
    }
}

/// `sweep/sweep.json`: ANP alpha x pruning threshold.
public struct SweepTable: Equatable {
    public struct Row: Equatable {
        public var alpha: Double
        public var threshold: Double
        public var cleanAccuracy: Double
        public var attackSuccessRate: Double
        public var prunedNeurons: Int
    }

    public var rows: [Row]
    /// The attack whose backdoored model was swept, when the file names it.
    public var attack: String?

    public static func load(path: String) throws -> SweepTable {
        let root = try RunFileReader.jsonObject(path)
        guard let value = root.object["rows"], let array = value as? [Any] else {
            throw root.error("missing array \"rows\"")
        }
        var rows: [Row] = []
        for (index, element) in array.enumerated() {
            guard let object = element as? [String: Any] else {
                throw root.error("rows[\(index)] should be an object, found \(JSONFields.describe(element))")
            }
            let fields = JSONFields(object, path: path)
            do {
                rows.append(Row(alpha: try fields.number("anp_alpha"), threshold: try fields.number("threshold"),
                                cleanAccuracy: try fields.number("clean_acc"),
                                attackSuccessRate: try fields.number("asr"),
                                prunedNeurons: try fields.integer("pruned_neurons")))
            } catch let error as FileError {
                throw FileError(path, "rows[\(index)]: \(error.message)")
            }
        }
        return SweepTable(rows: rows, attack: try root.optionalString("attack"))
    }
}
