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
    @Option(help: "ANP: prune the neurons whose mask is at most this (--set threshold=...).") var threshold: Double?
    @Option(help: "ANP: mask-optimisation iterations, the reference's 2000 (--set iterations=...).") var nbIter: Int?
    @Option(help: "A setting of the defense, NAME=VALUE (repeatable; see the list above).") var set: [String] = []
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @Option(parsing: .unconditional, help: "Seed of the defense's draws (and of a generated split).", transform: parseSeed)
    var seed: UInt64 = 0

    /// The named flags: each is one setting of one defense.
    private var namedSettings: [(flag: String, defense: String, key: String, value: Double?)] {
        [("--clp-u", "clp", "u", clpU), ("--threshold", "anp", "threshold", threshold), ("--nb-iter", "anp", "iterations", nbIter.map(Double.init))]
    }

    func overrides() throws -> [String: Double] {
        var out: [String: Double] = [:]
        for named in namedSettings {
            guard let value = named.value else { continue }
            guard named.defense == defense else {
                throw ValidationError("\(named.flag) is a setting of \(named.defense), not of --defense \(defense)")
            }
            out[named.key] = value
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
