import ArgumentParser
import Attacks
import Datasets
import Defenses
import Foundation
import Models
import NN
import Support

/// `backdoor defend`: one post-training defense on a backdoored model, judged before and after.
struct DefendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "defend",
        abstract: "Repair a backdoored model with one defense; writes model.safetensors, defend_log.txt/.jsonl and result.json.",
        discussion: """
            Defenses: clp (channel Lipschitz pruning, data-free; --clp-u), anp (ANP's mask optimisation and \
            pruning at --threshold, with the reference's defaults), ft (fine-tuning), fp (fine-pruning: \
            --acc-ratio, --once-prune-ratio), nad (attention distillation: --nad-betas, --nad-p), fst (feature \
            shift tuning: --fst-alpha); --epochs, --lr and --batch-size default to each one's reference. The \
            defender's clean data is the first --clean-frac of the split permutation (never the attacker's \
            share or the test set). result.json holds clean accuracy, ASR and robust accuracy (triggered \
            non-target test images against their true labels) before and after, the seconds, the settings, \
            the pruned channels as {"layer", "index"} and what else the defense decided.
            """)

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case clp, anp, ft, fp, nad, fst

        /// The reference's share of the training set: ANP's 1%, BackdoorBench's 5%, FST's authors' 2%.
        var defaultCleanFrac: Double {
            switch self {
            case .clp, .anp: return 0.01
            case .ft, .fp, .nad: return 0.05
            case .fst: return 0.02
            }
        }
    }

    @Option(help: "The defense: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")).") var defense: Kind
    @Option(help: "Backdoored model: our safetensors checkpoint or a PyTorch state_dict file.") var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match its architecture (mismatches skipped with a warning).")
    var nonStrict = false
    @Option(help: "Trigger information written by `backdoor train` (for ASR and robust accuracy).") var triggerInfo: String?
    @Option(help: "Output folder.") var outputDir = "runs/defend"
    @OptionGroup var data: DataOptions
    @OptionGroup var compute: ComputeOptions
    @Option(help: ArgumentHelp("Fraction of the training set held by the defender (default: the defense's reference: "
        + "0.01 for anp and clp, 0.05 for ft, fp and nad, 0.02 for fst)."))
    var cleanFrac: Double?
    @Option(help: "CLP: prune channels whose Lipschitz bound exceeds mean + u * std of their layer.") var clpU = 3.0
    @Option(help: "ANP: prune the neurons whose mask is at most this.") var threshold = 0.2
    @Option(help: "ANP: mask-optimisation iterations (the reference's 2000).") var nbIter = 2000
    @Option(help: ArgumentHelp("ft, fp, nad, fst: fine-tuning epochs (nad: the teacher's and the student's each; "
        + "default 100 for ft and fp, 10 for nad and fst)."))
    var epochs: Int?
    @Option(help: "ft, fp, nad, fst: learning rate (default 0.01).") var lr: Float?
    @Option(help: "ft, fp, nad, fst: batch size (default 256; fst 128).") var batchSize: Int?
    @Option(help: "fp: stop pruning before the defender's clean accuracy falls by this fraction of the unpruned model's.")
    var accRatio = 0.1
    @Option(help: "fp: fraction of the channels pruned per step.") var oncePruneRatio = 0.01
    @Option(help: "nad: attention-loss weights of layer2, layer3, layer4, comma-separated.") var nadBetas = "500,1000,1000"
    @Option(help: "nad: power of the attention maps.") var nadP = 2.0
    @Option(help: "fst: weight of the feature-shift penalty <W, W_orig> on the re-initialised classifier.")
    var fstAlpha = 0.1
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @Option(parsing: .unconditional,
            help: "Seed of ANP's draws, of fine-tuning's shuffles and crops (and of a generated split).", transform: parseSeed)
    var seed: UInt64 = 0

    func validate() throws {
        try FlagLimits.fraction(cleanFrac, flag: "--clean-frac")
        guard cleanFrac != 0 else { throw ValidationError("--clean-frac 0 leaves the defender no clean images") }
        try FlagLimits.atLeastOne(epochs, flag: "--epochs")
        try FlagLimits.atLeastOne(batchSize, flag: "--batch-size")
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr \(lr) is invalid: expected a positive number") }
        guard accRatio > 0, accRatio <= 1 else {
            throw ValidationError("--acc-ratio \(accRatio) is out of range: expected a fraction in (0, 1]")
        }
        guard oncePruneRatio > 0, oncePruneRatio <= 1 else {
            throw ValidationError("--once-prune-ratio \(oncePruneRatio) is out of range: expected a fraction in (0, 1]")
        }
        _ = try betas()
        guard nadP > 0, nadP.isFinite else { throw ValidationError("--nad-p \(nadP) is invalid: expected a positive number") }
        guard fstAlpha >= 0, fstAlpha.isFinite else {
            throw ValidationError("--fst-alpha \(fstAlpha) is invalid: expected a number at least 0")
        }
        try FlagLimits.fraction(threshold, flag: "--threshold")
        guard clpU.isFinite else { throw ValidationError("--clp-u \(clpU) is invalid: expected a number") }
        try FlagLimits.atLeastOne(nbIter, flag: "--nb-iter")
        try FlagLimits.testLimit(testLimit)
    }

    func betas() throws -> [Double] {
        let values = nadBetas.split(separator: ",", omittingEmptySubsequences: false)
            .map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard values.count == 3, let betas = values as? [Double], betas.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw ValidationError("--nad-betas \"\(nadBetas)\" is invalid: expected three numbers at least 0 "
                + "(layer2, layer3, layer4), e.g. 500,1000,1000")
        }
        return betas
    }

    /// A fine-tuning configuration with the flags given over the reference's.
    func tuned(_ reference: FineTuningConfig) -> FineTuningConfig {
        var config = reference
        if let epochs { config.epochs = epochs }
        if let lr { config.learningRate = lr }
        if let batchSize { config.batchSize = batchSize }
        config.seed = seed
        return config
    }

    var chosen: Defense {
        switch defense {
        case .ft: return FTDefense(config: tuned(.backdoorBench))
        case .fp: return FPDefense(config: tuned(.backdoorBench), accRatio: accRatio, oncePruneRatio: oncePruneRatio)
        case .nad:
            return NADDefense(teacher: tuned(NADDefense.referenceTeacher), student: tuned(NADDefense.referenceStudent),
                              betas: (try? betas()) ?? [], p: nadP)
        case .fst: return FSTDefense(config: tuned(FSTDefense.authorsConfig), alpha: fstAlpha)
        case .clp: return CLPDefense(u: clpU)
        case .anp:
            var config = ANPConfig()
            config.iterations = nbIter
            config.printEvery = max(1, nbIter / 4)
            config.seed = seed
            return ANPDefense(config: config, threshold: threshold)
        }
    }

    func run() throws {
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, on: compute.backend(for: .inference))
        let dataSet = try data.load()
        var test = dataSet.test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }
        try Folder.create(outputDir)
        let (permutation, splitPath) = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDir,
                                                               seed: seed, count: dataSet.train.count)
        let split = DataSplit(permutation: permutation, valFrac: cleanFrac ?? self.defense.defaultCleanFrac)
        let clean = dataSet.train.subset(split.defender)
        let info = try triggerInfo.map { try TriggerInfo.read(path: $0) }
        let poison = try info.map { try Poisoning.testSet(test, trigger: $0.trigger, target: $0.target) }
        let triggered = try info.map { try Poisoning.triggeredTestSet(test, trigger: $0.trigger, target: $0.target) }

        let text = try TextLogWriter(path: (outputDir as NSString).appendingPathComponent("defend_log.txt"), truncate: true)
        let json = try JSONLinesWriter(path: (outputDir as NSString).appendingPathComponent("defend_log.jsonl"), truncate: true)
        func log(_ line: String) throws {
            print(line)
            text.append(line)
            try json.append(["time": ISO8601DateFormatter().string(from: Date()), "message": line])
        }
        let defense = chosen
        try log("\(defense.name) on \(checkpoint) (\(model.description)), \(clean.count) clean images from \(splitPath), "
            + model.backend.summary)
        let before = try DefenseMetrics.evaluate(model, clean: test, poison: poison, triggered: triggered)
        try log("before: " + Self.describe(before))
        let start = Date()
        let decision = try defense.repair(model, clean: clean, log: log)
        let seconds = Date().timeIntervalSince(start)
        let after = try DefenseMetrics.evaluate(model, clean: test, poison: poison, triggered: triggered)
        try log("after: " + Self.describe(after) + String(format: " (%.1f s)", seconds))

        let modelPath = (outputDir as NSString).appendingPathComponent("model.safetensors")
        try Checkpoint.save(model, to: modelPath, extraMetadata: ["defense": defense.name, "defended_checkpoint": checkpoint])
        let result: [String: Any] = [
            "defense": defense.name, "settings": defense.settings, "checkpoint": checkpoint, "model": modelPath,
            "clean_images": clean.count, "test_images": test.count, "seconds": seconds,
            "before": before.json, "after": after.json,
            "pruned": decision.pruned.map { ["layer": $0.layer, "index": $0.index, "value": $0.value] as [String: Any] },
            "decision": decision.details,
        ]
        try AtomicFile.write(try JSONOutput.string(result) + "\n", to: (outputDir as NSString).appendingPathComponent("result.json"))
        try log("wrote \(modelPath) and result.json (\(decision.pruned.count) channels pruned)")
    }

    static func describe(_ m: DefenseMetrics) -> String {
        String(format: "clean accuracy %.2f%%", 100 * m.cleanAccuracy)
            + (m.attackSuccessRate.map { String(format: ", ASR %.2f%%", 100 * $0) } ?? "")
            + (m.robustAccuracy.map { String(format: ", robust accuracy %.2f%%", 100 * $0) } ?? "")
    }
}
