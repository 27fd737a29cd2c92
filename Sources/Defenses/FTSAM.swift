import Datasets
import Foundation
import NN

/// Sharpness-aware minimisation as BackdoorBench's `utils/defense_utils/sam` (SAM, ASAM when
/// adaptive, GSAM's gradient decomposition when alpha > 0): with g the gradient at w,
/// e(w) = rho g / (||g~|| + 1e-12), times w^2 elementwise when adaptive, where
/// g~ = |w| g (adaptive) or g, the norm taken over all parameters together; the step's gradient is
/// the one at w + e(w), applied at w. rho follows the learning rate from `rhoMax` (at the base
/// rate) down to `rhoMin` (at 0), the reference's ProportionScheduler.
public final class SharpnessAwareMinimisation {
    public let rhoMax: Double
    public let rhoMin: Double
    public let adaptive: Bool
    /// GSAM's alpha: the step's gradient loses alpha times the part of the unperturbed gradient
    /// orthogonal to it (0: plain SAM).
    public let alpha: Double
    public static let perturbEps = 1e-12
    private var saved: [(parameter: Parameter, value: [Float], gradient: [Float])] = []

    public init(rhoMax: Double, rhoMin: Double, adaptive: Bool, alpha: Double) {
        (self.rhoMax, self.rhoMin, self.adaptive, self.alpha) = (rhoMax, rhoMin, adaptive, alpha)
    }

    public func rho(learningRateFraction: Double) -> Double { rhoMin + (rhoMax - rhoMin) * learningRateFraction }

    /// Moves every parameter to w + e(w) from its current gradient; returns e(w) per parameter.
    @discardableResult
    public func perturb(_ parameters: [Parameter], learningRateFraction: Double = 1) throws -> [[Float]] {
        saved = try parameters.map { ($0, try $0.plainValues(), try $0.plainGradient()) }
        var squares = 0.0
        for (_, w, g) in saved {
            for i in w.indices {
                let x = Double(g[i]) * (adaptive ? abs(Double(w[i])) : 1)
                squares += x * x
            }
        }
        let scale = rho(learningRateFraction: learningRateFraction) / (squares.squareRoot() + Self.perturbEps)
        return try saved.map { p, w, g in
            let e = w.indices.map { i in Float(Double(g[i]) * scale * (adaptive ? Double(w[i]) * Double(w[i]) : 1)) }
            try p.setPlainValues(zip(w, e).map { $0 + $1 })
            return e
        }
    }

    /// Runs `body` (the second forward and backward) without moving BatchNorm's running
    /// statistics (the reference sets their momentum to 0).
    public func withFrozenStatistics(_ model: Model, _ body: () throws -> Void) throws {
        let norms = model.batchNorms
        let momenta = norms.map(\.momentum)
        for bn in norms { bn.momentum = 0 }
        defer { for (bn, m) in zip(norms, momenta) { bn.momentum = m } }
        try body()
    }

    /// Puts the weights back to w, keeping the gradient taken at w + e(w) (decomposed when alpha > 0).
    public func restore(_ parameters: [Parameter]) throws {
        defer { saved = [] }
        if alpha != 0 {
            let new = try saved.map { try $0.parameter.plainGradient() }
            var inner = 0.0, newSquares = 0.0, oldSquares = 0.0
            for (g, old) in zip(new, saved.map(\.gradient)) {
                for i in g.indices {
                    inner += Double(g[i]) * Double(old[i])
                    newSquares += Double(g[i]) * Double(g[i])
                    oldSquares += Double(old[i]) * Double(old[i])
                }
            }
            let newNorm = newSquares.squareRoot(), oldNorm = oldSquares.squareRoot()
            let cosine = inner / (newNorm * oldNorm + Self.perturbEps)
            for ((p, _, old), g) in zip(saved, new) {
                let decomposed = g.indices.map { i in
                    Float(Double(g[i]) - alpha * (Double(old[i]) - cosine * oldNorm * Double(g[i]) / (newNorm + Self.perturbEps)))
                }
                try p.gradient.setPlainValues(decomposed)
            }
        }
        for (p, w, _) in saved { try p.setPlainValues(w) }
    }
}

/// FT-SAM (Zhu et al., ICCV 2023) as BackdoorBench's `defense/ft-sam.py`: fine-tuning on the
/// defender's clean images with sharpness-aware minimisation (adaptive, rho 2), label-smoothed
/// cross-entropy (0.1), SGD (momentum 0.9, weight decay 5e-4) and a cosine learning rate stepped
/// per batch with T_max 100, the shared `FineTuning` loop with two forward/backward passes per step.
public struct FTSAMDefense: Defense {
    public var config: FineTuningConfig
    public var sharpness: SharpnessAwareMinimisation

    /// config/defense/ft-sam/cifar10.yaml: 100 epochs, batch 256, lr 0.01, CosineAnnealingLR (T_max 100,
    /// `scheduler.step()` per batch), SGD momentum 0.9, weight decay 5e-4, label smoothing 0.1.
    public static let referenceConfig: FineTuningConfig = {
        var config = FineTuningConfig.backdoorBench
        config.labelSmoothing = 0.1
        config.schedulePerBatch = true
        return config
    }()

    /// rho_max = rho_min 2, `--adaptive` (a store_false flag: on unless given), alpha 0.
    public init(config: FineTuningConfig = referenceConfig,
                sharpness: SharpnessAwareMinimisation = SharpnessAwareMinimisation(rhoMax: 2, rhoMin: 2, adaptive: true, alpha: 0)) {
        (self.config, self.sharpness) = (config, sharpness)
    }
    public static let name = "ft-sam"
    public static let defaults = FTSAMDefense().settings
    /// BackdoorBench's ratio 0.05.
    public static let defaultCleanFraction = 0.05

    public init(settings: [String: Double], seed: UInt64) throws {
        var config = try FineTuningConfig(settings: settings, seed: seed, defense: Self.name)
        config.schedulePerBatch = true
        let (rhoMax, rhoMin, adaptive, smoothing, alpha) =
            (settings["rho_max"]!, settings["rho_min"]!, settings["adaptive"]!, settings["label_smoothing"]!, settings["alpha"]!)
        guard rhoMin >= 0 else { throw DefenseSettingError.outOfRange(Self.name, "rho_min", rhoMin, expected: "a number at least 0") }
        guard rhoMax >= rhoMin else {
            throw DefenseSettingError.outOfRange(Self.name, "rho_max", rhoMax, expected: "a number at least rho_min (" + String(format: "%g", rhoMin) + ")")
        }
        guard adaptive == 0 || adaptive == 1 else {
            throw DefenseSettingError.outOfRange(Self.name, "adaptive", adaptive, expected: "0 (SAM) or 1 (adaptive SAM)")
        }
        guard (0..<1).contains(smoothing) else {
            throw DefenseSettingError.outOfRange(Self.name, "label_smoothing", smoothing, expected: "a number in [0, 1)")
        }
        guard (0...1).contains(alpha) else { throw DefenseSettingError.outOfRange(Self.name, "alpha", alpha, expected: "a number in [0, 1]") }
        config.labelSmoothing = Float(smoothing)
        self.init(config: config, sharpness: SharpnessAwareMinimisation(rhoMax: rhoMax, rhoMin: rhoMin, adaptive: adaptive == 1, alpha: alpha))
    }

    public var settings: [String: Double] {
        config.settings.merging(["rho_max": sharpness.rhoMax, "rho_min": sharpness.rhoMin, "adaptive": sharpness.adaptive ? 1 : 0,
                                 "label_smoothing": Double(config.labelSmoothing), "alpha": sharpness.alpha]) { $1 }
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        try FineTuning.run(model, on: clean, config: config, sharpness: sharpness, label: Self.name, log: log)
        return DefenseDecision(pruned: [], details: ["sam": sharpness.adaptive ? "adaptive" : "plain"])
    }
}
