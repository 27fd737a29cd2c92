import ArgumentParser
import Attacks
import Defenses
import Experiments
import Foundation

/// `backdoor run`: the experiment matrix (attacks x defenses x models x seeds), or for each attack
/// the ANP chain from poisoning to pruned model, then the report.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run experiments from a preset or YAML config: each attack's model trained once, then the ANP chain or every --defenses; summary.json or leaderboard.json/.csv and the report.",
        discussion: """
            Without --defenses, for each attack in its own folder of --output-dir: (clean-label only: clean/, the \
            clean model the PGD attacks) poison/ -> train/ (backdoored model, per-epoch log, samples.png) -> eval/ \
            (whole test set) -> anp/ (mask_values.txt) -> prune/ (sweeps by threshold and number, result.json at \
            --threshold), then summary.json. With --defenses (any of \(DefenseRegistry.names.joined(separator: ", ")), \
            or all): poison/ -> train/ once per attack (and model and seed: --models, --seeds), then \
            defense-<name>/ per defense (model.safetensors, result.json), then leaderboard.json and leaderboard.csv \
            (clean accuracy, ASR, robust accuracy, DER; mean and standard deviation over seeds) and the report's \
            leaderboard table and ASR heatmap. Each stage folder holds config.json, exactly what it ran with; \
            --resume skips the stages finished with the same configuration, continues an interrupted one, and \
            reruns a changed stage and those after it (a changed defense setting reruns only that defense). \
            Settings: the defaults (the reference's) <- --preset (Presets/*.yaml; quick: width 16, 8 epochs on \
            20,000 images without augmentation, 200 ANP iterations, threshold 0.3: minutes per attack on an idle \
            2-core CPU; homework: the assignment, width 64, 50 epochs, 2000 ANP iterations: days on a CPU; \
            benchmark: every attack x every defense at the quick scale) <- --config FILE.yaml <- flags. \
            --print-config shows the result as YAML, which --config reads back.
            """)

    @OptionGroup var options: ExperimentOptions
    @Option(help: "Attacks (matrix.attacks), comma-separated: \(PoisonType.experimentAttacks.map(\.rawValue).joined(separator: ", ")), or all.") var attacks: String?
    @Option(help: "Defenses (matrix.defenses), comma-separated: \(DefenseRegistry.names.joined(separator: ", ")), or all; none: the ANP chain.")
    var defenses: String?
    @Option(help: "Models (matrix.models), comma-separated (each trained per attack and seed).") var models: String?
    @Option(help: "Seeds (matrix.seeds), comma-separated: the leaderboard gives means and standard deviations over them.")
    var seeds: String?
    @Flag(help: "Print the resolved configuration as YAML and exit.") var printConfig = false

    static func list(_ text: String?) -> [String]? {
        text.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    var matrixFlags: [(flag: String, key: String, value: Any)] {
        var out: [(flag: String, key: String, value: Any)] = []
        if let a = Self.list(attacks) { out.append(("--attacks", "matrix.attacks", a)) }
        if let d = Self.list(defenses) { out.append(("--defenses", "matrix.defenses", d)) }
        if let m = Self.list(models) { out.append(("--models", "matrix.models", m)) }
        if let s = Self.list(seeds) { out.append(("--seeds", "matrix.seeds", s.map { UInt64($0) ?? UInt64.max })) }
        return out
    }

    func validate() throws {
        if let s = Self.list(seeds), let bad = s.first(where: { UInt64($0) == nil }) {
            throw ValidationError("--seeds: \"\(bad)\" is not a seed (a non-negative integer)")
        }
        _ = try options.settings(extra: matrixFlags)
    }

    func run() throws {
        let settings = try options.settings(extra: matrixFlags)
        if printConfig {
            print(try ExperimentConfigFile.yaml(settings), terminator: "")
            return
        }
        try ExperimentRunner.run(settings, root: options.outputDir, dataDirectory: options.dataDir, resume: options.resume,
                                 quiet: options.quiet, training: options.compute.backend(for: .training),
                                 inference: options.compute.backend(for: .inference))
    }
}
