import Datasets
import NN
import Support

/// Feature Shift Tuning (Min et al., NeurIPS 2023) as the authors' fine_tune/ft.py runs it
/// (`--ft_mode fst`): the linear head is re-initialised (uniform in +-1/sqrt(in_features), weight
/// and bias), then the whole model is fine-tuned with cross-entropy plus alpha * <W, W_orig> (the
/// head's weight against the backdoored one: pushing it away shifts the features the backdoor
/// used), and after each step W is rescaled to W_orig's Frobenius norm.
public struct FSTDefense: Defense {
    public var config: FineTuningConfig
    public var alpha: Double
    /// The authors' command: 10 epochs, batch 128, lr 0.01 cosine, momentum 0.9, no weight decay, alpha 0.1.
    public static let authorsConfig = FineTuningConfig(epochs: 10, batchSize: 128, learningRate: 0.01, weightDecay: 0)

    public init(config: FineTuningConfig = authorsConfig, alpha: Double = 0.1) {
        self.config = config
        self.alpha = alpha
    }
    public static let name = "fst"
    public static let defaults = FSTDefense().settings
    /// The authors' 2%.
    public static let defaultCleanFraction = 0.02
    public init(settings: [String: Double], seed: UInt64) throws {
        self.init(config: try FineTuningConfig(settings: settings, seed: seed, defense: Self.name), alpha: settings["fst_alpha"]!)
        guard alpha >= 0 else { throw DefenseSettingError.outOfRange(Self.name, "fst_alpha", alpha, expected: "a number at least 0") }
    }
    public var settings: [String: Double] { config.settings.merging(["fst_alpha": alpha]) { $1 } }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let head = try DefenseLayers.of(model).linear(model)
        let shift = try FeatureShift(head: head, alpha: alpha)
        try shift.reinitialiseHead(seed: config.seed)
        try log("fst: re-initialised \(head.name) (\(head.outFeatures) x \(head.inFeatures)); penalty \(alpha) * <W, W_orig>")
        try FineTuning.run(model, on: clean, config: config, terms: [shift], label: "fst", log: log)
        return DefenseDecision(pruned: [])
    }
}

/// FST's penalty alpha * sum(W * W_orig) on the head's weight W: its gradient is alpha * W_orig;
/// after each step W is projected back to the norm of W_orig.
public final class FeatureShift: FineTuningTerm {
    public let head: Linear
    public let alpha: Double
    /// The backdoored head's weight, [out, in] row-major, and its Frobenius norm.
    public let original: [Float]
    public let originalNorm: Double

    public init(head: Linear, alpha: Double) throws {
        self.head = head
        self.alpha = alpha
        original = try head.weight.plainValues()
        originalNorm = Self.norm(original)
    }

    /// PyTorch's default Linear initialisation bounds (the authors' `uniform_(-std, std)`, std 1/sqrt(in)).
    public func reinitialiseHead(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed, stream: "fst head")
        let bound = 1 / Float(head.inFeatures).squareRoot()
        try head.weight.setPlainValues((0..<head.weight.count).map { _ in (generator.nextFloat() * 2 - 1) * bound })
        try head.bias.setPlainValues((0..<head.bias.count).map { _ in (generator.nextFloat() * 2 - 1) * bound })
    }

    public func loss(features: [String: [Float]], batch: Batch) throws -> (value: Double, tapGradients: [String: [Float]]) {
        let w = try head.weight.plainValues()
        return (alpha * zip(w, original).reduce(0) { $0 + Double($1.0) * Double($1.1) }, [:])
    }

    public func addParameterGradients() throws {
        let g = try head.weight.plainGradient()
        try head.weight.gradient.setPlainValues(zip(g, original).map { $0 + Float(alpha) * $1 })
    }

    public func afterStep() throws {
        let w = try head.weight.plainValues()
        let scale = Float(originalNorm / max(Self.norm(w), 1e-30))
        try head.weight.setPlainValues(w.map { $0 * scale })
    }

    static func norm(_ v: [Float]) -> Double { v.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
}
