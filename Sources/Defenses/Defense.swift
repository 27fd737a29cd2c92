import Datasets
import NN
import Training

/// A post-training defense: repairs a model in place from the defender's clean images (never the
/// test set) and says what it decided.
public protocol Defense {
    /// The `--defense` name.
    var name: String { get }
    /// Its settings, for result.json.
    var settings: [String: Double] { get }
    func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision
}

/// What a defense decided: the channels it pruned (with the value it ranked them by) and, for
/// result.json's `decision`, anything else it chose and how.
public struct DefenseDecision {
    public var pruned: [NeuronScore]
    public var details: [String: Any]
    public init(pruned: [NeuronScore], details: [String: Any] = [:]) {
        self.pruned = pruned
        self.details = details
    }
}

/// CLP as a defense (data-free: the clean images are not used).
public struct CLPDefense: Defense {
    public var u: Double
    public init(u: Double = 3) { self.u = u }
    public var name: String { "clp" }
    public var settings: [String: Double] { ["u": u] }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let pruned = try CLP.prune(model, u: u)
        try log("clp: \(pruned.count) channels above mean + \(u) std of their layer's Lipschitz bounds")
        return DefenseDecision(pruned: pruned)
    }
}

/// ANP's two steps with the reference's defaults: masks from the defender's images, then pruning
/// of every neuron whose mask is at most `threshold`. Its log evaluates on those images too.
public struct ANPDefense: Defense {
    public var config: ANPConfig
    public var threshold: Double
    public init(config: ANPConfig = ANPConfig(), threshold: Double = 0.2) {
        self.config = config
        self.threshold = threshold
    }
    public var name: String { "anp" }
    public var settings: [String: Double] {
        ["anp_eps": Double(config.eps), "anp_steps": Double(config.steps), "anp_alpha": Double(config.alpha),
         "iterations": Double(config.iterations), "threshold": threshold]
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let result = try ANP.optimizeMasks(model: model, data: ANPData(defender: clean, cleanTest: clean, poisonTest: nil),
                                           config: config) { entry in try log("anp: " + entry.line) }
        let pruned = Pruning.neurons(result.scores, atOrBelow: threshold)
        try Pruning.prune(model, neurons: pruned)
        try log("anp: pruned \(pruned.count) of \(result.scores.count) neurons with mask <= \(threshold)")
        return DefenseDecision(pruned: pruned)
    }
}

/// Clean accuracy, attack success rate and robust accuracy (triggered non-target images against
/// their true labels) of a model: what a defense is judged by.
public struct DefenseMetrics: Equatable {
    public var cleanAccuracy: Double
    public var attackSuccessRate: Double?
    public var robustAccuracy: Double?

    public static func evaluate(_ model: Model, clean: ImageSet, poison: ImageSet?, triggered: ImageSet?,
                                batchSize: Int = 256) throws -> DefenseMetrics {
        DefenseMetrics(cleanAccuracy: try Evaluation.evaluate(model, on: clean, batchSize: batchSize).accuracy,
                       attackSuccessRate: try poison.map { try Evaluation.evaluate(model, on: $0, batchSize: batchSize).accuracy },
                       robustAccuracy: try triggered.map { try Evaluation.evaluate(model, on: $0, batchSize: batchSize).accuracy })
    }

    public var json: [String: Any] {
        var out: [String: Any] = ["clean_acc": cleanAccuracy]
        if let attackSuccessRate { out["asr"] = attackSuccessRate }
        if let robustAccuracy { out["robust_acc"] = robustAccuracy }
        return out
    }
}
