import Attacks
import Backend
import Datasets
import Defenses
import Foundation
import Formats
import Models
import NN
import Reports
import Support
import Training

/// The numbers summary.json holds per attack.
public struct AttackOutcome: Equatable {
    public var cleanAccuracyBefore, asrBefore, cleanAccuracyAfter, asrAfter: Double
    /// The threshold pruned at, and how it was chosen (prune/result.json's selection rule).
    public var threshold: Double
    public var thresholdRule: String
    public var prunedNeurons: Int
    public var seconds: Double

    var json: [String: Any] {
        ["clean_acc_before": cleanAccuracyBefore, "asr_before": asrBefore, "clean_acc_after": cleanAccuracyAfter,
         "asr_after": asrAfter, "threshold": threshold, "threshold_rule": thresholdRule, "pruned_neurons": prunedNeurons,
         "seconds": seconds]
    }
}

/// `backdoor run` and `backdoor sweep`: the stages of each attack in their folders of `root`
/// (see docs/run-folder.md), resumable stage by stage.
public final class Experiment {
    public let settings: ExperimentSettings
    public let architecture: Architecture
    public let root: String
    let resume: Bool
    let log: ExperimentLog
    let dataset: CIFAR10.DataSet
    let permutation: [Int]
    let splitSource: String
    /// The split as stage configs record it: by content, so a binary or run folder elsewhere (a
    /// rebuilt tree, a cluster node) resumes instead of seeing a changed split.
    let splitIdentity: String
    /// Backends for training and for everything else (evaluation, attacks, ANP).
    let training: Backend
    let inference: Backend
    /// Stage folders that ran (not skipped) in this process, in order (for tests and the log).
    public private(set) var ranStages: [String] = []

    /// Per attack: whether an earlier stage ran in this process (then every later one runs too).
    var upstreamRan = false
    private var attackSeconds = 0.0

    /// `dataDirectory` is the `--data-dir` flag (nil: $BACKDOOR_DATA_DIR, else ./data);
    /// `logDirectory` holds run_log.txt/.jsonl (nil: `root`; a cluster task logs in its cell's folder).
    public init(settings: ExperimentSettings, root: String, dataDirectory: String?, resume: Bool,
                quiet: Bool, training: Backend, inference: Backend, logDirectory: String? = nil) throws {
        self.settings = settings
        architecture = try settings.model.architecture
        self.training = training
        self.inference = inference
        self.root = root
        self.resume = resume
        try Folder.create(logDirectory ?? root)
        log = try ExperimentLog(directory: logDirectory ?? root, quiet: quiet, append: resume)
        dataset = try DataDirectory.load(flag: dataDirectory)
        (permutation, splitSource) = try Permutation.resolve(splitFile: settings.data.splitFile, outputDirectory: root, seed: settings.seed,
                                                             count: dataset.train.count)
        splitIdentity = "permutation md5 " + MD5.hex(Data(permutation.map(String.init).joined(separator: "\n").utf8))
    }

    var quiet: Bool { log.quiet }

    // MARK: The pipeline

    /// Runs every attack, writes summary.json after each (keeping other attacks of an earlier
    /// summary when resuming) and the report at the end.
    @discardableResult
    public func run(attacks: [PoisonType]) throws -> [PoisonType: AttackOutcome] {
        var summary = readSummary()
        var outcomes: [PoisonType: AttackOutcome] = [:]
        for attack in attacks {
            let outcome = try runAttack(attack)
            outcomes[attack] = outcome
            summary[attack.rawValue] = outcome.json
            try writeSummary(summary)
        }
        try writeReport()
        return outcomes
    }

    func runAttack(_ attack: PoisonType) throws -> AttackOutcome {
        log.say("== \(attack.rawValue): \(settings.preset) preset, \(architecture.flagName) width \(settings.model.width), run folder \(root)")
        let model = try trainedModel(attack)
        let evaluation = try evaluate(attack, upstream: model)
        let anp = try optimizeMasks(attack, folderName: "anp", alpha: settings.defense.anp.alpha, upstream: evaluation.stage)
        let pruned = try prune(attack, anp: anp)
        let outcome = AttackOutcome(cleanAccuracyBefore: evaluation.cleanAccuracy, asrBefore: evaluation.asr,
                                    cleanAccuracyAfter: pruned.cleanAccuracy, asrAfter: pruned.asr,
                                    threshold: pruned.threshold, thresholdRule: pruned.rule, prunedNeurons: pruned.prunedNeurons,
                                    seconds: attackSeconds)
        log.say(String(format: "== %@: clean accuracy %.2f%% -> %.2f%%, ASR %.2f%% -> %.2f%% (threshold %g, %d neurons pruned), %@",
                       attack.rawValue, 100 * outcome.cleanAccuracyBefore, 100 * outcome.cleanAccuracyAfter,
                       100 * outcome.asrBefore, 100 * outcome.asrAfter, outcome.threshold, outcome.prunedNeurons,
                       ProgressBar.clock(outcome.seconds)))
        try log.event(["event": "attack_done", "attack": attack.rawValue].merging(outcome.json) { $1 })
        return outcome
    }

    /// The stages up to the backdoored model: (a clean model for clean-label's PGD and TrojanNN's
    /// trigger,) poisoning, training.
    func trainedModel(_ attack: PoisonType) throws -> TrainedModel {
        upstreamRan = false
        attackSeconds = 0
        var upstream: StageFolder?
        if attack == .cleanLabel || attack == .trojannn {
            upstream = try train(attack, folderName: "clean", poisonType: .benign, upstream: nil).stage
        }
        let poison = try poison(attack, upstream: upstream)
        return try train(attack, folderName: "train", poisonType: attack, upstream: poison)
    }

    /// The poisoned training set the poison stage wrote (for WaNet and BPP: one epoch's draw).
    func poisonedSet(_ attack: PoisonType) throws -> PoisonedTrainingSet {
        try PoisonedSetFolder.read(directory: (root as NSString).appendingPathComponent("\(attack.rawValue)/poison"))
    }

    // MARK: Stages

    /// Runs `body` in the stage folder unless the plan skips it; adds its seconds to the attack's.
    func stage(_ attack: String, _ name: String, config stageConfig: some StageConfig, upstream: StageFolder?,
                       outputs: [String], body: (StageFolder, _ continuing: Bool) throws -> Void) throws -> StageFolder {
        var config = stageConfig.jsonObject
        config["stage"] = name
        if let upstream { config["input"] = upstream.config }
        let folder = try StageFolder(path: (root as NSString).appendingPathComponent("\(attack)/\(name)"), config: config)
        let plan = folder.plan(resume: resume, upstreamRan: upstreamRan, outputs: outputs)
        if case .skip(let seconds) = plan {
            log.say("\(attack)/\(name): done earlier with the same configuration, skipped")
            try log.event(["event": "stage_skipped", "attack": attack, "stage": name])
            attackSeconds += seconds
            return folder
        }
        log.say("\(attack)/\(name): " + (plan == .continue ? "continuing" : "running"))
        try log.event(["event": "stage_started", "attack": attack, "stage": name, "continuing": plan == .continue])
        try folder.begin(plan)
        let start = Date()
        try body(folder, plan == .continue)
        let seconds = Date().timeIntervalSince(start)
        try folder.finish(seconds: seconds)
        upstreamRan = true
        attackSeconds += seconds
        ranStages.append("\(attack)/\(name)")
        log.say("\(attack)/\(name): finished in \(ProgressBar.clock(seconds))")
        try log.event(["event": "stage_finished", "attack": attack, "stage": name, "seconds": seconds])
        return folder
    }

    private func attackSettings(_ poisonType: PoisonType) throws -> AttackSettings {
        var attack = AttackSettings(poisonType: poisonType, target: settings.attack.target, rate: settings.attack.poisonRate(for: poisonType),
                                    patternPath: poisonType == .blend ? settings.attack.triggerPattern : nil, seed: settings.seed,
                                    data: try settings.attack.dataTriggers(for: poisonType),
                                    trojannn: settings.attack.trojannn.attack)
        attack.inputAware.fit(classifierWidth: settings.model.width, epochs: settings.training.epochs,
                              milestones: settings.training.milestones)
        return attack
    }

    private var dataConfig: DataIdentity {
        DataIdentity(split: splitIdentity, valFrac: settings.data.valFrac, trainLimit: settings.data.trainLimit,
                     testLimit: settings.evaluation.testLimit)
    }

    /// The poisoned training set (data.npy, label.npy, backdoor_list.npy: what the training stage
    /// trains on and the detectors inspect), its trigger information and an examples grid. Clean-label:
    /// PGD against the clean model, over the whole attacker split. TrojanNN: its trigger optimised
    /// against the clean model. WaNet and BPP: one epoch's draw (training poisons every batch afresh).
    private func poison(_ attack: PoisonType, upstream: StageFolder?) throws -> StageFolder {
        let rate = settings.attack.poisonRate(for: attack)
        let own = settings.attack.triggerOverrides(for: attack)
        let config = PoisonStageConfig(attack: attack.rawValue, poisonTarget: settings.attack.target, poisonRate: rate, seed: settings.seed,
                                       data: dataConfig, triggerPattern: attack == .blend ? settings.attack.triggerPattern : nil,
                                       triggerSettings: own.isEmpty ? nil : own,
                                       trojannn: attack == .trojannn ? settings.attack.trojannn : nil,
                                       pgd: attack == .cleanLabel ? settings.attack.pgd : nil)
        let pgd = CleanLabelPGD(epsilon: Float(settings.attack.pgd.eps), stepSize: Float(settings.attack.pgd.step),
                                iterations: settings.attack.pgd.iterations, restarts: settings.attack.pgd.restarts)
        // Input-aware has no trigger before training: its train stage writes the trigger information.
        let outputs = attack.trainsTrigger ? [] : [TriggerInfo.fileName, PoisonedSetFolder.examplesFile, PoisonedSetFolder.dataFile,
                                                   PoisonedSetFolder.labelFile, PoisonedSetFolder.flagFile]
        return try stage(attack.rawValue, "poison", config: config, upstream: upstream, outputs: outputs) { folder, _ in
            let attacker = dataset.train.subset(DataSplit(permutation: permutation, valFrac: settings.data.valFrac).attacker)
            if attack == .cleanLabel, let upstream {
                let (model, _) = try Checkpoint.load(upstream.file("model_last.safetensors"), on: inference)
                let trigger = try Trigger.checkerboard4Corner()
                // The rate is a share of the images the run trains on (the split's first --train-limit).
                let trained = settings.data.trainLimit ?? attacker.count
                let chosen = try CleanLabelAttack.chooseImages(labels: Array(attacker.labels.prefix(trained)), target: settings.attack.target,
                                                               rate: rate, seed: settings.seed)
                log.say("clean-label PGD on \(chosen.count) class-\(settings.attack.target) images, \(settings.attack.pgd.iterations) iterations")
                let progress = ProgressBar(total: pgd.stepCount(images: chosen.count), label: "PGD", quiet: quiet)
                let poisoned = try CleanLabelAttack.poison(attacker, classifier: model, target: settings.attack.target,
                                                           rate: rate, trigger: trigger, pgd: pgd,
                                                           seed: settings.seed, limit: trained, progress: progress)
                progress.finish()
                let info = try TriggerInfo(poisonType: attack.rawValue, trigger: trigger, target: settings.attack.target,
                                           notes: ["poison_rate": "\(rate)", "poison_rate_meaning": attack.rateMeaning])
                try PoisonedSetFolder.export(poisoned, clean: attacker, triggerInfo: info, to: folder.path)
                try writeJSON(["images": poisoned.count, "poisoned": poisoned.poisonedIndices.count], folder.file("poison.json"))
                return
            }
            let attackSettings = try attackSettings(attack)
            let cleanModel = try upstream.map { try Checkpoint.load($0.file("model_last.safetensors"), on: inference).model }
            let (info, note) = try attackSettings.triggerInfo(cleanModel: cleanModel, log: { self.log.say($0) })
            if let note { log.say("note: \(note)") }
            guard let info else {
                if attack.trainsTrigger { log.say("\(attack.rawValue): the trigger is trained with the classifier (the train stage writes it)") }
                return
            }
            let limited = dataset.train.subset(Array(DataSplit(permutation: permutation, valFrac: settings.data.valFrac)
                .attacker.prefix(settings.data.trainLimit ?? attacker.count)))
            var poisoned = try attackSettings.trainingSet(attackerSet: limited, triggerInfo: info)
            if let batchAttack = try attackSettings.batchAttack(triggerInfo: info) {
                // WaNet, BPP: the first epoch's batches stand for the attack here; training redraws them.
                poisoned = batchAttack.epochDraw(limited, batchSize: settings.training.batchSize, seed: settings.seed)
            }
            try PoisonedSetFolder.export(poisoned, clean: limited, triggerInfo: info, to: folder.path)
            try writeJSON(["images": poisoned.count, "poisoned": poisoned.poisonedIndices.count, "per_batch": attack.poisonsPerBatch],
                          folder.file("poison.json"))
            log.say("poisoned \(poisoned.poisonedIndices.count) of \(poisoned.count) training images")
        }
    }

    struct TrainedModel {
        var stage: StageFolder
        var modelPath: String { stage.file("model_last.safetensors") }
    }

    /// Called after each training epoch's checkpoint with the stage folder's name (progress for a
    /// larger program); an error it throws stops the run as an interruption would, resumably.
    public var onEpoch: ((String, EpochRecord) throws -> Void)?

    private func train(_ attack: PoisonType, folderName: String, poisonType: PoisonType,
                       upstream: StageFolder?) throws -> TrainedModel {
        var trainingConfig = TrainingConfig()
        trainingConfig.epochs = settings.training.epochs
        trainingConfig.batchSize = settings.training.batchSize
        trainingConfig.learningRate = Float(settings.training.lr)
        trainingConfig.milestones = settings.training.milestones
        trainingConfig.architecture = architecture.rawValue
        trainingConfig.width = settings.model.width
        trainingConfig.seed = settings.seed
        trainingConfig.augment = settings.training.augment
        trainingConfig.momentum = Float(settings.training.momentum)
        trainingConfig.weightDecay = Float(settings.training.weightDecay)
        let config = TrainStageConfig(attack: poisonType.rawValue, model: architecture.rawValue, width: settings.model.width,
                                      epochs: settings.training.epochs, batchSize: settings.training.batchSize, lr: settings.training.lr,
                                      milestones: settings.training.milestones, augment: settings.training.augment,
                                      momentum: Double(trainingConfig.momentum), weightDecay: Double(trainingConfig.weightDecay),
                                      seed: settings.seed, data: dataConfig)
        let attackSettings = try attackSettings(poisonType)
        let info = poisonType.trainsTrigger ? nil : try upstream.map { try TriggerInfo.read(path: $0.file(TriggerInfo.fileName)) }
        let outputs = ["model_last.safetensors", "train_log.jsonl"] + (info == nil ? [] : ["samples.png"])
            + (poisonType.trainsTrigger ? ["samples.png", TriggerInfo.fileName] : [])
        let folder = try stage(attack.rawValue, folderName, config: config, upstream: upstream, outputs: outputs) { folder, continuing in
            // Fixed-set attacks train on the set the poison stage wrote; WaNet and BPP on the clean split.
            let poisoned = try upstream.flatMap { poisonType.poisonsPerBatch ? nil : try PoisonedSetFolder.read(directory: $0.path) }
            let data = try ExperimentData.make(dataset: dataset, permutation: permutation, settings: attackSettings,
                                               triggerInfo: info, poisonedSet: poisoned, valFrac: settings.data.valFrac,
                                               trainLimit: settings.data.trainLimit,
                                               testLimit: settings.evaluation.testLimit, batchSize: settings.training.batchSize)
            let trainer = try Trainer(config: trainingConfig, trainSet: data.train, cleanTest: data.cleanTest,
                                      poisonTest: data.poisonTest, outputDirectory: folder.path,
                                      backend: training)
            trainer.quiet = quiet
            trainer.checkpointMetadata = ["poison_type": poisonType.rawValue]
            trainer.batchPoisoning = data.batchAttack
            let inputAware = try attackSettings.inputAwareTraining(trainSet: data.train, batchSize: settings.training.batchSize,
                                                                   augment: settings.training.augment, on: training)
            trainer.jointAttack = inputAware
            if let info {
                try info.write(path: folder.file(TriggerInfo.fileName))
                try PNG.write(Self.samples(clean: data.cleanTest, target: info.target, trigger: info.trigger),
                              path: folder.file("samples.png"))
            }
            log.say("training \(trainer.model.description) (\(trainer.model.parameterCount) parameters) on \(data.train.count) images "
                + "(\(data.poisonedCount) poisoned) for \(settings.training.epochs) epochs, \(training.summary)")
            let start = Date()
            var firstEpoch: Int?
            trainer.onEpoch = { [self] record in
                // Epochs restored from a resume state come back through the log, not here.
                let first = firstEpoch ?? record.epoch
                firstEpoch = first
                let done = record.epoch - first + 1
                let elapsed = Date().timeIntervalSince(start)
                let eta = elapsed / Double(done) * Double(settings.training.epochs - record.epoch)
                let asr = info == nil ? "" : String(format: ", ASR %.2f%%", 100 * record.poisonAcc)
                log.say(String(format: "%@/%@: epoch %d/%d, clean accuracy %.2f%%%@, elapsed %@, eta %@",
                               attack.rawValue, folderName, record.epoch, settings.training.epochs, 100 * record.cleanAcc,
                               asr, ProgressBar.clock(elapsed), ProgressBar.clock(eta)))
                try onEpoch?(folderName, record)
            }
            try trainer.run(resume: continuing)
            if let inputAware {
                let trained = try attackSettings.triggerInfo(trained: inputAware.attack)
                try trained.write(path: folder.file(TriggerInfo.fileName))
                try PNG.write(Self.samples(clean: data.cleanTest, target: trained.target, trigger: trained.trigger),
                              path: folder.file("samples.png"))
            }
        }
        return TrainedModel(stage: folder)
    }

    /// Clean test images of non-target classes above the same images with the trigger.
    static func samples(clean: ImageSet, target: Int, trigger: some ImageTrigger, count: Int = 8) -> PNGImage {
        let indices = Array(clean.labels.indices.filter { clean.labels[$0] != target }.prefix(count))
        let shown = clean.subset(indices)
        var triggered = shown
        trigger.apply(to: &triggered, at: Array(0..<shown.count))
        return ExampleGrid.make(clean: shown, poisoned: triggered, indices: Array(0..<shown.count))
    }

    struct Evaluated {
        var stage: StageFolder
        var cleanAccuracy: Double
        var asr: Double
    }

    /// The test images of the before/after numbers (all, unless --eval-limit).
    var evaluationTest: ImageSet {
        guard let limit = settings.evaluation.evalLimit, limit < dataset.test.count else { return dataset.test }
        return dataset.test.subset(Array(0..<limit))
    }

    /// The evaluation test set and its triggered twin for the trigger of a training stage.
    func evaluationSets(trainFolder: String) throws -> (clean: ImageSet, poison: ImageSet) {
        let info = try TriggerInfo.read(path: (trainFolder as NSString).appendingPathComponent(TriggerInfo.fileName), backend: inference)
        let clean = evaluationTest
        return (clean, try Poisoning.testSet(clean, trigger: info.trigger, target: info.target))
    }

    private func evaluate(_ attack: PoisonType, upstream trained: TrainedModel) throws -> Evaluated {
        let folder = try stage(attack.rawValue, "eval", config: EvaluationStageConfig(testImages: evaluationTest.count), upstream: trained.stage,
                               outputs: ["result.json"]) { folder, _ in
            let (model, _) = try Checkpoint.load(trained.modelPath, on: inference)
            let sets = try evaluationSets(trainFolder: trained.stage.path)
            let progress = ProgressBar(total: sets.clean.count + sets.poison.count, label: "evaluation", quiet: quiet)
            let metrics = try BackdoorMetrics.evaluate(model, clean: sets.clean, poison: sets.poison, progress: progress)
            progress.finish()
            try writeJSON(["clean_acc": metrics.cleanAccuracy, "clean_loss": metrics.cleanLoss, "asr": metrics.poisonAccuracy,
                           "poison_loss": metrics.poisonLoss, "clean_images": sets.clean.count,
                           "poison_images": sets.poison.count], folder.file("result.json"))
        }
        let result = try readJSON(folder.file("result.json"))
        let evaluated = Evaluated(stage: folder, cleanAccuracy: try number(result, "clean_acc", folder.file("result.json")),
                                  asr: try number(result, "asr", folder.file("result.json")))
        log.say(String(format: "%@: backdoored model: clean accuracy %.2f%%, ASR %.2f%% (%d test images)",
                       attack.rawValue, 100 * evaluated.cleanAccuracy, 100 * evaluated.asr, evaluationTest.count))
        return evaluated
    }
}

func writeJSON(_ object: [String: Any], _ path: String) throws {
    try AtomicFile.write(try JSONOutput.string(object) + "\n", to: path)
}

func readJSON(_ path: String) throws -> [String: Any] {
    guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read") }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw FileError(path, "is not a JSON object")
    }
    return object
}

func number(_ object: [String: Any], _ key: String, _ path: String) throws -> Double {
    guard let value = object[key] as? NSNumber else { throw FileError(path, "lacks the number \"\(key)\"") }
    return value.doubleValue
}
