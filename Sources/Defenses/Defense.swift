import Datasets
import Formats
import NN
import Training

/// A post-training defense: repairs a model in place from the defender's clean images (never the
/// test set) and says what it decided. Its settings are named numbers with defaults, so that the
/// CLI, config files and the experiment runner build any defense the same way (`DefenseRegistry`).
public protocol Defense {
    /// The `--defense` name.
    static var name: String { get }
    /// Every setting with its default (the papers' code's), by its config name.
    static var defaults: [String: Double] { get }
    /// The defender's share of the training set unless `--clean-frac` says otherwise.
    static var defaultCleanFraction: Double { get }
    /// `settings` holds every key of `defaults`; `seed` drives the defense's random draws.
    init(settings: [String: Double], seed: UInt64) throws
    /// Its settings, for result.json.
    var settings: [String: Double] { get }
    func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision
}

extension Defense {
    public var name: String { Self.name }
}

/// A bad defense setting; range errors name the setting and its value, so a caller can name its flag instead.
public struct DefenseSettingError: Error, CustomStringConvertible {
    public let defense: String?
    public let key: String?
    public let value: Double?
    public let message: String

    public init(_ message: String) { (defense, key, value, self.message) = (nil, nil, nil, message) }

    public static func outOfRange(_ defense: String, _ key: String, _ value: Double, expected: String) -> DefenseSettingError {
        DefenseSettingError(defense: defense, key: key, value: value, message: "is out of range: expected \(expected)")
    }

    private init(defense: String?, key: String?, value: Double?, message: String) {
        (self.defense, self.key, self.value, self.message) = (defense, key, value, message)
    }

    public var description: String {
        guard let defense, let key, let value else { return message }
        return "\(defense): \(key) \(String(format: "%g", value)) \(message)"
    }
}

/// The defenses by name: what `backdoor defend --defense` and the experiment runner's
/// `defenses` choose from. A new defense is added here and nowhere else.
public enum DefenseRegistry {
    public static let all: [Defense.Type] = [FTDefense.self, FPDefense.self, NADDefense.self, NCDefense.self, CLPDefense.self, RNPDefense.self,
                                          FSTDefense.self, ANPDefense.self, SAUDefense.self, FTSAMDefense.self]

    public static var names: [String] { all.map { $0.name } }

    public static func type(named name: String) -> Defense.Type? { all.first { $0.name == name } }

    /// The defense `name` with `overrides` over its defaults; an unknown name or setting is an error
    /// naming it and what is expected.
    public static func make(_ name: String, overrides: [String: Double] = [:], seed: UInt64 = 0) throws -> Defense {
        guard let type = type(named: name) else {
            throw DefenseSettingError("unknown defense \"\(name)\"; expected one of " + names.joined(separator: ", "))
        }
        for key in overrides.keys.sorted() where type.defaults[key] == nil {
            throw DefenseSettingError("\(key) is not a setting of \(name); its settings are "
                + type.defaults.keys.sorted().joined(separator: ", "))
        }
        for (key, value) in overrides where !value.isFinite {
            throw DefenseSettingError("\(name) setting \(key) is \(value): expected a finite number")
        }
        return try type.init(settings: type.defaults.merging(overrides) { $1 }, seed: seed)
    }
}

/// What a defense decided: the channels it pruned (with the value it ranked them by), for
/// result.json's `decision` anything else it chose and how, and pictures for the output folder by
/// file name (NC's reversed triggers).
public struct DefenseDecision {
    public var pruned: [NeuronScore]
    public var details: [String: Any]
    public var images: [String: PNGImage]
    public init(pruned: [NeuronScore], details: [String: Any] = [:], images: [String: PNGImage] = [:]) {
        self.pruned = pruned
        self.details = details
        self.images = images
    }
}

/// CLP as a defense (data-free: the clean images are not used).
public struct CLPDefense: Defense {
    public var u: Double
    public init(u: Double = 3) { self.u = u }
    public static let name = "clp"
    public static let defaults: [String: Double] = ["u": 3]
    /// Data-free; the clean share only feeds the before/after evaluation's logs.
    public static let defaultCleanFraction = 0.01
    public init(settings: [String: Double], seed: UInt64) throws { self.init(u: settings["u"]!) }
    public var settings: [String: Double] { ["u": u] }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let pruned = try CLP.prune(model, u: u)
        try log("clp: \(pruned.count) channels above mean + \(u) std of their layer's Lipschitz bounds")
        return DefenseDecision(pruned: pruned)
    }
}

/// ANP's two steps with the reference's defaults: masks from the defender's images, then pruning
/// of every neuron whose mask is at most `threshold`. Its log evaluates on those images too. With
/// `accRatio` the threshold is chosen instead among 0, `pruningStep`, ..., `pruningMax`
/// (`Pruning.chooseThreshold`): on the same images, or with `holdout` on that last share of them,
/// the masks being fitted on the rest.
public struct ANPDefense: Defense {
    public var config: ANPConfig
    public var threshold: Double
    /// nil: prune at `threshold` (the reference); else the budget of the chosen threshold.
    public var accRatio: Double?
    public var pruningMax: Double
    public var pruningStep: Double
    /// With `accRatio`: the share of the clean images kept from the masks to choose the threshold on.
    public var holdout: Double
    public init(config: ANPConfig = ANPConfig(), threshold: Double = 0.2, accRatio: Double? = nil,
                pruningMax: Double = 0.9, pruningStep: Double = 0.05, holdout: Double = 0) {
        self.config = config
        self.threshold = threshold
        self.accRatio = accRatio
        self.pruningMax = pruningMax
        self.pruningStep = pruningStep
        self.holdout = holdout
    }
    public static let name = "anp"
    /// acc_ratio -1: prune at `threshold`; a fraction in (0, 1]: choose the threshold on the defender's images.
    public static let defaults = ANPDefense().settings
    /// The reference's `--val-frac` of optimize_mask_cifar.py.
    public static let defaultCleanFraction = 0.01

    public init(settings: [String: Double], seed: UInt64) throws {
        var config = ANPConfig()
        config.eps = Float(settings["anp_eps"]!)
        config.steps = Int(settings["anp_steps"]!)
        config.alpha = Float(settings["anp_alpha"]!)
        config.iterations = Int(settings["iterations"]!)
        for key in ["iterations", "anp_steps"] where settings[key]! < 1 {
            throw DefenseSettingError.outOfRange(Self.name, key, settings[key]!, expected: "at least 1")
        }
        for key in ["threshold", "anp_alpha", "pruning_max"] where !(0...1).contains(settings[key]!) {
            throw DefenseSettingError.outOfRange(Self.name, key, settings[key]!, expected: "a number in [0, 1]")
        }
        if !(0..<1).contains(settings["holdout"]!) {
            throw DefenseSettingError.outOfRange(Self.name, "holdout", settings["holdout"]!, expected: "a number in [0, 1)")
        }
        if !(settings["pruning_step"]! > 0 && settings["pruning_step"]! <= 1) {
            throw DefenseSettingError.outOfRange(Self.name, "pruning_step", settings["pruning_step"]!, expected: "a number in (0, 1]")
        }
        let accRatio = settings["acc_ratio"]!
        if accRatio != -1 && !(accRatio > 0 && accRatio <= 1) {
            throw DefenseSettingError.outOfRange(Self.name, "acc_ratio", accRatio,
                                                 expected: "-1 (prune at threshold) or a fraction in (0, 1] (choose the threshold)")
        }
        if settings["holdout"]! > 0 && accRatio == -1 {
            throw DefenseSettingError.outOfRange(Self.name, "holdout", settings["holdout"]!,
                                                 expected: "0 with a fixed threshold (acc_ratio -1); the held-out images choose the threshold")
        }
        config.printEvery = max(1, config.iterations / 4)
        config.seed = seed
        self.init(config: config, threshold: settings["threshold"]!, accRatio: accRatio == -1 ? nil : accRatio,
                  pruningMax: settings["pruning_max"]!, pruningStep: settings["pruning_step"]!, holdout: settings["holdout"]!)
    }
    public var settings: [String: Double] {
        ["anp_eps": Double(config.eps), "anp_steps": Double(config.steps), "anp_alpha": Double(config.alpha),
         "iterations": Double(config.iterations), "threshold": threshold, "acc_ratio": accRatio ?? -1,
         "pruning_max": pruningMax, "pruning_step": pruningStep, "holdout": holdout]
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let heldOutCount = accRatio == nil ? 0 : Int(holdout * Double(clean.count))
        let maskImages = clean.subset(Array(0..<clean.count - heldOutCount))
        let choiceImages = heldOutCount > 0 ? clean.subset(Array(clean.count - heldOutCount..<clean.count)) : clean
        guard maskImages.count > 0 else {
            throw DefenseSettingError.outOfRange(Self.name, "holdout", holdout, expected: "a share that leaves the masks some of the \(clean.count) clean images")
        }
        let result = try ANP.optimizeMasks(model: model, data: ANPData(defender: maskImages, cleanTest: maskImages, poisonTest: nil),
                                           config: config) { entry in try log("anp: " + entry.line) }
        guard let accRatio else {
            let pruned = Pruning.neurons(result.scores, atOrBelow: threshold)
            try Pruning.prune(model, neurons: pruned)
            try log("anp: pruned \(pruned.count) of \(result.scores.count) neurons with mask <= \(threshold)")
            return DefenseDecision(pruned: pruned, details: ["threshold": threshold, "selection": "fixed threshold"])
        }
        let chosen = try Pruning.chooseThreshold(model, scores: result.scores, candidates: Pruning.thresholds(max: pruningMax, step: pruningStep),
                                                 accRatio: accRatio, clean: choiceImages, heldOut: heldOutCount > 0) { threshold, count, accuracy in
            try log(String(format: "anp: threshold %g prunes %d neurons, defender clean accuracy %.4f", threshold, count, accuracy))
        }
        try Pruning.prune(model, neurons: chosen.pruned)
        try log("anp: pruned \(chosen.pruned.count) of \(result.scores.count) neurons; threshold: \(chosen.rule)")
        return DefenseDecision(pruned: chosen.pruned, details: ["threshold": chosen.threshold, "selection": chosen.json])
    }
}

/// Clean accuracy, attack success rate and robust accuracy (triggered non-target images against
/// their true labels) of a model: what a defense is judged by.
public struct DefenseMetrics: Codable, Equatable {
    public var cleanAccuracy: Double
    public var attackSuccessRate: Double?
    public var robustAccuracy: Double?

    enum CodingKeys: String, CodingKey {
        case cleanAccuracy = "clean_acc", attackSuccessRate = "asr", robustAccuracy = "robust_acc"
    }

    public static func evaluate(_ model: Model, clean: ImageSet, poison: ImageSet?, triggered: ImageSet?,
                                batchSize: Int = 256) throws -> DefenseMetrics {
        DefenseMetrics(cleanAccuracy: try Evaluation.evaluate(model, on: clean, batchSize: batchSize).accuracy,
                       attackSuccessRate: try poison.map { try Evaluation.evaluate(model, on: $0, batchSize: batchSize).accuracy },
                       robustAccuracy: try triggered.map { try Evaluation.evaluate(model, on: $0, batchSize: batchSize).accuracy })
    }
}
