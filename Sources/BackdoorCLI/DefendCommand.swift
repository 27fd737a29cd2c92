import ArgumentParser
import Attacks
import Datasets
import Defenses
import Formats
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
            pruning at --threshold, with the reference's defaults), nc (Neural Cleanse: a trigger reversed per class, \
            anomaly index by MAD, unlearning if a class is flagged; --nc-quick for the quick setting; writes \
            nc_mask_C.png and nc_trigger_C.png), rnp (unlearning, mask recovery, pruning of the original model at a \
            level chosen on the defender's clean images). The defender's clean data is the first \
            --clean-frac of the split permutation (never the attacker's share or the test set). result.json \
            holds clean accuracy, ASR and robust accuracy (triggered non-target test images against their \
            true labels) before and after, the seconds, the pruned channels as {"layer", "index"}, and the \
            defense's decisions (NC: anomaly_index, flagged_classes, mask_norms; RNP: selection, sweep).
            """)

    enum Kind: String, ExpressibleByArgument, CaseIterable { case clp, anp, nc, rnp }

    @Option(help: "The defense: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")).") var defense: Kind
    @Option(help: "Backdoored model: our safetensors checkpoint or a PyTorch state_dict file.") var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match its architecture (mismatches skipped with a warning).")
    var nonStrict = false
    @Option(help: "Trigger information written by `backdoor train` (for ASR and robust accuracy).") var triggerInfo: String?
    @Option(help: "Output folder.") var outputDir = "runs/defend"
    @OptionGroup var data: DataOptions
    @OptionGroup var compute: ComputeOptions
    @Option(help: "Fraction of the training set held by the defender (default: ANP's 0.01).") var cleanFrac = 0.01
    @Option(help: "CLP: prune channels whose Lipschitz bound exceeds mean + u * std of their layer.") var clpU = 3.0
    @Option(help: "ANP: prune the neurons whose mask is at most this.") var threshold = 0.2
    @Option(help: "ANP: mask-optimisation iterations (the reference's 2000).") var nbIter = 2000
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @OptionGroup var nc: NCOptions
    @OptionGroup var rnp: RNPOptions
    @Option(help: "NC: unlearning fine-tune epochs (default 100).") var epochs: Int?
    @Option(help: "NC fine-tune: SGD learning rate (cosine schedule; default 0.01).") var lr: Float?
    @Option(help: "NC (default 256) / RNP (default 128): batch size.") var batchSize: Int?
    @Option(parsing: .unconditional, help: "Seed of ANP's draws (and of a generated split).", transform: parseSeed)
    var seed: UInt64 = 0

    func validate() throws {
        try FlagLimits.fraction(cleanFrac, flag: "--clean-frac")
        guard cleanFrac > 0 else { throw ValidationError("--clean-frac 0 leaves the defender no clean images") }
        try FlagLimits.fraction(threshold, flag: "--threshold")
        guard clpU.isFinite else { throw ValidationError("--clp-u \(clpU) is invalid: expected a number") }
        try FlagLimits.atLeastOne(nbIter, flag: "--nb-iter")
        try FlagLimits.testLimit(testLimit)
        do {
            switch defense {
            case .nc: try ncConfig.validate()
            case .rnp: try rnpConfig().validate()
            case .clp, .anp: break
            }
        } catch let error as DefenseError { throw ValidationError(error.description) }
    }

    var ncConfig: NCConfig {
        var config = nc.config(seed: seed)
        if let epochs { config.fineTuneEpochs = epochs }
        if let lr { config.fineTuneLearningRate = lr }
        if let batchSize { config.batchSize = batchSize }
        return config
    }

    func rnpConfig() throws -> RNPConfig {
        var config = try rnp.config(seed: seed)
        if let batchSize { config.batchSize = batchSize }
        return config
    }

    func chosen() throws -> Defense {
        switch defense {
        case .clp: return CLPDefense(u: clpU)
        case .anp:
            var config = ANPConfig()
            config.iterations = nbIter
            config.printEvery = max(1, nbIter / 4)
            config.seed = seed
            return ANPDefense(config: config, threshold: threshold)
        case .nc: return NCDefense(config: ncConfig)
        case .rnp: return RNPDefense(config: try rnpConfig())
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
        let clean = dataSet.train.subset(DataSplit(permutation: permutation, valFrac: cleanFrac).defender)
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
        let defense = try chosen()
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
        for (file, image) in decision.images.sorted(by: { $0.key < $1.key }) {
            try PNG.write(image, path: (outputDir as NSString).appendingPathComponent(file))
        }
        var result: [String: Any] = [
            "defense": defense.name, "settings": defense.settings, "checkpoint": checkpoint, "model": modelPath,
            "clean_images": clean.count, "test_images": test.count, "seconds": seconds,
            "before": before.json, "after": after.json,
            "pruned": decision.pruned.map { ["layer": $0.layer, "index": $0.index, "value": $0.value] as [String: Any] },
        ]
        result.merge(decision.details) { kept, _ in kept }
        try AtomicFile.write(try JSONOutput.string(result) + "\n", to: (outputDir as NSString).appendingPathComponent("result.json"))
        try log("wrote \(modelPath) and result.json (\(decision.pruned.count) channels pruned)")
    }

    static func describe(_ m: DefenseMetrics) -> String {
        String(format: "clean accuracy %.2f%%", 100 * m.cleanAccuracy)
            + (m.attackSuccessRate.map { String(format: ", ASR %.2f%%", 100 * $0) } ?? "")
            + (m.robustAccuracy.map { String(format: ", robust accuracy %.2f%%", 100 * $0) } ?? "")
    }
}
