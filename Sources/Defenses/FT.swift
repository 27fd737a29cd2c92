import Datasets
import NN

/// Fine-tuning (FT) as BackdoorBench's defense/ft.py: cross-entropy on the defender's clean
/// images with SGD, the training augmentation and a cosine schedule.
public struct FTDefense: Defense {
    public var config: FineTuningConfig
    public init(config: FineTuningConfig = .backdoorBench) { self.config = config }
    public static let name = "ft"
    public static let defaults = FTDefense().settings
    /// BackdoorBench's 5%.
    public static let defaultCleanFraction = 0.05
    public init(settings: [String: Double], seed: UInt64) throws {
        self.init(config: try FineTuningConfig(settings: settings, seed: seed, defense: Self.name))
    }
    public var settings: [String: Double] { config.settings }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        try FineTuning.run(model, on: clean, config: config, label: "ft", log: log)
        return DefenseDecision(pruned: [])
    }
}
