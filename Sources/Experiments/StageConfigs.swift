import Foundation

/// The settings a stage runs with, one type per stage: its `config.json` is this value encoded
/// (snake_case keys, nil as null) with the stage's name and, under "input", its upstream's.
protocol StageConfig: ConfigSection, Codable, Equatable {
    /// Keys left out while nil: stages written before they existed recorded none, and still resume.
    static var keysOmittedWhenNil: Set<String> { get }
}

extension StageConfig {
    static var keysOmittedWhenNil: Set<String> { [] }

    var jsonObject: [String: Any] {
        ExperimentConfigFile.jsonObject(self).filter { !(Self.keysOmittedWhenNil.contains($0.key) && $0.value is NSNull) }
    }
}

/// The data a stage sees: the split by content, the defender's share and the limits.
struct DataIdentity: StageConfig {
    var split: String
    var valFrac: Double
    var trainLimit: Int?
    var testLimit: Int?
}

/// `<attack>/poison`: the poisoned training set and the trigger information.
struct PoisonStageConfig: StageConfig {
    var attack: String
    var poisonTarget: Int
    var poisonRate: Double
    var seed: UInt64
    var data: DataIdentity
    var triggerPattern: String?
    /// The attack's own trigger settings (`attack.settings.<attack>` but its rate).
    var triggerSettings: [String: Double]?
    var trojannn: ExperimentSettings.TrojanNNRunSettings?
    var pgd: ExperimentSettings.PGDSettings?

    static var keysOmittedWhenNil: Set<String> { ["trigger_settings", "trojannn", "pgd"] }
}

/// `<attack>/clean` and `<attack>/train`: a model trained on the upstream's set.
struct TrainStageConfig: StageConfig {
    var attack: String
    var model: String
    var width: Int
    var epochs: Int
    var batchSize: Int
    var lr: Double
    var milestones: [Int]
    var augment: Bool
    /// As the trainer uses them (Float), so the record says what ran.
    var momentum: Double
    var weightDecay: Double
    var seed: UInt64
    var data: DataIdentity
}

/// `<attack>/eval`: the backdoored model on the evaluation test images.
struct EvaluationStageConfig: StageConfig {
    var testImages: Int
}

/// `<attack>/anp` (and the sweep's `anp-alpha-*`): ANP's mask optimisation.
struct MaskStageConfig: StageConfig {
    var eps: Double
    var steps: Int
    var alpha: Double
    var lr: Double
    var iterations: Int
    var printEvery: Int
    var batchSize: Int
    var seed: UInt64
    var defenderFrac: Double
    var testLimit: Int?
}

/// `<attack>/prune`: the pruning sweeps and the pruned model.
struct PruneStageConfig: StageConfig {
    var threshold: Double?
    var accRatio: Double?
    var pruningMax: Double
    var pruningStep: Double
    var numberRows: Int
    var sweepTestLimit: Int?
    var testImages: Int
    /// nil when the threshold is chosen on ANP's own images (runs from before the holdout keep their identity).
    var holdoutFrac: Double?

    static var keysOmittedWhenNil: Set<String> { ["holdout_frac"] }
}

/// `<attack>/detect-<method>`: a detector on the poison stage's set.
struct DetectStageConfig: StageConfig {
    var detector: String
    var settings: [String: Double]
    var seed: UInt64
    /// Only for the detectors that use clean images.
    var cleanFrac: Double?

    static var keysOmittedWhenNil: Set<String> { ["clean_frac"] }
}

/// `<attack>/defense-<name>`: a post-training defense on the trained model.
struct DefenseStageConfig: StageConfig {
    var defense: String
    var settings: [String: Double]
    var cleanFrac: Double
    var seed: UInt64
    var testImages: Int
}

/// `<attack>/defense-abl`: a new model trained with ABL on the poison stage's set.
struct ABLStageConfig: StageConfig {
    var defense: String
    var settings: [String: Double]
    var seed: UInt64
    var model: String
    var width: Int
    var testImages: Int
}
