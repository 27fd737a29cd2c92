import ArgumentParser
import Attacks
import Datasets
import Defenses
import Experiments
import Foundation
import Support

/// `backdoor defend`: one post-training defense on a backdoored model, judged before and after.
struct DefendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "defend",
        abstract: "Repair a backdoored model with one defense; writes model.safetensors, defend_log.txt/.jsonl and result.json.",
        discussion: """
            Defenses and their settings (defaults are the papers' code's; set any with --set NAME=VALUE): \
            \(DefenseRegistry.all.map { type in "\(type.name) (" + type.defaults.keys.sorted().map { "\($0) \(String(format: "%g", type.defaults[$0]!))" }.joined(separator: ", ") + ")" }.joined(separator: "; ")). \
            The defender's clean data is the first --clean-frac of the split permutation (never the attacker's \
            share or the test set). result.json holds clean accuracy, ASR and robust accuracy (triggered \
            non-target test images against their true labels) before and after, the seconds, the settings, \
            and the pruned channels as {"layer", "index", "value"}.
            """)

    @Option(help: "The defense: \(DefenseRegistry.names.joined(separator: ", ")).") var defense: String
    @Option(help: "Backdoored model: our safetensors checkpoint or a PyTorch state_dict file.") var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match its architecture (mismatches skipped with a warning).")
    var nonStrict = false
    @Option(help: "Trigger information written by `backdoor train` (for ASR and robust accuracy).") var triggerInfo: String?
    @Option(help: "Output folder.") var outputDir = "runs/defend"
    @OptionGroup var data: DataOptions
    @OptionGroup var compute: ComputeOptions
    @Option(help: "Fraction of the training set held by the defender (default: the defense's, e.g. ANP's 0.01).")
    var cleanFrac: Double?
    @Option(help: "CLP: prune channels whose Lipschitz bound exceeds mean + u * std of their layer (--set u=...).") var clpU: Double?
    @Option(help: "ANP: prune the neurons whose mask is at most this (--set threshold=...; unused with --acc-ratio).") var threshold: Double?
    @Option(help: "ANP: mask-optimisation iterations, the reference's 2000 (--set iterations=...).") var nbIter: Int?
    @Option(help: "ft, fp, nad, fst, ft-sam: fine-tuning epochs (nad: the teacher's and the student's each); sau: unlearning rounds (n_rounds).")
    var epochs: Int?
    @Option(help: "ft, fp, nad, fst, ft-sam, sau: learning rate.") var lr: Double?
    @Option(help: "ft, fp, nad, fst, ft-sam, sau: batch size.") var batchSize: Int?
    @Option(help: "fp, rnp, anp: prune the most (fp: channels; rnp: sweep level; anp: threshold of 0, pruning_step, ..., pruning_max) before the defender's clean accuracy falls by this fraction of the unpruned model's (anp's default -1: prune at --threshold).")
    var accRatio: Double?
    @Option(help: "fp: fraction of the channels pruned per step.") var oncePruneRatio: Double?
    @Option(help: "nad: attention-loss weights of layer2, layer3, layer4, comma-separated (nad_beta1..3).") var nadBetas: String?
    @Option(help: "nad: power of the attention maps.") var nadP: Double?
    @Option(help: "fst: weight of the feature-shift penalty <W, W_orig> on the re-initialised classifier.") var fstAlpha: Double?
    @Option(help: "A setting of the defense, NAME=VALUE (repeatable; see the list above).") var set: [String] = []
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @Option(parsing: .unconditional, help: "Seed of the defense's draws (and of a generated split).", transform: parseSeed)
    var seed: UInt64 = 0

    /// The named flags: each sets settings of the defenses that have them.
    private func namedSettings() throws -> [(flag: String, keys: [String], value: Double?)] {
        var out: [(flag: String, keys: [String], value: Double?)] = [
            ("--clp-u", ["u"], clpU), ("--threshold", ["threshold"], threshold), ("--nb-iter", ["iterations"], nbIter.map(Double.init)),
            ("--epochs", ["epochs", "teacher_epochs", "n_rounds"], epochs.map(Double.init)), ("--lr", ["lr"], lr),
            ("--batch-size", ["batch_size"], batchSize.map(Double.init)), ("--acc-ratio", ["acc_ratio"], accRatio),
            ("--once-prune-ratio", ["once_prune_ratio"], oncePruneRatio), ("--nad-p", ["nad_p"], nadP), ("--fst-alpha", ["fst_alpha"], fstAlpha),
        ]
        if let nadBetas {
            let values = nadBetas.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard values.count == 3, values.allSatisfy({ $0 != nil }) else {
                throw ValidationError("--nad-betas \"\(nadBetas)\" is invalid: expected three numbers (layer2, layer3, layer4), e.g. 500,1000,1000")
            }
            out += values.enumerated().map { ("--nad-betas", ["nad_beta\($0.offset + 1)"], $0.element) }
        }
        return out
    }

    func overrides() throws -> [String: Double] {
        var out: [String: Double] = [:]
        let known = DefenseRegistry.type(named: defense)?.defaults ?? [:]
        for named in try namedSettings() {
            guard let value = named.value else { continue }
            let keys = named.keys.filter { known[$0] != nil }
            guard !keys.isEmpty else {
                let owners = DefenseRegistry.all.filter { type in named.keys.contains { type.defaults[$0] != nil } }.map { $0.name }
                throw ValidationError("\(named.flag) is a setting of \(owners.joined(separator: ", ")), not of --defense \(defense)")
            }
            for key in keys { out[key] = value }
        }
        for assignment in set {
            let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let value = Double(parts[1]) else {
                throw ValidationError("--set \"\(assignment)\": expected NAME=NUMBER, e.g. --set u=3")
            }
            out[parts[0]] = value
        }
        return out
    }

    func validate() throws {
        guard DefenseRegistry.type(named: defense) != nil else {
            throw ValidationError("--defense \(defense): unknown defense; expected one of " + DefenseRegistry.names.joined(separator: ", "))
        }
        if let cleanFrac {
            try FlagLimits.fraction(cleanFrac, flag: "--clean-frac")
            guard cleanFrac > 0 else { throw ValidationError("--clean-frac 0 leaves the defender no clean images") }
        }
        do { _ = try DefenseRegistry.make(defense, overrides: try overrides()) } catch let error as DefenseSettingError {
            // A range error of a setting a flag gave names the flag.
            if let key = error.key, let value = error.value,
               let flag = try namedSettings().first(where: { $0.keys.contains(key) && $0.value != nil })?.flag {
                throw ValidationError("\(flag) \(String(format: "%g", value)) \(error.message)")
            }
            throw ValidationError(error.description)
        }
        try FlagLimits.testLimit(testLimit)
    }

    func run() throws {
        let chosen = try DefenseRegistry.make(defense, overrides: try overrides(), seed: seed)
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, on: compute.backend(for: .inference))
        let dataSet = try data.load()
        var test = dataSet.test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }
        try Folder.create(outputDir)
        let (permutation, splitPath) = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDir,
                                                               seed: seed, count: dataSet.train.count)
        let fraction = cleanFrac ?? type(of: chosen).defaultCleanFraction
        let clean = dataSet.train.subset(DataSplit(permutation: permutation, valFrac: fraction).defender)
        _ = try DefenseRun.run(chosen, checkpoint: checkpoint, model: model, clean: clean, cleanSource: splitPath, test: test,
                               triggerInfo: try triggerInfo.map { try TriggerInfo.read(path: $0) }, directory: outputDir)
    }
}
