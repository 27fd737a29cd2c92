import Foundation
import Support

/// `backdoor run --slurm`: the matrix as one Slurm job array, a task per training cell (its
/// defenses run in the same task: see docs/cluster.md). Every task runs the same `backdoor` binary
/// on one cell of the shared run folder with `--resume`, so a requeued task continues where it stopped.
public enum SlurmSubmission {
    /// sbatch's options for every task.
    public struct Options: Equatable {
        public var partition: String?
        public var time: String?
        public var cpusPerTask: Int?
        public var gres: String?
        /// At most this many tasks at once (the array's `%K`).
        public var maxParallel: Int?
        /// Further `#SBATCH` lines, as given (`--sbatch-arg=--mem=8G`).
        public var extraArguments: [String] = []

        public init(partition: String? = nil, time: String? = nil, cpusPerTask: Int? = nil, gres: String? = nil,
                    maxParallel: Int? = nil, extraArguments: [String] = []) {
            self.partition = partition
            self.time = time
            self.cpusPerTask = cpusPerTask
            self.gres = gres
            self.maxParallel = maxParallel
            self.extraArguments = extraArguments
        }

        /// Each value as sbatch takes it; the error names the flag and what is expected.
        public func validate() throws {
            if let time, time.range(of: #"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$"#, options: .regularExpression) == nil {
                throw ConfigError(key: "--time", value: time, "is not a Slurm time limit: expected HH:MM:SS, MM, or D-HH:MM:SS")
            }
            if let cpusPerTask, cpusPerTask < 1 { throw ConfigError.outOfRange("--cpus-per-task", cpusPerTask, expected: "at least 1") }
            if let maxParallel, maxParallel < 1 { throw ConfigError.outOfRange("--max-parallel", maxParallel, expected: "at least 1") }
            for (flag, value) in [("--partition", partition), ("--gres", gres)] {
                if let value, value.isEmpty || value.contains(where: \.isWhitespace) {
                    throw ConfigError(key: flag, value: "\"\(value)\"", "is not a Slurm name: expected a non-empty word without spaces")
                }
            }
            for argument in extraArguments where !argument.hasPrefix("-") || argument.contains("\n") {
                throw ConfigError(key: "--sbatch-arg", value: "\"\(argument)\"", "is not an sbatch option: expected one line such as --mem=8G")
            }
        }
    }

    /// What a submission wrote.
    public struct Prepared {
        public var script: String
        public var cellList: String
        /// The cells the array runs (all, or with resume the unfinished ones).
        public var cells: [Int]
        public var total: Int
    }

    /// A submitted array, recorded in `slurm/submissions.json` (for `--collect`'s job ids and logs).
    public struct Submission: Codable, Equatable {
        public var jobID: String
        public var cells: [Int]
        public var submitted: String
        enum CodingKeys: String, CodingKey { case jobID = "job_id", cells, submitted }
    }

    public static let folderName = "slurm"
    public static let scriptName = "matrix.sbatch"
    public static let cellListName = "cells.txt"
    static let submissionsName = "submissions.json"

    static func folder(_ root: String) -> String { (root as NSString).appendingPathComponent(folderName) }

    /// Where Slurm writes task `task` of array `jobID` (the script's --output pattern, filled in).
    public static func logPath(root: String, jobID: String, task: Int) -> String {
        folder(root) + "/logs/cell-\(task)-\(jobID).out"
    }

    /// Writes config.yaml, the cell list and the sbatch script into `root` (absolute). `command` is
    /// the `backdoor` binary and its flags (data, compute) without the cell; with `resume`, cells
    /// already finished with these settings are left out, else a folder holding cells is refused.
    public static func prepare(_ settings: ExperimentSettings, root: String, executable: String, arguments: [String],
                               workingDirectory: String, options: Options, resume: Bool) throws -> Prepared {
        try options.validate()
        _ = try ExperimentRunner.cellDefenses(settings)
        let cells = try ExperimentRunner.cells(settings, root: root)
        let finished = Set(cells.filter { cell in
            CellRecord.read(folder: cell.folder).map { $0.status == .done && $0.settings == cell.settings } ?? false
        }.map(\.index))
        if !resume, let held = cells.first(where: { CellRecord.read(folder: $0.folder) != nil }) {
            throw FileError(held.folder, "holds a cell of an earlier run: pass --resume to submit its unfinished cells, or choose another --output-dir")
        }
        let pending = cells.map(\.index).filter { !resume || !finished.contains($0) }
        try Folder.create(folder(root) + "/logs")
        try AtomicFile.write(try ExperimentConfigFile.yaml(settings), to: (root as NSString).appendingPathComponent(ExperimentRunner.configFileName))
        let list = "# task\tcell folder\tattack\tmodel\tseed\n" + cells.map {
            "\($0.index)\t\($0.relativeFolder)\t\($0.attack.rawValue)\t\($0.settings.model.name)\t\($0.settings.seed)\n"
        }.joined()
        let cellList = folder(root) + "/" + cellListName
        try AtomicFile.write(list, to: cellList)
        let scriptPath = folder(root) + "/" + scriptName
        // With every cell finished there is nothing to submit: the last script stays as it was.
        if !pending.isEmpty {
            try AtomicFile.write(script(root: root, executable: executable, arguments: arguments, workingDirectory: workingDirectory,
                                        cells: pending, options: options), to: scriptPath)
        }
        return Prepared(script: scriptPath, cellList: cellList, cells: pending, total: cells.count)
    }

    /// The array's task ids (not empty) as ranges (`0-3,5`), throttled by `%K`.
    static func arraySpec(_ cells: [Int], maxParallel: Int?) -> String {
        precondition(!cells.isEmpty, "an array of no tasks")
        var ranges: [String] = []
        var start = cells.first ?? 0, previous = start
        for cell in cells.dropFirst() + [Int.min] {
            if cell == previous + 1 { previous = cell; continue }
            ranges.append(start == previous ? "\(start)" : "\(start)-\(previous)")
            start = cell
            previous = cell
        }
        return ranges.joined(separator: ",") + (maxParallel.map { "%\($0)" } ?? "")
    }

    static func quoted(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: #"'\''"#) + "'" }

    static func script(root: String, executable: String, arguments: [String], workingDirectory: String, cells: [Int],
                       options: Options) -> String {
        var lines = ["#!/bin/bash",
                     "#SBATCH --job-name=backdoor-\((root as NSString).lastPathComponent)",
                     "#SBATCH --array=\(arraySpec(cells, maxParallel: options.maxParallel))",
                     "#SBATCH --output=\(folder(root))/logs/cell-%a-%A.out",
                     // A requeued task (preemption, node failure) appends to its log and resumes its cell.
                     "#SBATCH --open-mode=append",
                     "#SBATCH --requeue",
                     "#SBATCH --chdir=\(workingDirectory)"]
        if let p = options.partition { lines.append("#SBATCH --partition=\(p)") }
        if let t = options.time { lines.append("#SBATCH --time=\(t)") }
        if let c = options.cpusPerTask { lines.append("#SBATCH --cpus-per-task=\(c)") }
        if let g = options.gres { lines.append("#SBATCH --gres=\(g)") }
        lines += options.extraArguments.map { "#SBATCH \($0)" }
        // The task's threads follow its CPUs unless the submission chose them.
        let threads = options.cpusPerTask != nil && !arguments.contains("--threads") ? [#"--threads "$SLURM_CPUS_PER_TASK""#] : []
        let command = ([executable, "run", "--config", root + "/" + ExperimentRunner.configFileName, "--output-dir", root]
            + arguments).map(quoted) + [#"--cell "$SLURM_ARRAY_TASK_ID""#, "--resume", "--quiet"] + threads
        lines += ["# One training cell of the matrix per task (\(cellListName) lists them by task id): poison, train, every defense.",
                  "set -euo pipefail",
                  #"echo "cell $SLURM_ARRAY_TASK_ID: job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}, $(date -u +%FT%TZ)""#,
                  "exec " + command.joined(separator: " ")]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Submits the prepared script with sbatch and records the job id.
    public static func submit(_ prepared: Prepared, root: String, sbatch: String = "sbatch") throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [sbatch, "--parsable", prepared.script]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch { throw FileError(sbatch, "cannot be started (\(error)): is Slurm installed and on PATH?") }
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // --parsable prints `jobid[;cluster]`.
        let jobID = out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ";").first.map(String.init) ?? ""
        guard process.terminationStatus == 0, !jobID.isEmpty, jobID.allSatisfy(\.isNumber) else {
            throw FileError(prepared.script, "sbatch failed (exit \(process.terminationStatus)): "
                + (err + out).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        var all = submissions(root: root)
        all.append(Submission(jobID: jobID, cells: prepared.cells, submitted: ISO8601DateFormatter().string(from: Date())))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(all), to: folder(root) + "/" + submissionsName)
        return jobID
    }

    /// The arrays submitted for this run, oldest first.
    public static func submissions(root: String) -> [Submission] {
        guard let data = FileManager.default.contents(atPath: folder(root) + "/" + submissionsName) else { return [] }
        return (try? JSONDecoder().decode([Submission].self, from: data)) ?? []
    }
}
