import Attacks
import Backend
import Datasets
import Defenses
import Foundation
import Models
import Reports
import Support
import Training

/// `backdoor run`: the attack x defense (x model x seed) matrix. Each (attack, model, seed) is
/// trained once in its cell folder; every defense then runs on that model in a stage of its own
/// (`<attack>/defense-<name>/`, resumable: a changed defense setting reruns only that stage).
/// Without defenses the cells run the ANP chain (anp/, prune/, summary.json) as before.
public enum ExperimentRunner {
    @discardableResult
    public static func run(_ settings: ExperimentSettings, root: String, dataDirectory: String?, resume: Bool, quiet: Bool,
                           training: Backend, inference: Backend,
                           onEpoch: ((String, EpochRecord) throws -> Void)? = nil) throws -> Leaderboard? {
        let attacks = try settings.attackList()
        let defenses = try settings.defenseList()
        let detectors = try settings.detectorList()
        try Folder.create(root)
        try AtomicFile.write(try ExperimentConfigFile.yaml(settings), to: (root as NSString).appendingPathComponent(configFileName))
        var outcome = CellOutcome()
        for cell in try settings.cells() {
            let folder = settings.cellFolder(root: root, of: cell)
            let experiment = try Experiment(settings: cell, root: folder, dataDirectory: dataDirectory, resume: resume,
                                            quiet: quiet, training: training, inference: inference)
            experiment.onEpoch = onEpoch
            if defenses.isEmpty && detectors.isEmpty {
                try experiment.run(attacks: attacks)
                continue
            }
            for attack in attacks {
                outcome.add(try experiment.runCell(attack, defenses: defenses, detectors: detectors,
                                                   relativeFolder: relative(folder, root: root)))
            }
        }
        guard !defenses.isEmpty || !detectors.isEmpty else { return nil }
        return try writeLeaderboard(outcome.leaderboard, root: root, quiet: quiet)
    }

    /// What training cells gave: their defenses' and detectors' leaderboard entries.
    public struct CellOutcome: Codable, Equatable {
        public var rows: [Leaderboard.Cell] = []
        public var detections: [Leaderboard.DetectionCell] = []

        mutating func add(_ other: CellOutcome) {
            rows += other.rows
            detections += other.detections
        }

        var leaderboard: Leaderboard { Leaderboard(cells: rows, detectionCells: detections) }
    }

    /// The run's resolved settings in its folder: what `--collect` and cluster tasks read back.
    public static let configFileName = "config.yaml"

    /// One training cell of the matrix: an (attack, model, seed), poisoned and trained once, then
    /// every defense on it. Cluster tasks run one each (`--cell K`), in their own folder.
    public struct Cell: Equatable {
        public var index: Int
        public var attack: PoisonType
        /// The settings of its (model, seed).
        public var settings: ExperimentSettings
        /// The (model, seed) folder its Experiment runs in (the run folder with one model and seed).
        public var experimentFolder: String
        /// `experimentFolder/<attack>`: everything the cell writes is inside it.
        public var folder: String
        /// `folder` relative to the run folder.
        public var relativeFolder: String
    }

    /// The cells in the order a local run trains them (models, then seeds, then attacks): the
    /// order of the Slurm array's task ids.
    public static func cells(_ settings: ExperimentSettings, root: String) throws -> [Cell] {
        let attacks = try settings.attackList()
        var out: [Cell] = []
        for cell in try settings.cells() {
            let experimentFolder = settings.cellFolder(root: root, of: cell)
            for attack in attacks {
                let folder = (experimentFolder as NSString).appendingPathComponent(attack.rawValue)
                out.append(Cell(index: out.count, attack: attack, settings: cell, experimentFolder: experimentFolder,
                                folder: folder, relativeFolder: relative(folder, root: root)))
            }
        }
        return out
    }

    static func relative(_ folder: String, root: String) -> String {
        String(folder.dropFirst(root.count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
    }

    static func writeLeaderboard(_ board: Leaderboard, root: String, quiet: Bool) throws -> Leaderboard {
        try board.write(directory: root)
        let written = try ReportBuilder.write(runDirectory: root)
        if !quiet {
            print(board.table)
            print("leaderboard: \(root)/\(Leaderboard.jsonFileName), \(Leaderboard.csvFileName); report: \(written.htmlPath)")
        }
        return board
    }
}

extension Experiment {
    /// Every defense and detector on the attack's trained model (trained once): their leaderboard
    /// entries, with their folders under `relativeFolder` (the (model, seed) folder relative to the run folder).
    func runCell(_ attack: PoisonType, defenses: [String], detectors: [DetectionMethod],
                 relativeFolder: String) throws -> ExperimentRunner.CellOutcome {
        let trained = try trainedModel(attack)
        let trainedRan = upstreamRan
        let prefix = (relativeFolder.isEmpty ? "" : relativeFolder + "/") + "\(attack.rawValue)/"
        var outcome = ExperimentRunner.CellOutcome()
        outcome.rows = try defenses.compactMap { name in
            upstreamRan = trainedRan  // defenses are siblings: one running does not rerun the next
            let result: DefenseResult
            if name == ABLSettings.name {
                guard !attack.poisonsPerBatch else {
                    log.say("\(attack.rawValue): poisoned per batch, so no fixed training set for abl to isolate from; abl skipped")
                    return nil
                }
                result = try trainWithABL(attack, trained: trained)
            } else {
                result = try defend(attack, with: name, trained: trained)
            }
            return Leaderboard.Cell(
                attack: attack.rawValue, defense: name, model: settings.model.name, seed: settings.seed,
                cleanBefore: result.before.cleanAccuracy, asrBefore: result.before.attackSuccessRate ?? 0,
                cleanAfter: result.after.cleanAccuracy, asrAfter: result.after.attackSuccessRate ?? 0,
                robustBefore: result.before.robustAccuracy, robustAfter: result.after.robustAccuracy,
                seconds: result.seconds, folder: prefix + "defense-\(name)")
        }
        // Input-aware's triggers come from generators trained with the model: no poisoned set to inspect.
        if attack.trainsTrigger && !detectors.isEmpty {
            log.say("\(attack.rawValue): no poisoned training set (its trigger is trained with the model); detectors skipped")
        }
        outcome.detections = try (attack.trainsTrigger ? [] : detectors).map { method in
            upstreamRan = trainedRan
            let result = try detect(attack, with: method, trained: trained)
            return Leaderboard.DetectionCell(
                attack: attack.rawValue, method: method.rawValue, model: settings.model.name, seed: settings.seed,
                f1: result.metrics.f1, tpr: result.metrics.tpr, fpr: result.metrics.fpr, precision: result.metrics.precision,
                auroc: result.metrics.auroc, seconds: result.seconds, folder: prefix + "detect-\(method.rawValue)")
        }
        return outcome
    }

    /// The detection stage: the detector on the poisoned training set the poison stage wrote,
    /// seen through the trained model; scored against that set's truth.
    func detect(_ attack: PoisonType, with method: DetectionMethod, trained: TrainedModel) throws -> DetectionResult {
        let detector = try method.detector(overrides: settings.defense.methodSettings(for: method.rawValue), seed: settings.seed)
        let fraction = settings.defense.cleanFrac(for: method.rawValue, defaultFraction: DetectionMethod.defaultCleanFraction)
        let config = DetectStageConfig(detector: method.rawValue, settings: detector.settings, seed: settings.seed,
                                       cleanFrac: method.usesCleanImages ? fraction : nil)
        let folder = try stage(attack.rawValue, "detect-\(method.rawValue)", config: config, upstream: trained.stage,
                               outputs: [DetectionResult.fileName, DetectionResult.scoresFileName]) { folder, _ in
            let (model, _) = try Checkpoint.load(trained.modelPath, on: inference)
            let clean = method.usesCleanImages
                ? dataset.train.subset(DataSplit(permutation: permutation, valFrac: fraction).defender) : ImageSet(pixels: [], labels: [])
            let set = try poisonedSet(attack)
            _ = try DetectionResult.run(detector, model: model, inspected: set.images, truth: set.isPoisoned, clean: clean,
                                        checkpoint: trained.modelPath,
                                        poisonedSet: (root as NSString).appendingPathComponent("\(attack.rawValue)/poison"),
                                        directory: folder.path) { log.say("  \(attack.rawValue)/detect-\(method.rawValue): " + $0) }
        }
        let result = try DetectionResult.read(path: folder.file(DetectionResult.fileName))
        log.say("\(attack.rawValue)/detect-\(method.rawValue): F1 " + String(format: "%.3f", result.metrics.f1) + ", AUROC "
            + (result.metrics.auroc.map { String(format: "%.3f", $0) } ?? "n/a") + String(format: " (%.1f s)", result.seconds))
        return result
    }

    /// The defense stage: the defense (with the config's settings over its defaults) on the trained
    /// model, judged before and after on the evaluation test images.
    func defend(_ attack: PoisonType, with name: String, trained: TrainedModel) throws -> DefenseResult {
        let defense = try DefenseRegistry.make(name, overrides: settings.defense.methodSettings(for: name), seed: settings.seed)
        let fraction = settings.defense.cleanFrac(for: name, defaultFraction: type(of: defense).defaultCleanFraction)
        let config = DefenseStageConfig(defense: name, settings: defense.settings, cleanFrac: fraction, seed: settings.seed,
                                        testImages: evaluationTest.count)
        let folder = try stage(attack.rawValue, "defense-\(name)", config: config, upstream: trained.stage,
                               outputs: [DefenseResult.fileName, "model.safetensors"]) { folder, _ in
            let (model, _) = try Checkpoint.load(trained.modelPath, on: inference)
            let clean = dataset.train.subset(DataSplit(permutation: permutation, valFrac: fraction).defender)
            let info = try TriggerInfo.read(path: trained.stage.file(TriggerInfo.fileName), backend: inference)
            _ = try DefenseRun.run(defense, checkpoint: trained.modelPath, model: model, clean: clean, cleanSource: splitSource,
                                   test: evaluationTest, triggerInfo: info, directory: folder.path, quiet: true)
        }
        let result = try DefenseResult.read(path: folder.file(DefenseResult.fileName))
        log.say("\(attack.rawValue)/defense-\(name): " + DefenseRun.describe(result.before) + " -> "
            + DefenseRun.describe(result.after) + String(format: " (%.1f s)", result.seconds))
        return result
    }
}

extension Experiment {
    /// ABL's stage: a fresh model trained with Anti-Backdoor Learning on the poisoned training set
    /// the poison stage wrote (the set the undefended model trained on; its truth only scores the
    /// isolation), judged against that undefended model as the other defenses are.
    func trainWithABL(_ attack: PoisonType, trained: TrainedModel) throws -> DefenseResult {
        let name = ABLSettings.name
        // ABL's fine-tuning and unlearning augment as the run's training does, unless set.
        let overrides = ["augment": settings.training.augment ? 1.0 : 0].merging(settings.defense.settings[name] ?? [:]) { $1 }
        let abl = try ABLSettings(overrides: overrides, seed: settings.seed)
        let config = ABLStageConfig(defense: name, settings: abl.settings, seed: settings.seed, model: architecture.rawValue,
                                    width: settings.model.width, testImages: evaluationTest.count)
        let folder = try stage(attack.rawValue, "defense-\(name)", config: config, upstream: trained.stage,
                               outputs: [DefenseResult.fileName, "model.safetensors", ABLResult.fileName]) { folder, _ in
            let (undefended, _) = try Checkpoint.load(trained.modelPath, on: inference)
            let info = try TriggerInfo.read(path: trained.stage.file(TriggerInfo.fileName), backend: inference)
            let set = try poisonedSet(attack)
            let poisonFolder = (root as NSString).appendingPathComponent("\(attack.rawValue)/poison")
            _ = try DefenseRun.record(defense: name, settings: abl.settings, checkpoint: trained.modelPath, model: undefended,
                                      cleanImages: 0, uses: "trains a new model on the \(set.count)-image poisoned set of \(poisonFolder)",
                                      test: evaluationTest, triggerInfo: info, directory: folder.path, quiet: true) { sets, defenseLog in
                let model = try architecture.model(width: settings.model.width, seed: settings.seed, on: training)
                let result = try AntiBackdoorLearning.train(model, on: set.images, truth: set.isPoisoned, cleanTest: evaluationTest,
                                                            poisonTest: sets.poison, triggered: sets.triggered, settings: abl) { line in
                    try defenseLog(line)
                    log.say("  \(attack.rawValue)/defense-\(name): " + line)
                }
                try result.write(to: folder.path)
                var details: [String: Any] = ["training_images": set.count, "isolated": result.isolation.isolated.count,
                                              "isolation_loss_threshold": result.isolation.lossThreshold]
                if let metrics = result.isolation.metrics {
                    details["isolation_precision"] = metrics.precision
                    details["isolation_recall"] = metrics.recall
                }
                return (model, DefenseDecision(pruned: [], details: details))
            }
        }
        let result = try DefenseResult.read(path: folder.file(DefenseResult.fileName))
        log.say("\(attack.rawValue)/defense-\(name): " + DefenseRun.describe(result.before) + " -> "
            + DefenseRun.describe(result.after) + String(format: " (%.1f s)", result.seconds))
        return result
    }
}

extension Leaderboard {
    /// The rows as an aligned text table for the terminal.
    public var table: String {
        func p(_ s: Statistic?) -> String { s.map { String(format: "%6.2f", 100 * $0.mean) } ?? "     -" }
        let header = "attack        defense  model            seeds  clean_before  asr_before  clean_after  asr_after  robust    DER"
        let detectionHeader = "attack        method   model            seeds     F1   AUROC     TPR     FPR"
        let detectionLines = detection.isEmpty ? [] : [detectionHeader] + detection.map { r in
            r.attack.padding(toLength: 14, withPad: " ", startingAt: 0) + r.method.padding(toLength: 9, withPad: " ", startingAt: 0)
                + r.model.padding(toLength: 17, withPad: " ", startingAt: 0) + String(format: "%5d", r.seeds.count)
                + String(format: "  %.3f", r.f1.mean) + (r.auroc.map { String(format: "   %.3f", $0.mean) } ?? "       -")
                + String(format: "  %6.2f  %6.2f", 100 * r.tpr.mean, 100 * r.fpr.mean)
        }
        guard !rows.isEmpty else { return detectionLines.joined(separator: "\n") }
        return ([header] + rows.map { r in
            r.attack.padding(toLength: 14, withPad: " ", startingAt: 0) + r.defense.padding(toLength: 9, withPad: " ", startingAt: 0)
                + r.model.padding(toLength: 17, withPad: " ", startingAt: 0) + String(format: "%5d", r.seeds.count)
                + "        \(p(r.cleanAccBefore))      \(p(r.asrBefore))       \(p(r.cleanAcc))     \(p(r.asr))  \(p(r.robustAcc))"
                + String(format: "  %.3f", r.der.mean)
        } + (detectionLines.isEmpty ? [] : [""] + detectionLines)).joined(separator: "\n")
    }
}
