/// The model passes run in this process, by kind and batch size: what a defense's work amounts to,
/// and what a PyTorch replay of that work (scripts/bench/defense_passes.py) runs to compare speed.
/// Counted by `Model.forward` and `Model.backward`; single-threaded, as the models' callers are.
public enum PassLedger {
    /// One kind of pass: a forward in `mode` of `batch` images, and the backward that followed it
    /// (`weights`: every parameter's gradient; `activations`: activation and BatchNorm gradients
    /// only, as PGD, NC, ANP and RNP's masks take; `none`: no backward).
    public struct Kind: Hashable, Comparable, Codable {
        public var mode: String
        public var batch: Int
        public var backward: String
        public var inputGradient: Bool

        enum CodingKeys: String, CodingKey {
            case mode, batch, backward
            case inputGradient = "input_gradient"
        }

        public static func < (a: Kind, b: Kind) -> Bool {
            (a.mode, a.backward, a.inputGradient ? 1 : 0, a.batch) < (b.mode, b.backward, b.inputGradient ? 1 : 0, b.batch)
        }
    }

    /// A kind and how many passes of it ran (one flat JSON object: the kind's fields and `count`).
    public struct Entry: Codable, Equatable {
        public var kind: Kind
        public var count: Int

        enum CodingKeys: String, CodingKey { case count }

        public init(kind: Kind, count: Int) { (self.kind, self.count) = (kind, count) }

        public init(from decoder: Decoder) throws {
            kind = try Kind(from: decoder)
            count = try decoder.container(keyedBy: CodingKeys.self).decode(Int.self, forKey: .count)
        }

        public func encode(to encoder: Encoder) throws {
            try kind.encode(to: encoder)
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(count, forKey: .count)
        }
    }

    private static var forwards: [Kind: Int] = [:]
    private static var backwards: [Kind: Int] = [:]

    static func forward(mode: Mode, batch: Int) {
        forwards[Kind(mode: mode == .training ? "train" : "eval", batch: batch, backward: "none", inputGradient: false), default: 0] += 1
    }

    static func backward(mode: Mode, batch: Int, weightGradients: Bool, inputGradient: Bool) {
        backwards[Kind(mode: mode == .training ? "train" : "eval", batch: batch, backward: weightGradients ? "weights" : "activations",
                       inputGradient: inputGradient), default: 0] += 1
    }

    public static func reset() {
        forwards = [:]
        backwards = [:]
    }

    /// The passes since the last reset: each backward with its forward, and the forwards no
    /// backward followed.
    public static var entries: [Entry] {
        var alone = forwards
        for (kind, count) in backwards {
            alone[Kind(mode: kind.mode, batch: kind.batch, backward: "none", inputGradient: false), default: 0] -= count
        }
        let all = backwards.merging(alone.filter { $0.value > 0 }) { $0 + $1 }
        return all.keys.sorted().map { Entry(kind: $0, count: all[$0]!) }
    }
}
