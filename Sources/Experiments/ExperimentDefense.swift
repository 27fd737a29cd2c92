import Attacks
import Datasets
import Defenses
import Foundation
import Formats
import Models
import NN
import Reports
import Support
import Training

extension Experiment {
    func anpConfig(alpha: Double) -> ANPConfig {
        var config = ANPConfig()
        config.eps = Float(settings.defense.anp.eps)
        config.steps = settings.defense.anp.steps
        config.alpha = Float(alpha)
        config.learningRate = Float(settings.defense.anp.lr)
        config.iterations = settings.defense.anp.iterations
        config.printEvery = settings.defense.anp.printEvery
        config.batchSize = settings.defense.anp.batchSize
        config.seed = settings.seed
        return config
    }

    /// ANP mask optimisation on the backdoored model (`RUN/<attack>/<folderName>/`): mask_values.txt,
    /// anp_log.txt and anp_log.jsonl, and a state file so an interrupted stage continues.
    func optimizeMasks(_ attack: PoisonType, folderName: String, alpha: Double, upstream: StageFolder,
                       attackFolder: String? = nil) throws -> StageFolder {
        let config = anpConfig(alpha: alpha)
        let anp = settings.defense.anp
        let stageConfig = MaskStageConfig(eps: anp.eps, steps: anp.steps, alpha: alpha, lr: anp.lr, iterations: anp.iterations,
                                          printEvery: anp.printEvery, batchSize: anp.batchSize, seed: settings.seed,
                                          defenderFrac: anp.frac, testLimit: settings.evaluation.testLimit)
        let trainFolder = (root as NSString).appendingPathComponent("\(attack.rawValue)/train")
        return try stage(attackFolder ?? attack.rawValue, folderName, config: stageConfig, upstream: upstream,
                         outputs: [MaskFile.fileName, "anp_log.jsonl"]) { folder, continuing in
            let (model, _) = try Checkpoint.load(trainFolder + "/model_last.safetensors", on: inference)
            let info = try TriggerInfo.read(path: trainFolder + "/" + TriggerInfo.fileName, backend: inference)
            var test = dataset.test
            if let limit = settings.evaluation.testLimit, limit < test.count { test = test.subset(Array(0..<limit)) }
            let defender = anpDefender
            let data = ANPData(defender: defender, cleanTest: test,
                               poisonTest: try Poisoning.testSet(test, trigger: info.trigger, target: info.target))
            let statePath = folder.file(ANP.stateFileName)
            // A continued run restarts from the state's iteration: drop log lines written after it.
            let resumedAt = continuing ? Self.stateIteration(statePath) : 0
            let jsonPath = folder.file("anp_log.jsonl"), textPath = folder.file("anp_log.txt")
            let kept = resumedAt > 0 ? try Self.logLines(jsonPath, upTo: resumedAt) : []
            try AtomicFile.write(kept.map { $0 + "\n" }.joined(), to: jsonPath)
            let jsonLog = try JSONLinesWriter(path: jsonPath, truncate: false)
            let textLog = try TextLogWriter(path: textPath, truncate: resumedAt == 0)
            let header = "ANP on \(trainFolder)/model_last.safetensors: \(defender.count) defender images, eps \(settings.defense.anp.eps), "
                + "alpha \(alpha), \(settings.defense.anp.iterations) iterations" + (resumedAt > 0 ? ", resuming at \(resumedAt)" : "")
            log.say(header)
            textLog.append(header)
            textLog.append(ANPLogEntry.header)
            let progress = ProgressBar(total: config.iterations, label: "anp", quiet: quiet)
            let start = Date()
            let result = try ANP.optimizeMasks(model: model, data: data, config: config, statePath: statePath,
                                               resume: continuing, evaluationBatchSize: 256, progress: progress) { entry in
                var json = entry.json
                json["time"] = entry.seconds  // the run-folder name of the column
                try jsonLog.append(json)
                textLog.append(entry.line)
                let done = entry.iteration - resumedAt
                let eta = Date().timeIntervalSince(start) / Double(max(done, 1)) * Double(config.iterations - entry.iteration)
                if !quiet { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
                log.say(String(format: "%@/%@: iteration %d/%d, clean accuracy %.2f%%, ASR %.2f%%, eta %@",
                               attack.rawValue, folderName, entry.iteration, config.iterations, 100 * entry.cleanAccuracy,
                               100 * (entry.poisonAccuracy ?? 0), ProgressBar.clock(eta)))
            }
            progress.finish()
            try MaskFile.write(result.scores, to: folder.file(MaskFile.fileName))
        }
    }

    static func stateIteration(_ path: String) -> Int {
        guard let file = try? SafeTensors.read(path: path) else { return 0 }
        return file.metadata["iteration"].flatMap(Int.init) ?? 0
    }

    static func logLines(_ path: String, upTo iteration: Int) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init).filter { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let at = object["iteration"] as? Int else { return false }
            return at <= iteration
        }
    }

    /// The defender's clean images of the ANP chain (the first `defense.anp.frac` of the split).
    var anpDefender: ImageSet {
        dataset.train.subset(DataSplit(permutation: permutation, valFrac: settings.defense.anp.frac).defender)
    }

    /// The defender's images the threshold is chosen on with `defense.pruning.holdout_frac`: the
    /// next share of the permutation after ANP's (inside the defender's `data.val_frac`).
    var thresholdHoldout: ImageSet {
        let start = DataSplit(permutation: permutation, valFrac: settings.defense.anp.frac).defender.count
        let count = DataSplit(permutation: permutation, valFrac: settings.defense.pruning.holdoutFrac).defender.count
        return dataset.train.subset(Array(permutation[start..<start + count]))
    }

    struct Pruned {
        var cleanAccuracy: Double
        var asr: Double
        var threshold: Double
        var prunedNeurons: Int
        /// How the threshold was chosen.
        var rule: String
    }

    /// The pruning sweeps (by threshold and by number, on the --test-limit images) and the model
    /// pruned at the threshold, fixed or chosen on the defender's images (evaluated on the
    /// evaluation test set, as the evaluation stage).
    func prune(_ attack: PoisonType, anp: StageFolder) throws -> Pruned {
        let trainFolder = (root as NSString).appendingPathComponent("\(attack.rawValue)/train")
        let pruning = settings.defense.pruning
        let config = PruneStageConfig(threshold: pruning.threshold, accRatio: pruning.accRatio, pruningMax: pruning.max,
                                      pruningStep: pruning.step, numberRows: Self.numberRows,
                                      sweepTestLimit: settings.evaluation.testLimit, testImages: evaluationTest.count,
                                      holdoutFrac: pruning.accRatio != nil && pruning.holdoutFrac > 0 ? pruning.holdoutFrac : nil)
        let outputs = [Pruning.Mode.threshold.fileName, Pruning.Mode.number.fileName, "result.json"]
        let folder = try stage(attack.rawValue, "prune", config: config, upstream: anp, outputs: outputs) { folder, _ in
            let modelPath = trainFolder + "/model_last.safetensors"
            let scores = try MaskFile.read(path: anp.file(MaskFile.fileName))
            let info = try TriggerInfo.read(path: trainFolder + "/" + TriggerInfo.fileName, backend: inference)
            let sets = try evaluationSets(trainFolder: trainFolder)
            let evaluate = { (model: Model) in try BackdoorMetrics.evaluate(model, clean: sets.clean, poison: sets.poison) }
            // The sweeps evaluate dozens of models: on the --test-limit subset; the chosen
            // threshold on the whole test set.
            let sweepTest = settings.evaluation.testLimit.map { dataset.test.subset(Array(0..<min($0, dataset.test.count))) } ?? dataset.test
            let sweepPoison = try Poisoning.testSet(sweepTest, trigger: info.trigger, target: info.target)
            let evaluateSweep = { (model: Model) in
                try BackdoorMetrics.evaluate(model, clean: sweepTest, poison: sweepPoison)
            }
            let thresholds = Pruning.thresholds(max: settings.defense.pruning.max, step: settings.defense.pruning.step)
            let perNumberRow = Double(max(1, scores.count / 2 / Self.numberRows))
            let numberMax = perNumberRow * Double(Self.numberRows)
            let progress = ProgressBar(total: thresholds.count + Self.numberRows + 2, label: "pruning", quiet: quiet)
            let rowLog = try JSONLinesWriter(path: folder.file("pruning_log.jsonl"), truncate: true)
            for (mode, max, step) in [(Pruning.Mode.threshold, settings.defense.pruning.max, settings.defense.pruning.step),
                                      (.number, numberMax, perNumberRow)] {
                let (model, _) = try Checkpoint.load(modelPath, on: inference)
                let rows = try Pruning.sweep(model, scores: scores, mode: mode, max: max, step: step, evaluate: evaluateSweep) { row in
                    progress.advance()
                    try rowLog.append(["sweep": mode.rawValue, "pruned": row.pruned, "mask": row.mask,
                                       "poison_acc": row.metrics.poisonAccuracy, "clean_acc": row.metrics.cleanAccuracy,
                                       "poison_loss": row.metrics.poisonLoss, "clean_loss": row.metrics.cleanLoss])
                }
                try AtomicFile.write(Pruning.sweepText(rows, mode: mode), to: folder.file(mode.fileName))
            }
            let (model, _) = try Checkpoint.load(modelPath, on: inference)
            let threshold: Double, chosen: [NeuronScore], selection: [String: Any]
            if let accRatio = pruning.accRatio {
                let heldOut = config.holdoutFrac != nil
                let choice = try Pruning.chooseThreshold(model, scores: scores, candidates: thresholds, accRatio: accRatio,
                                                         clean: heldOut ? thresholdHoldout : anpDefender, heldOut: heldOut) { t, count, accuracy in
                    log.say(String(format: "%@/prune: threshold %g prunes %d neurons, defender clean accuracy %.2f%%",
                                   attack.rawValue, t, count, 100 * accuracy))
                }
                (threshold, chosen, selection) = (choice.threshold, choice.pruned, choice.json)
            } else {
                threshold = pruning.threshold!
                chosen = Pruning.neurons(scores, atOrBelow: threshold)
                selection = ["rule": "fixed: defense.pruning.threshold \(threshold)"]
            }
            log.say("\(attack.rawValue)/prune: pruning at \(threshold) (\(chosen.count) neurons); rule: \(selection["rule"]!)")
            try Pruning.prune(model, neurons: chosen)
            let after = try evaluate(model)
            progress.finish()
            try Checkpoint.save(model, to: folder.file("model_pruned.safetensors"), extraMetadata: [
                "anp_threshold": "\(threshold)", "anp_pruned_neurons": "\(chosen.count)",
            ])
            try writeJSON(["threshold": threshold, "selection": selection, "pruned_neurons": chosen.count, "total_neurons": scores.count,
                           "clean_acc": after.cleanAccuracy, "asr": after.poisonAccuracy, "clean_loss": after.cleanLoss,
                           "poison_loss": after.poisonLoss], folder.file("result.json"))
        }
        let path = folder.file("result.json")
        let result = try readJSON(path)
        guard let pruned = result["pruned_neurons"] as? Int else { throw FileError(path, "lacks \"pruned_neurons\"") }
        guard let rule = (result["selection"] as? [String: Any])?["rule"] as? String else {
            throw FileError(path, "lacks the threshold's \"selection\" (written before the threshold could be chosen: rerun without --resume)")
        }
        return Pruned(cleanAccuracy: try number(result, "clean_acc", path), asr: try number(result, "asr", path),
                      threshold: try number(result, "threshold", path), prunedNeurons: pruned, rule: rule)
    }

    /// Rows of the by-number sweep (up to half of all neurons).
    static let numberRows = 10

    // MARK: Summary and report

    var summaryPath: String { (root as NSString).appendingPathComponent("summary.json") }

    /// Attacks of an earlier summary.json of this folder (kept when a run adds other attacks).
    func readSummary() -> [String: Any] {
        guard resume, let object = try? readJSON(summaryPath), let attacks = object["attacks"] as? [String: Any] else {
            return [:]
        }
        return attacks
    }

    func writeSummary(_ attacks: [String: Any]) throws {
        try writeJSON(["attacks": attacks, "preset": settings.preset, "config": ExperimentConfigFile.jsonObject(settings)], summaryPath)
    }

    func writeReport() throws {
        let written = try ReportBuilder.write(runDirectory: root)
        log.say("report: \(written.htmlPath) and \(written.markdownPath)")
        for problem in written.problems { log.say("report note: \(problem)") }
    }
}
