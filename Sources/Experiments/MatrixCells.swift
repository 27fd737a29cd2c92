import Attacks
import Backend
import Defenses
import Foundation
import Reports
import Support
import Training

/// What one cell task did, in `<cell folder>/cell.json`: written when it starts (running), when
/// it ends (done, with its leaderboard rows, or failed, with the error). A task killed by the
/// scheduler leaves "running" behind; `--collect` reports it with its job id.
public struct CellRecord: Codable, Equatable {
    public static let fileName = "cell.json"

    public enum Status: String, Codable { case running, done, failed }

    public var index: Int
    public var cell: String
    public var status: Status
    public var error: String?
    public var slurm: SlurmTask?
    public var seconds: Double?
    /// The cell's settings: a record made with other settings is stale, not a result of this run.
    public var settings: ExperimentSettings
    /// Its defenses' and detectors' leaderboard entries (empty until it is done).
    public var outcome: ExperimentRunner.CellOutcome

    public static func read(folder: String) -> CellRecord? {
        guard let data = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent(fileName)) else { return nil }
        return try? JSONDecoder().decode(CellRecord.self, from: data)
    }

    func write(folder: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Folder.create(folder)
        try AtomicFile.write(try encoder.encode(self), to: (folder as NSString).appendingPathComponent(Self.fileName))
    }
}

/// The Slurm job of a task, from the environment Slurm gives it.
public struct SlurmTask: Codable, Equatable {
    public var jobID: String
    public var arrayJobID: String?
    public var arrayTaskID: String?
    public var node: String?
    public var restarts: Int?

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", arrayJobID = "array_job_id", arrayTaskID = "array_task_id", node, restarts
    }

    public static func current(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> SlurmTask? {
        guard let job = environment["SLURM_JOB_ID"] else { return nil }
        return SlurmTask(jobID: job, arrayJobID: environment["SLURM_ARRAY_JOB_ID"], arrayTaskID: environment["SLURM_ARRAY_TASK_ID"],
                         node: environment["SLURMD_NODENAME"], restarts: environment["SLURM_RESTART_COUNT"].flatMap(Int.init))
    }

    /// `ARRAY_TASK` as squeue and scancel name it.
    public var name: String { arrayJobID.map { "\($0)_\(arrayTaskID ?? "?")" } ?? jobID }
}

extension ExperimentRunner {
    /// The matrix's defenses, required by cell-wise runs: their results are the leaderboard
    /// `--collect` gathers (the ANP chain's summary.json is one shared file, so it runs locally).
    static func cellDefenses(_ settings: ExperimentSettings) throws -> (defenses: [String], detectors: [DetectionMethod]) {
        let defenses = try settings.defenseList()
        let detectors = try settings.detectorList()
        guard !defenses.isEmpty || !detectors.isEmpty else {
            throw ConfigError(key: "matrix.defenses", "is empty: a matrix run cell by cell (--cell, --slurm, --collect) needs "
                + "--defenses or --detectors (the ANP chain without them runs locally)")
        }
        return (defenses, detectors)
    }

    static func cell(_ index: Int, of cells: [Cell]) throws -> Cell {
        guard cells.indices.contains(index) else {
            throw ConfigError(key: "cell", value: "\(index)", "is out of range: expected a cell index in 0...\(cells.count - 1) "
                + "(the matrix has \(cells.count) cells)")
        }
        return cells[index]
    }

    /// Runs one training cell (`index` of `cells(_:root:)`): poison, train, every defense, writing
    /// only inside the cell's folder (its stage folders, run_log.txt/.jsonl and cell.json), with
    /// the same resume rules as a local run. Returns its leaderboard rows.
    @discardableResult
    public static func runCell(_ settings: ExperimentSettings, index: Int, root: String, dataDirectory: String?, resume: Bool,
                               quiet: Bool, training: Backend, inference: Backend,
                               slurm: SlurmTask? = SlurmTask.current(),
                               onEpoch: ((String, EpochRecord) throws -> Void)? = nil) throws -> CellOutcome {
        let (defenses, detectors) = try cellDefenses(settings)
        let cell = try cell(index, of: try cells(settings, root: root))
        var record = CellRecord(index: index, cell: cell.relativeFolder, status: .running, slurm: slurm, settings: cell.settings,
                                outcome: CellOutcome())
        try record.write(folder: cell.folder)
        let start = Date()
        do {
            let experiment = try Experiment(settings: cell.settings, root: cell.experimentFolder, dataDirectory: dataDirectory,
                                            resume: resume, quiet: quiet, training: training, inference: inference,
                                            logDirectory: cell.folder)
            experiment.onEpoch = onEpoch
            experiment.log.say("== cell \(index) (\(cell.relativeFolder))" + (slurm.map { ", Slurm job \($0.name)" } ?? ""))
            record.outcome = try experiment.runCell(cell.attack, defenses: defenses, detectors: detectors,
                                                    relativeFolder: relative(cell.experimentFolder, root: root))
            record.status = .done
        } catch {
            record.status = .failed
            record.error = "\(error)"
        }
        record.seconds = Date().timeIntervalSince(start)
        try record.write(folder: cell.folder)
        if let error = record.error { throw CellError(cell: cell.relativeFolder, message: error) }
        return record.outcome
    }

    /// A cell that is not finished with this run's settings: why, and where to look.
    public struct CellProblem: Equatable, CustomStringConvertible {
        public var index: Int
        public var cell: String
        /// missing (never started), running (or killed: no end recorded), failed, or stale (other settings).
        public var state: String
        public var detail: String?
        /// The Slurm task (`ARRAY_TASK`) that ran it last, or the one it was submitted as.
        public var job: String?
        public var log: String?

        public var description: String {
            "cell \(index) \(cell): \(state)" + (detail.map { " (\($0))" } ?? "") + (job.map { ", Slurm job \($0)" } ?? "")
                + (log.map { ", log \($0)" } ?? "")
        }
    }

    public struct Collected {
        /// The finished cells' rows (nil when none finished).
        public var leaderboard: Leaderboard?
        public var problems: [CellProblem]
    }

    /// Gathers the finished cells of the run in `root` (its config.yaml) into leaderboard.json/.csv
    /// and the report; lists the others, with their Slurm job and log where one was submitted.
    /// Only this writes the run's shared files, each atomically.
    public static func collect(root: String, quiet: Bool) throws -> Collected {
        let configPath = (root as NSString).appendingPathComponent(configFileName)
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw FileError(configPath, "not found: --collect expects a run folder written by `backdoor run --slurm` (or --cell)")
        }
        let settings = try ExperimentConfigFile.settings(preset: "quick", configFile: configPath)
        _ = try cellDefenses(settings)
        let submissions = SlurmSubmission.submissions(root: root)
        var outcome = CellOutcome()
        var problems: [CellProblem] = []
        for cell in try cells(settings, root: root) {
            let record = CellRecord.read(folder: cell.folder)
            if let record, record.status == .done, record.settings == cell.settings {
                outcome.add(record.outcome)
                continue
            }
            let submitted = submissions.last { $0.cells.contains(cell.index) }
            var problem = CellProblem(index: cell.index, cell: cell.relativeFolder, state: "missing", detail: nil,
                                      job: submitted.map { "\($0.jobID)_\(cell.index)" },
                                      log: submitted.map { SlurmSubmission.logPath(root: root, jobID: $0.jobID, task: cell.index) })
            if let record {
                if record.settings != cell.settings {
                    problem.state = "stale"
                    problem.detail = "its cell.json was written with other settings"
                } else {
                    problem.state = record.status == .failed ? "failed" : "running or killed"
                    problem.detail = record.error
                }
                if let task = record.slurm, let array = task.arrayJobID {
                    problem.job = task.name
                    problem.log = SlurmSubmission.logPath(root: root, jobID: array, task: cell.index)
                }
            }
            problems.append(problem)
        }
        let finished = outcome.rows.count + outcome.detections.count
        let board = finished == 0 ? nil : try writeLeaderboard(outcome.leaderboard, root: root, quiet: quiet)
        try writeJSON(["finished_rows": finished, "problems": problems.map { p -> [String: Any] in
            ["index": p.index, "cell": p.cell, "state": p.state, "detail": p.detail ?? NSNull(), "job": p.job ?? NSNull(),
             "log": p.log ?? NSNull()]
        }], (root as NSString).appendingPathComponent(collectFileName))
        return Collected(leaderboard: board, problems: problems)
    }

    /// `--collect`'s account of the cells that are not finished.
    public static let collectFileName = "collect.json"
}

public struct CellError: Error, CustomStringConvertible {
    public var cell: String
    public var message: String
    public var description: String { "cell \(cell) failed: \(message)" }
}
