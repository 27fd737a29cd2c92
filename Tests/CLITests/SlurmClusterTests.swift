import Experiments
import Foundation
import Reports
import TestSupport
import XCTest
@testable import BackdoorCLI

/// `backdoor run --slurm` on a real one-node Slurm cluster started on this machine by
/// scripts/slurm/start-local-cluster.sh (and stopped, by its processes' ids, at the end of the
/// test whatever happens): a 2-attack x 2-defense toy matrix submitted as a job array, one task
/// cancelled with scancel mid-cell and resubmitted, then collected: the leaderboard equals that of
/// the same matrix run locally by the same binary. Where Slurm cannot start the test fails in CI
/// (BACKDOOR_REQUIRE_DATA=1 or CI set) and says why; elsewhere it is skipped.
final class SlurmClusterTests: XCTestCase {
    private var required: Bool {
        SharedData.isRequired || ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } == true
    }

    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "slurm-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Runs a command to its end (at most `timeout` seconds) and returns its status and output.
    @discardableResult
    private func shell(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 300) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let log = NSTemporaryDirectory() + "slurm-tests-output-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: log) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        let ended = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in ended.signal() }
        try process.run()
        if ended.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            throw Failure("\(arguments.joined(separator: " ")) did not end within \(Int(timeout)) s")
        }
        try handle.close()
        return (process.terminationStatus, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// The `backdoor` binary built beside this test bundle.
    private var backdoor: String {
        get throws {
            let bundle = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            let path = ((bundle as NSString).deletingLastPathComponent as NSString).appendingPathComponent("backdoor")
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw Failure("the backdoor binary is not at \(path): build it with `swift build -c release` first")
            }
            return path
        }
    }

    struct Failure: Error, CustomStringConvertible { var description: String; init(_ d: String) { description = d } }

    /// Waits until squeue no longer lists the array `job`.
    private func wait(for job: String, environment: [String: String], timeout: Double, logs: String) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let queue = try shell(["squeue", "-h", "-j", job, "-o", "%i %T"], environment: environment)
            if queue.status == 0 && queue.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return }
            Thread.sleep(forTimeInterval: 0.5)
        }
        let tails = (try? FileManager.default.contentsOfDirectory(atPath: logs))?.sorted().map { name in
            "\(name):\n" + ((try? String(contentsOfFile: logs + "/" + name, encoding: .utf8)) ?? "")
        }.joined(separator: "\n") ?? "(no logs)"
        throw Failure("job array \(job) still queued after \(Int(timeout)) s; task logs:\n\(tails)")
    }

    /// `run --slurm --dry-run` writes the script that runs this binary on each cell, submits nothing;
    /// cluster flags are checked and name themselves.
    func testDryRunWritesTheScriptForThisBinaryAndBadClusterFlagsNameThemselves() throws {
        let root = try temporaryDirectory() + "/run"
        let command = try RunCommand.parse(["--preset", "quick", "--attacks", "badnets,blend,clean-label", "--defenses", "clp,anp",
                                            "--output-dir", root, "--data-dir", "/data/cifar10", "--threads", "3", "--slurm", "--dry-run",
                                            "--max-parallel", "2", "--sbatch-arg=--mem=4G", "--quiet"])
        try command.run()
        let script = try String(contentsOfFile: root + "/slurm/matrix.sbatch", encoding: .utf8)
        XCTAssertTrue(script.contains("#SBATCH --array=0-2%2\n"), script)
        XCTAssertTrue(script.contains("#SBATCH --mem=4G\n"), script)
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        XCTAssertTrue(script.hasSuffix("exec '\(exe)' 'run' '--config' '\(root)/config.yaml' '--output-dir' '\(root)' '--data-dir' "
            + "'/data/cifar10' '--threads' '3' --cell \"$SLURM_ARRAY_TASK_ID\" --resume --quiet\n"), script)
        XCTAssertEqual(try ExperimentConfigFile.settings(preset: "quick", configFile: root + "/config.yaml").matrix.attacks,
                       ["badnets", "blend", "clean-label"])
        XCTAssertTrue(SlurmSubmission.submissions(root: root).isEmpty)

        func message(_ arguments: [String]) -> String {
            do { _ = try RunCommand.parse(["--defenses", "clp"] + arguments); return "no error" } catch {
                return RunCommand.message(for: error)
            }
        }
        XCTAssertEqual(message(["--dry-run"]), "--partition, --time, --cpus-per-task, --gres, --max-parallel, --sbatch-arg and --dry-run need --slurm")
        XCTAssertEqual(message(["--slurm", "--time", "90min"]), "--time: 90min is not a Slurm time limit: expected HH:MM:SS, MM, or D-HH:MM:SS")
        XCTAssertEqual(message(["--slurm", "--cell", "1"]), "--slurm and --cell: choose one")
        XCTAssertEqual(message(["--cell", "-1"]), "--cell -1 is out of range: expected a cell index of at least 0")
        let collect = try RunCommand.parse(["--collect", root + "/missing"])
        XCTAssertThrowsError(try collect.run()) { error in
            XCTAssertTrue("\(error)".contains("config.yaml"), "\(error)")
        }
    }

    func testMatrixOnALocalSlurmClusterEqualsTheLocalRunAfterACancelledTaskIsResubmitted() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let repository = SharedData.packageRoot()
        let missing = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel"].filter { tool in
            !["/usr/sbin", "/usr/bin", "/sbin", "/bin"].contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
        }
        guard missing.isEmpty else {
            let why = "Slurm cannot start: \(missing.joined(separator: ", ")) not installed (scripts/setup.sh installs slurm-wlm and munge)"
            if required { return XCTFail(why) }
            throw XCTSkip(why)
        }
        let binary = try backdoor
        let base = try temporaryDirectory()
        let state = base + "/cluster"
        // Registered before the start, so whatever it started is stopped, by the ids it recorded.
        addTeardownBlock { _ = try? self.shell(["bash", repository + "/scripts/slurm/stop-local-cluster.sh", state]) }
        let port = String(20000 + Int(getpid() % 20000))
        let started = try shell(["bash", repository + "/scripts/slurm/start-local-cluster.sh", state, port, "60"], timeout: 120)
        guard started.status == 0 else {
            return XCTFail("Slurm cannot start on this machine (start-local-cluster.sh exit \(started.status)):\n\(started.output)")
        }
        let slurm = ["SLURM_CONF": state + "/slurm.conf"]

        let config = base + "/tiny.yaml"
        try "preset: quick\ndefense:\n  settings:\n    anp:\n      iterations: 3\n".write(toFile: config, atomically: true, encoding: .utf8)
        let tiny = ["run", "--config", config, "--data-dir", shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt",
                    "--width", "4", "--epochs", "1", "--milestones", "1", "--train-limit", "1024", "--test-limit", "100",
                    "--eval-limit", "200", "--attacks", "badnets,blend", "--defenses", "clp,anp", "--threads", "1", "--quiet"]
        let local = try shell([binary] + tiny + ["--output-dir", base + "/local"])
        XCTAssertEqual(local.status, 0, local.output)

        let root = base + "/cluster-run"
        let submitted = try shell([binary] + tiny + ["--output-dir", root, "--slurm", "--cpus-per-task", "1", "--max-parallel", "2",
                                                     "--time", "00:10:00"], environment: slurm)
        XCTAssertEqual(submitted.status, 0, submitted.output)
        let job = try XCTUnwrap(SlurmSubmission.submissions(root: root).last?.jobID, submitted.output)
        XCTAssertTrue(submitted.output.contains("submitted job array \(job)"), submitted.output)

        // Cancel cell 0 once its training has started: it ends neither done nor failed.
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: root + "/badnets/train/config.json") && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertEqual(try shell(["scancel", "\(job)_0"], environment: slurm).status, 0)
        try wait(for: job, environment: slurm, timeout: 300, logs: root + "/slurm/logs")
        XCTAssertEqual(CellRecord.read(folder: root + "/badnets")?.status, .running, "cancelled mid-cell")
        XCTAssertEqual(CellRecord.read(folder: root + "/blend")?.slurm?.name, "\(job)_1")
        let partial = try shell([binary, "run", "--collect", root, "--quiet"])
        XCTAssertEqual(partial.status, 1, partial.output)
        XCTAssertTrue(partial.output.contains("cell 0 badnets: running or killed, Slurm job \(job)_0, log \(root)/slurm/logs/cell-0-\(job).out"),
                      partial.output)
        XCTAssertTrue(try String(contentsOfFile: root + "/slurm/logs/cell-0-\(job).out", encoding: .utf8).contains("cell 0: job \(job)_0"))

        // Resubmitted with --resume: only cell 0 runs again, continuing its stages.
        let again = try shell([binary] + tiny + ["--output-dir", root, "--slurm", "--resume", "--cpus-per-task", "1"], environment: slurm)
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("1 of 2 cells to run"), again.output)
        let second = try XCTUnwrap(SlurmSubmission.submissions(root: root).last?.jobID)
        XCTAssertNotEqual(second, job)
        try wait(for: second, environment: slurm, timeout: 300, logs: root + "/slurm/logs")
        let collected = try shell([binary, "run", "--collect", root, "--quiet"])
        XCTAssertEqual(collected.status, 0, collected.output)

        let expected = try Leaderboard.read(path: base + "/local/leaderboard.json")
        var board = try Leaderboard.read(path: root + "/leaderboard.json")
        XCTAssertEqual(board.cells.map(\.folder), ["badnets/defense-clp", "badnets/defense-anp", "blend/defense-clp", "blend/defense-anp"])
        for i in board.cells.indices { board.cells[i].seconds = expected.cells[i].seconds }
        XCTAssertEqual(Leaderboard(cells: board.cells), expected, "the cluster's leaderboard is the local run's")
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/report.html"))
    }
}
