import Attacks
import Defenses
import Foundation
import Models

/// Everything one `backdoor run` (or `sweep`) runs with, nested by concern. A preset file, then a
/// `--config` file, then the flags are laid over these defaults (the reference's, i.e. the
/// homework's); see `ExperimentConfigFile`. Encoded with snake_case keys, it is the YAML config,
/// summary.json's "config", and (section by section) each stage's config.json.
public struct ExperimentSettings: Codable, Equatable, ConfigSection {
    /// The preset the settings started from (a file in Presets/), recorded for the report.
    public var preset = "homework"
    public var data = DataSettings()
    public var model = ModelSettings()
    public var training = TrainingSettings()
    public var attack = AttackSection()
    public var defense = DefenseSection()
    public var evaluation = EvaluationSettings()
    /// What `backdoor run` runs: every attack x model x seed trained once, every defense on each.
    public var matrix = MatrixSettings()
    /// Seed of initialisation, shuffling, augmentation, poisoning, a generated split and the defenses.
    public var seed: UInt64 = 0

    public init() {}

    public struct DataSettings: Codable, Equatable, ConfigSection {
        /// Permutation of the 50,000 training indices; nil: the reference's (shipped); "seeded": one from `seed`.
        public var splitFile: String?
        /// The defender holds the first `val_frac` of the permutation; training uses the rest.
        public var valFrac = 0.1
        /// Train on the first N images of the attacker's split only.
        public var trainLimit: Int?
        public init() {}
    }

    public struct ModelSettings: Codable, Equatable, ConfigSection {
        /// A `--model` name.
        public var name = Architecture.resnet18.flagName
        /// The ResNet family's base width; the other models keep their reference width.
        public var width = 64
        public init() {}

        public var architecture: Architecture {
            get throws {
                guard let a = Architecture(flagName: name) else {
                    throw ConfigError(key: "model.name", "unknown model \"\(name)\"; expected one of "
                        + Architecture.allCases.map(\.flagName).joined(separator: ", "))
                }
                return a
            }
        }

        /// A preset's width is the ResNet family's; the other models keep their reference width.
        public mutating func useReferenceWidthOutsideResNets() throws {
            let a = try architecture
            if !a.takesWidthFlag { width = a.referenceWidth }
        }
    }

    /// The reference's train_backdoor_cifar.py.
    public struct TrainingSettings: Codable, Equatable, ConfigSection {
        public var epochs = 50
        public var batchSize = 128
        public var lr = 0.1
        public var milestones = [30, 40]
        public var momentum = 0.9
        public var weightDecay = 5e-4
        /// Random crop and flip.
        public var augment = true
        public init() {}
    }

    public struct AttackSection: Codable, Equatable, ConfigSection {
        public var poisonRate = 0.1
        public var target = 0
        /// 32x32 PNG for the Blend trigger; nil: the papers' pattern (shipped); "seeded": the tool's seeded noise.
        public var triggerPattern: String?
        public var pgd = PGDSettings()
        public var trojannn = TrojanNNRunSettings()
        /// Settings of single attacks over the run's, by attack name: `poison_rate` for any attack and
        /// each data trigger's own (docs/experiment-runner.md; e.g. `wanet: {poison_rate: 0.3, k: 4}`).
        public var settings: [String: [String: Double]] = [:]
        public init() {}

        /// The poisoning rate of `attack`: its own `poison_rate`, else the run's.
        public func poisonRate(for attack: PoisonType) -> Double { settings[attack.rawValue]?["poison_rate"] ?? poisonRate }

        /// The names `attack.settings.<attack>` may hold.
        public static func settingNames(for attack: PoisonType) -> [String] {
            (["poison_rate"] + DataTriggerSettings().named(for: attack).keys).sorted()
        }

        /// `attack`'s own trigger settings: its entry of `settings` but the rate.
        public func triggerOverrides(for attack: PoisonType) -> [String: Double] {
            (settings[attack.rawValue] ?? [:]).filter { $0.key != "poison_rate" }
        }

        /// The data-trigger settings of `attack`, its overrides set.
        public func dataTriggers(for attack: PoisonType) throws -> DataTriggerSettings {
            try DataTriggerSettings().setting(triggerOverrides(for: attack), for: attack)
        }
    }

    /// TrojanNN's trigger optimisation, BackdoorBench's defaults (its clean model trains with the
    /// training settings).
    public struct TrojanNNRunSettings: Codable, Equatable, ConfigSection {
        public var steps = 1000
        public var neurons = 2
        public var targetValue = 100.0
        public var stepSize = 0.1
        public var eps = 0.3
        public var layer = "linear"
        public init() {}

        /// The library's settings (the default mask).
        public var attack: TrojanNNSettings {
            var t = TrojanNNSettings()
            (t.steps, t.neurons, t.targetValue, t.stepSize, t.epsilon, t.layer) = (steps, neurons, targetValue, stepSize, eps, layer)
            return t
        }
    }

    /// The clean-label attack's PGD (its clean model trains with the training settings).
    public struct PGDSettings: Codable, Equatable, ConfigSection {
        public var iterations = 100
        public var restarts = 1
        public var eps = 16.0 / 255
        public var step = 2.0 / 255
        public init() {}
    }

    public struct DefenseSection: Codable, Equatable, ConfigSection {
        /// The ANP chain's stages (anp/, prune/; the reference's optimize_mask_cifar.py).
        public var anp = ANPSettings()
        public var pruning = PruningSettings()
        /// Settings of the defenses and detectors of the matrix by name, over each one's defaults
        /// (e.g. `clp: {u: 3}`, `strip: {frr: 0.05}`); `backdoor defend --help` lists them.
        public var settings: [String: [String: Double]] = [:]
        /// The defender's share of the training set for the matrix's defenses; nil: each defense's own default.
        public var cleanFrac: Double?
        public init() {}

        /// The key of `settings.<name>` that sets that defense's or detector's own clean share.
        public static let cleanFracKey = "clean_frac"

        /// The clean share of defense or detector `name`: its own `clean_frac`, else the run's, else `defaultFraction`.
        public func cleanFrac(for name: String, defaultFraction: Double) -> Double {
            settings[name]?[Self.cleanFracKey] ?? cleanFrac ?? defaultFraction
        }

        /// `settings.<name>` without the run's own key: what the defense or detector itself is given.
        public func methodSettings(for name: String) -> [String: Double] {
            (settings[name] ?? [:]).filter { $0.key != Self.cleanFracKey }
        }
    }

    public struct ANPSettings: Codable, Equatable, ConfigSection {
        /// The defender's clean share of the training set.
        public var frac = 0.01
        public var eps = 0.4
        public var steps = 1
        public var alpha = 0.2
        public var lr = 0.2
        public var iterations = 2000
        public var printEvery = 500
        public var batchSize = 128
        public init() {}
    }

    /// prune_neuron_cifar.py: the threshold sweep 0, step, ..., max and the pruned model's
    /// threshold: `threshold` (fixed, the reference's way), or with `acc_ratio` chosen on the
    /// defender's clean images among the sweep's thresholds (`Pruning.chooseThreshold`). One of the
    /// two is set, the other null.
    public struct PruningSettings: Codable, Equatable, ConfigSection {
        public var threshold: Double? = 0.2
        /// The largest sweep threshold before the first that costs this fraction of the unpruned
        /// model's clean accuracy on the defender's images.
        public var accRatio: Double?
        /// With `acc_ratio`: the threshold is chosen on the defender's images after ANP's (the next
        /// `holdout_frac` of the permutation, never trained on), not on those the masks were fitted
        /// to. 0: on ANP's own images. Masks fitted to a few hundred images keep exactly those
        /// images right while pruning costs unseen ones several points (docs/anp.md).
        public var holdoutFrac = 0.0
        public var max = 0.9
        public var step = 0.05
        public init() {}
    }

    public struct EvaluationSettings: Codable, Equatable, ConfigSection {
        /// Per-epoch, ANP-log and pruning-sweep evaluations on the first N test images.
        public var testLimit: Int?
        /// The before/after numbers (summary.json, leaderboard) on the first N test images; nil: all.
        public var evalLimit: Int?
        public init() {}
    }

    public struct MatrixSettings: Codable, Equatable, ConfigSection {
        /// Attack names, or ["all"].
        public var attacks = ["badnets"]
        /// Defense names (`backdoor defend`'s), or ["all"]; empty: the ANP chain (anp/, prune/) only.
        public var defenses: [String] = []
        /// Poisoned-sample detectors (`backdoor detect`'s methods), or ["all"]: each inspects every
        /// attack's poisoned training set through its trained model (the leaderboard's detection table).
        public var detectors: [String] = []
        /// Model names; empty: `model.name` alone.
        public var models: [String] = []
        /// Seeds; empty: `seed` alone.
        public var seeds: [UInt64] = []
        public init() {}
    }

    // MARK: Checks

    /// Every value in its range; the error names the dotted key (ConfigError's source is set by the caller).
    public func validate() throws {
        func atLeastOne(_ value: Int?, _ key: String) throws {
            if let value, value < 1 { throw ConfigError.outOfRange(key, value, expected: "at least 1") }
        }
        func fraction(_ value: Double?, _ key: String, openAtZero: Bool = false) throws {
            guard let value else { return }
            if !(0...1).contains(value) || (openAtZero && value == 0) {
                throw ConfigError.outOfRange(key, value, expected: "a number in \(openAtZero ? "(0" : "[0"), 1]")
            }
        }
        func positive(_ value: Double, _ key: String) throws {
            if !(value > 0 && value.isFinite) { throw ConfigError.outOfRange(key, value, expected: "a positive number") }
        }
        func nonNegative(_ value: Double, _ key: String) throws {
            if !(value >= 0 && value.isFinite) { throw ConfigError.outOfRange(key, value, expected: "a number >= 0") }
        }
        _ = try model.architecture
        if !(1...256).contains(model.width) { throw ConfigError.outOfRange("model.width", model.width, expected: "1...256") }
        try fraction(data.valFrac, "data.val_frac")
        try atLeastOne(data.trainLimit, "data.train_limit")
        try atLeastOne(training.epochs, "training.epochs")
        try atLeastOne(training.batchSize, "training.batch_size")
        try positive(training.lr, "training.lr")
        if training.milestones.contains(where: { $0 < 1 }) || training.milestones != training.milestones.sorted() {
            throw ConfigError(key: "training.milestones", "expected increasing epochs of at least 1, got \(training.milestones)")
        }
        try fraction(training.momentum, "training.momentum")
        try nonNegative(training.weightDecay, "training.weight_decay")
        try fraction(attack.poisonRate, "attack.poison_rate")
        for (name, values) in attack.settings.sorted(by: { $0.key < $1.key }) {
            guard let type = PoisonType(rawValue: name), PoisonType.experimentAttacks.contains(type) else {
                throw ConfigError(key: "attack.settings.\(name)", "unknown attack; expected one of "
                    + PoisonType.experimentAttacks.map(\.rawValue).joined(separator: ", "))
            }
            let names = AttackSection.settingNames(for: type)
            for key in values.keys.sorted() where !names.contains(key) {
                throw ConfigError(key: "attack.settings.\(name).\(key)", "is not a setting of \(name); its settings are "
                    + names.joined(separator: ", "))
            }
            if let rate = values["poison_rate"] { try fraction(rate, "attack.settings.\(name).poison_rate") }
            do {
                try AttackSettings(poisonType: type, data: try attack.dataTriggers(for: type)).validateDataTriggers()
            } catch let error as AttackError {
                throw ConfigError(key: "attack.settings.\(name)", "\(error)")
            }
        }
        if !(0...9).contains(attack.target) { throw ConfigError.outOfRange("attack.target", attack.target, expected: "a class in 0-9") }
        try atLeastOne(attack.pgd.iterations, "attack.pgd.iterations")
        if attack.pgd.restarts < 0 { throw ConfigError.outOfRange("attack.pgd.restarts", attack.pgd.restarts, expected: "at least 0") }
        try positive(attack.pgd.eps, "attack.pgd.eps")
        try positive(attack.pgd.step, "attack.pgd.step")
        try atLeastOne(attack.trojannn.steps, "attack.trojannn.steps")
        try atLeastOne(attack.trojannn.neurons, "attack.trojannn.neurons")
        try fraction(attack.trojannn.stepSize, "attack.trojannn.step_size", openAtZero: true)
        try fraction(attack.trojannn.eps, "attack.trojannn.eps", openAtZero: true)
        try fraction(defense.anp.frac, "defense.anp.frac", openAtZero: true)
        try nonNegative(defense.anp.eps, "defense.anp.eps")
        try atLeastOne(defense.anp.steps, "defense.anp.steps")
        try fraction(defense.anp.alpha, "defense.anp.alpha")
        try positive(defense.anp.lr, "defense.anp.lr")
        try atLeastOne(defense.anp.iterations, "defense.anp.iterations")
        try atLeastOne(defense.anp.printEvery, "defense.anp.print_every")
        try atLeastOne(defense.anp.batchSize, "defense.anp.batch_size")
        try fraction(defense.pruning.threshold, "defense.pruning.threshold")
        try fraction(defense.pruning.accRatio, "defense.pruning.acc_ratio", openAtZero: true)
        if (defense.pruning.threshold == nil) == (defense.pruning.accRatio == nil) {
            // The section, so that the error names the last layer that touched it.
            throw ConfigError(key: "defense.pruning", "set exactly one of defense.pruning.threshold (a fixed threshold) and defense.pruning.acc_ratio "
                                + "(the threshold chosen on the defender's clean images); the other null")
        }
        try fraction(defense.pruning.holdoutFrac, "defense.pruning.holdout_frac")
        if defense.pruning.holdoutFrac > 0 && defense.anp.frac + defense.pruning.holdoutFrac > data.valFrac + 1e-12 {
            throw ConfigError(key: "defense.pruning.holdout_frac", value: "\(defense.pruning.holdoutFrac)",
                              "with defense.anp.frac \(defense.anp.frac) reaches past the defender's share data.val_frac "
                                + "\(data.valFrac) into the training images; expected at most " + String(format: "%g", data.valFrac - defense.anp.frac))
        }
        try fraction(defense.pruning.max, "defense.pruning.max")
        try positive(defense.pruning.step, "defense.pruning.step")
        try fraction(defense.cleanFrac, "defense.clean_frac", openAtZero: true)
        try atLeastOne(evaluation.testLimit, "evaluation.test_limit")
        try atLeastOne(evaluation.evalLimit, "evaluation.eval_limit")
        _ = try attackList()
        _ = try defenseList()
        _ = try detectorList()
        for name in defense.settings.keys.sorted() {
            let values = defense.methodSettings(for: name)
            if let share = defense.settings[name]?[DefenseSection.cleanFracKey] {
                try fraction(share, "defense.settings.\(name).\(DefenseSection.cleanFracKey)", openAtZero: true)
            }
            do {
                if let method = DetectionMethod(rawValue: name) {
                    _ = try method.detector(overrides: values)
                } else if name == ABLSettings.name {
                    _ = try ABLSettings(overrides: values, seed: 0)
                } else {
                    _ = try DefenseRegistry.make(name, overrides: values)
                }
            } catch let error as DefenseSettingError {
                throw ConfigError(key: "defense.settings.\(name)", error.description)
            }
        }
    }

    // MARK: The matrix's cells

    public func attackList() throws -> [PoisonType] {
        let names = matrix.attacks == ["all"] ? PoisonType.experimentAttacks.map(\.rawValue) : matrix.attacks
        guard !names.isEmpty else { throw ConfigError(key: "matrix.attacks", "is empty; expected e.g. [badnets, blend]") }
        var out: [PoisonType] = []
        for name in names {
            guard let attack = PoisonType(rawValue: name), PoisonType.experimentAttacks.contains(attack) else {
                throw ConfigError(key: "matrix.attacks", "unknown attack \"\(name)\"; expected "
                    + PoisonType.experimentAttacks.map(\.rawValue).joined(separator: ", ") + " or all")
            }
            if !out.contains(attack) { out.append(attack) }
        }
        return out
    }

    /// The defenses a matrix runs: the post-training ones of the registry, then ABL, which
    /// trains its own model on the poison stage's set (a training-time defense).
    public static var matrixDefenseNames: [String] { DefenseRegistry.names + [ABLSettings.name] }

    static func defenseDefaults(_ name: String) -> [String: Double]? {
        name == ABLSettings.name ? ABLSettings.defaults : DefenseRegistry.type(named: name)?.defaults
    }

    public func defenseList() throws -> [String] {
        let names = matrix.defenses == ["all"] ? Self.matrixDefenseNames : matrix.defenses
        for name in names where Self.defenseDefaults(name) == nil {
            throw ConfigError(key: "matrix.defenses", "unknown defense \"\(name)\"; expected "
                + Self.matrixDefenseNames.joined(separator: ", ") + " or all")
        }
        for (name, values) in defense.settings {
            guard let defaults = Self.defenseDefaults(name) ?? DetectionMethod(rawValue: name)?.defaults else {
                throw ConfigError(key: "defense.settings.\(name)", "unknown defense or detector; expected one of "
                    + (Self.matrixDefenseNames + DetectionMethod.allCases.map(\.rawValue)).joined(separator: ", "))
            }
            var accepted = defaults
            // ABL uses no defender data, so it has no clean share of its own.
            if name != ABLSettings.name { accepted[DefenseSection.cleanFracKey] = 0 }
            for key in values.keys.sorted() where accepted[key] == nil {
                throw ConfigError(key: "defense.settings.\(name).\(key)", "is not a setting of \(name); its settings are "
                    + accepted.keys.sorted().joined(separator: ", "))
            }
        }
        return names.reduce(into: []) { if !$0.contains($1) { $0.append($1) } }
    }

    public func detectorList() throws -> [DetectionMethod] {
        let names = matrix.detectors == ["all"] ? DetectionMethod.allCases.map(\.rawValue) : matrix.detectors
        return try names.reduce(into: []) { out, name in
            guard let method = DetectionMethod(rawValue: name) else {
                throw ConfigError(key: "matrix.detectors", "unknown detector \"\(name)\"; expected "
                    + DetectionMethod.allCases.map(\.rawValue).joined(separator: ", ") + " or all")
            }
            if !out.contains(method) { out.append(method) }
        }
    }

    /// The (model, seed) pairs of the matrix, each with the settings of its cell.
    public func cells() throws -> [ExperimentSettings] {
        let models = matrix.models.isEmpty ? [model.name] : matrix.models
        let seeds = matrix.seeds.isEmpty ? [seed] : matrix.seeds
        return try models.flatMap { name in
            try seeds.map { seed in
                var cell = self
                cell.model.name = name
                try cell.model.useReferenceWidthOutsideResNets()
                cell.seed = seed
                cell.matrix.models = []
                cell.matrix.seeds = []
                return cell
            }
        }
    }

    /// The folder of one (model, seed) cell under the run folder: the run folder itself when the
    /// matrix has one model and one seed (the layout of docs/run-folder.md), else `<model>/seed-<s>`.
    public func cellFolder(root: String, of cell: ExperimentSettings) -> String {
        guard matrix.models.count > 1 || matrix.seeds.count > 1 else { return root }
        return (root as NSString).appendingPathComponent("\(cell.model.name)/seed-\(cell.seed)")
    }
}

extension PoisonType {
    /// The attacks `backdoor run` runs, in the report's order.
    public static let experimentAttacks: [PoisonType] = PoisonType.allCases.filter { $0 != .benign }
}
