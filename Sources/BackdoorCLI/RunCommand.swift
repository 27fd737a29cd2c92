import ArgumentParser
import Attacks
import Datasets
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
            --threshold, or at the threshold --acc-ratio chooses on the defender's clean images), then summary.json. With --defenses (any of \(ExperimentSettings.matrixDefenseNames.joined(separator: ", ")), \
            or all): poison/ -> train/ once per attack (and model and seed: --models, --seeds), then \
            defense-<name>/ per defense (model.safetensors, result.json; abl, a training-time defense, trains its \
            own model on the poison stage's set, and skips WaNet, BPP and Input-aware, which poison per batch), then leaderboard.json and leaderboard.csv \
            (clean accuracy, ASR, robust accuracy, DER; mean and standard deviation over seeds) and the report's \
            leaderboard table and ASR heatmap. Each stage folder holds config.json, exactly what it ran with; \
            --resume skips the stages finished with the same configuration, continues an interrupted one, and \
            reruns a changed stage and those after it (a changed defense setting reruns only that defense). \
            Settings: the defaults (the reference's) <- --preset (Presets/*.yaml; quick: width 16, 12 epochs on \
            40,000 images with crops and flips, 200 ANP iterations at eps 0.3 on 500 defender images, the threshold \
            chosen on 2,000 other defender images (acc_ratio 0.03, holdout_frac 0.04): about 8.5 minutes per attack \
            on an idle 2-core CPU; homework: the assignment, width 64, 50 epochs, 2000 ANP iterations: days on a CPU; \
            benchmark: every attack x every defense at the quick scale) <- --config FILE.yaml <- flags. \
            --print-config shows the result as YAML, which --config reads back. On a cluster: --slurm writes \
            config.yaml, slurm/cells.txt and slurm/matrix.sbatch (a job array, one task per training cell: poison, \
            train, every defense) and submits it; each task runs `run --config D/config.yaml --cell K --resume`; \
            --collect D gathers the finished cells into the leaderboard and lists the others with their Slurm \
            jobs and logs (docs/cluster.md).
            """)

    @OptionGroup var options: ExperimentOptions
    @Option(help: "Attacks (matrix.attacks), comma-separated: \(PoisonType.experimentAttacks.map(\.rawValue).joined(separator: ", ")), or all.") var attacks: String?
    @Option(help: "Defenses (matrix.defenses), comma-separated: \(ExperimentSettings.matrixDefenseNames.joined(separator: ", ")), or all; none: the ANP chain.")
    var defenses: String?
    @Option(help: "Poisoned-sample detectors (matrix.detectors), comma-separated: \(DetectionMethod.allCases.map(\.rawValue).joined(separator: ", ")), or all: each inspects every attack's poisoned training set (the leaderboard's detection table).")
    var detectors: String?
    @Option(help: "Models (matrix.models), comma-separated (each trained per attack and seed).") var models: String?
    @Option(help: "Seeds (matrix.seeds), comma-separated: the leaderboard gives means and standard deviations over them.")
    var seeds: String?
    @Flag(help: "Print the resolved configuration as YAML and exit.") var printConfig = false
    @OptionGroup(title: "Cluster") var cluster: ClusterOptions

    static func list(_ text: String?) -> [String]? {
        text.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    var matrixFlags: [(flag: String, key: String, value: Any)] {
        var out: [(flag: String, key: String, value: Any)] = []
        if let a = Self.list(attacks) { out.append(("--attacks", "matrix.attacks", a)) }
        if let d = Self.list(defenses) { out.append(("--defenses", "matrix.defenses", d)) }
        if let d = Self.list(detectors) { out.append(("--detectors", "matrix.detectors", d)) }
        if let m = Self.list(models) { out.append(("--models", "matrix.models", m)) }
        if let s = Self.list(seeds) { out.append(("--seeds", "matrix.seeds", s.map { UInt64($0) ?? UInt64.max })) }
        return out
    }

    func validate() throws {
        if let s = Self.list(seeds), let bad = s.first(where: { UInt64($0) == nil }) {
            throw ValidationError("--seeds: \"\(bad)\" is not a seed (a non-negative integer)")
        }
        if cluster.collect == nil { _ = try options.settings(extra: matrixFlags) }
    }

    func run() throws {
        if let root = cluster.collect { return try Self.collect(root, quiet: options.quiet) }
        let settings = try options.settings(extra: matrixFlags)
        if printConfig {
            print(try ExperimentConfigFile.yaml(settings), terminator: "")
            return
        }
        if cluster.slurm { return try submit(settings) }
        if let index = cluster.cell {
            try ExperimentRunner.runCell(settings, index: index, root: options.outputDir, dataDirectory: options.dataDir,
                                         resume: options.resume, quiet: options.quiet,
                                         training: options.compute.backend(for: .training),
                                         inference: options.compute.backend(for: .inference))
            return
        }
        try ExperimentRunner.run(settings, root: options.outputDir, dataDirectory: options.dataDir, resume: options.resume,
                                 quiet: options.quiet, training: options.compute.backend(for: .training),
                                 inference: options.compute.backend(for: .inference))
    }
}

/// `backdoor run --slurm`, `--cell` and `--collect`: the matrix cell by cell on a Slurm cluster.
struct ClusterOptions: ParsableArguments {
    @Flag(help: "Submit the matrix to Slurm as a job array (one task per attack x model x seed, its defenses in the same task) instead of running it here.")
    var slurm = false
    @Option(help: "Slurm partition of the tasks.") var partition: String?
    @Option(help: "Time limit of each task (HH:MM:SS or D-HH:MM:SS); a task stopped by it continues when resubmitted with --slurm --resume.") var time: String?
    @Option(help: "CPUs per task (the task's --threads follow them unless --threads is given).") var cpusPerTask: Int?
    @Option(help: "Generic resources per task, e.g. gpu:1 (once a GPU backend exists).") var gres: String?
    @Option(help: "At most K tasks running at once (the array's %K).") var maxParallel: Int?
    @Option(help: "A further #SBATCH line, e.g. --sbatch-arg=--mem=8G (repeatable).") var sbatchArg: [String] = []
    @Flag(help: "With --slurm: write config.yaml, slurm/cells.txt and slurm/matrix.sbatch without submitting.") var dryRun = false
    @Option(parsing: .unconditional, help: "Run only training cell K of the matrix (slurm/cells.txt lists them), writing only inside its folder.")
    var cell: Int?
    @Option(help: "Gather the finished cells of the run folder DIR into leaderboard.json/.csv and the report; list the missing or failed ones with their Slurm jobs and logs (exit 1 while any is).")
    var collect: String?

    var slurmOptions: SlurmSubmission.Options {
        SlurmSubmission.Options(partition: partition, time: time, cpusPerTask: cpusPerTask, gres: gres, maxParallel: maxParallel,
                                extraArguments: sbatchArg)
    }

    func validate() throws {
        let modes = [slurm ? "--slurm" : nil, cell.map { _ in "--cell" }, collect.map { _ in "--collect" }].compactMap { $0 }
        if modes.count > 1 { throw ValidationError("\(modes.joined(separator: " and ")): choose one") }
        let submitting = partition != nil || time != nil || cpusPerTask != nil || gres != nil || maxParallel != nil || !sbatchArg.isEmpty || dryRun
        if submitting && !slurm { throw ValidationError("--partition, --time, --cpus-per-task, --gres, --max-parallel, --sbatch-arg and --dry-run need --slurm") }
        if let cell, cell < 0 { throw ValidationError("--cell \(cell) is out of range: expected a cell index of at least 0") }
        do { try slurmOptions.validate() } catch let error as ConfigError { throw ValidationError(error.description) }
    }
}

extension RunCommand {
    /// The binary that runs now (the tasks run the same one).
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
    }

    func submit(_ settings: ExperimentSettings) throws {
        let root = (Self.absolute(options.outputDir) as NSString).standardizingPath
        // The tasks' data folder and compute as here; everything else comes from config.yaml.
        var arguments = ["--data-dir", DataDirectory.resolve(flag: options.dataDir).path]
        if let threads = options.compute.threads { arguments += ["--threads", "\(threads)"] }
        if let algorithm = options.compute.convAlgorithm { arguments += ["--conv-algorithm", algorithm.rawValue] }
        let prepared = try SlurmSubmission.prepare(settings, root: root, executable: Self.executable, arguments: arguments,
                                                         workingDirectory: FileManager.default.currentDirectoryPath,
                                                         options: cluster.slurmOptions, resume: options.resume)
        print("\(prepared.cells.count) of \(prepared.total) cells to run: \(prepared.cellList); script: \(prepared.script)")
        guard !cluster.dryRun, !prepared.cells.isEmpty else {
            if prepared.cells.isEmpty { print("every cell is finished: backdoor run --collect \(root)") }
            return
        }
        let job = try SlurmSubmission.submit(prepared, root: root)
        print("submitted job array \(job) (tasks \(job)_K for cell K); logs: \(root)/\(SlurmSubmission.folderName)/logs/")
        print("when it is done: backdoor run --collect \(root)")
    }

    static func collect(_ root: String, quiet: Bool) throws {
        let collected = try ExperimentRunner.collect(root: root, quiet: quiet)
        guard collected.problems.isEmpty else {
            let lines = collected.problems.map(\.description).joined(separator: "\n")
            throw Unfinished(text: "\(collected.problems.count) cells are not finished (see \(root)/\(ExperimentRunner.collectFileName)):\n" + lines)
        }
    }
}

/// `--collect` with cells left: the leaderboard holds the finished ones; exit 1 names the rest.
struct Unfinished: Error, CustomStringConvertible {
    var text: String
    var description: String { text }
}
