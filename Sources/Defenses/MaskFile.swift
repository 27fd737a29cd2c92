import Foundation
import Support

/// One neuron (BatchNorm channel) and its mask value.
public struct NeuronScore: Equatable {
    /// The BN layer's state_dict name, e.g. `layer1.0.bn1`.
    public var layer: String
    public var index: Int
    public var value: Double

    public init(layer: String, index: Int, value: Double) {
        self.layer = layer
        self.index = index
        self.value = value
    }
}

/// `mask_values.txt` exactly as the reference's `save_mask_scores` writes it: a header
/// `No \t Layer Name \t Neuron Idx \t Mask Score \n`, then `count \t layer \t index \t value \n`
/// with 4 decimals (the spaces around the tabs and before the newline are the reference's).
public enum MaskFile {
    public static let fileName = "mask_values.txt"
    static let header = "No \t Layer Name \t Neuron Idx \t Mask Score \n"

    /// The scores of per-layer masks, in model order (layer names and channel counts must agree).
    public static func scores(layers: [String], masks: NeuronValues) -> [NeuronScore] {
        precondition(layers.count == masks.count, "one mask array per layer")
        var out: [NeuronScore] = []
        for (layer, values) in zip(layers, masks) {
            for (index, value) in values.enumerated() { out.append(NeuronScore(layer: layer, index: index, value: Double(value))) }
        }
        return out
    }

    public static func text(_ scores: [NeuronScore]) -> String {
        var text = header
        for (count, score) in scores.enumerated() {
            text += "\(count) \t \(score.layer) \t \(score.index) \t \(String(format: "%.4f", score.value)) \n"
        }
        return text
    }

    public static func write(_ scores: [NeuronScore], to path: String) throws {
        try AtomicFile.write(text(scores), to: path)
    }

    /// Reads a mask file as the reference's `read_data` does (whitespace-separated columns after
    /// one header line), with errors naming the line.
    public static func read(path: String) throws -> [NeuronScore] {
        try parse(try InputFile.text(path, what: "mask file (mask_values.txt as written by `backdoor anp`)"), path: path)
    }

    public static func parse(_ text: String, path: String) throws -> [NeuronScore] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = lines.first, first.split(whereSeparator: \.isWhitespace).first == "No" else {
            throw FileError(path, "line 1: expected the header `No \\t Layer Name \\t Neuron Idx \\t Mask Score`")
        }
        var scores: [NeuronScore] = []
        for (i, line) in lines.enumerated().dropFirst() {
            let fields = line.split(whereSeparator: \.isWhitespace)
            if fields.isEmpty { continue }
            guard fields.count == 4, Int(fields[0]) != nil, let index = Int(fields[2]), index >= 0,
                  let value = Double(fields[3]), value.isFinite else {
                throw FileError(path, "line \(i + 1): \"\(line.prefix(80))\" is not `No \\t Layer Name \\t Neuron Idx \\t Mask Score` (an integer, a layer name, an index >= 0, a number)")
            }
            scores.append(NeuronScore(layer: String(fields[1]), index: index, value: value))
        }
        guard !scores.isEmpty else { throw FileError(path, "no neurons after the header") }
        return scores
    }
}
