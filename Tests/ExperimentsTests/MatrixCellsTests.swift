import Attacks
import Foundation
import Reports
import TestSupport
import XCTest
@testable import Experiments

/// The matrix cell by cell, as cluster tasks run it: cells in a stable order, one cell writing only
/// inside its folder, `collect` naming the missing ones and, once all ran (in any order), giving
/// the leaderboard of a local run; and the sbatch script of `--slurm`.
final class MatrixCellsTests: XCTestCase {
    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "matrix-cells-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    private func settings(_ flags: [String: Any]) throws -> ExperimentSettings {
        try ExperimentConfigFile.settings(preset: "quick", flags: [
            "matrix.attacks": ["badnets", "blend"], "matrix.defenses": ["clp", "anp"],
        ].merging(flags) { $1 })
    }

    private func files(under root: String) -> Set<String> {
        Set((FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter { path in
            var isFolder: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: root + "/" + path, isDirectory: &isFolder)
            return !isFolder.boolValue
        })
    }

    func testCellsAreModelsThenSeedsThenAttacksInTheirFolders() throws {
        let root = "/runs/r"
        let one = try ExperimentRunner.cells(try settings([:]), root: root)
        XCTAssertEqual(one.map(\.relativeFolder), ["badnets", "blend"], "one model and seed: the run folder's layout")
        XCTAssertEqual(one.map(\.folder), ["/runs/r/badnets", "/runs/r/blend"])
        let many = try ExperimentRunner.cells(try settings(["matrix.models": ["resnet18", "vgg16-bn"], "matrix.seeds": [0, 1]]), root: root)
        XCTAssertEqual(many.map(\.relativeFolder), [
            "resnet18/seed-0/badnets", "resnet18/seed-0/blend", "resnet18/seed-1/badnets", "resnet18/seed-1/blend",
            "vgg16-bn/seed-0/badnets", "vgg16-bn/seed-0/blend", "vgg16-bn/seed-1/badnets", "vgg16-bn/seed-1/blend",
        ])
        XCTAssertEqual(many.map(\.index), Array(0..<8))
        XCTAssertEqual(many[6].settings.model.name, "vgg16-bn")
        XCTAssertEqual(many[6].settings.seed, 1)
        XCTAssertEqual(many[6].experimentFolder, "/runs/r/vgg16-bn/seed-1")
    }

    func testArraySpecCompressesRangesAndThrottles() {
        XCTAssertEqual(SlurmSubmission.arraySpec([0, 1, 2, 3], maxParallel: nil), "0-3")
        XCTAssertEqual(SlurmSubmission.arraySpec([0, 1, 2, 5, 7, 8], maxParallel: 2), "0-2,5,7-8%2")
        XCTAssertEqual(SlurmSubmission.arraySpec([4], maxParallel: 10), "4%10")
    }

    func testScriptRunsEveryCellOfTheArrayWithResumeAndResumeLeavesFinishedCellsOut() throws {
        let root = try temporaryDirectory() + "/run"
        let settings = try settings(["matrix.seeds": [0, 1]])
        let options = SlurmSubmission.Options(partition: "cpu", time: "1-02:00:00", cpusPerTask: 4, gres: "gpu:1", maxParallel: 3,
                                              extraArguments: ["--mem=8G"])
        let prepared = try SlurmSubmission.prepare(settings, root: root, executable: "/opt/bin/backdoor", arguments: ["--data-dir", "/data/c it"],
                                                   workingDirectory: "/home/u", options: options, resume: false)
        XCTAssertEqual(prepared.cells, [0, 1, 2, 3])
        let script = try String(contentsOfFile: prepared.script, encoding: .utf8)
        let lines = script.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "#!/bin/bash")
        for expected in ["#SBATCH --array=0-3%3", "#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --partition=cpu",
                         "#SBATCH --time=1-02:00:00", "#SBATCH --cpus-per-task=4", "#SBATCH --gres=gpu:1", "#SBATCH --mem=8G",
                         "#SBATCH --chdir=/home/u", "#SBATCH --output=\(root)/slurm/logs/cell-%a-%A.out"] {
            XCTAssertTrue(lines.contains(expected), "\(expected) not in\n\(script)")
        }
        XCTAssertEqual(lines.last, "exec '/opt/bin/backdoor' 'run' '--config' '\(root)/config.yaml' '--output-dir' '\(root)' '--data-dir' "
            + #"'/data/c it' --cell "$SLURM_ARRAY_TASK_ID" --resume --quiet --threads "$SLURM_CPUS_PER_TASK""#)
        XCTAssertEqual(SlurmSubmission.logPath(root: root, jobID: "41", task: 2), "\(root)/slurm/logs/cell-2-41.out")
        // config.yaml reads back to the settings; the cell list names each task's cell.
        XCTAssertEqual(try ExperimentConfigFile.settings(preset: "quick", configFile: root + "/config.yaml"), settings)
        let list = try String(contentsOfFile: prepared.cellList, encoding: .utf8).split(separator: "\n").dropFirst()
        XCTAssertEqual(list.map { $0.split(separator: "\t").prefix(2).joined(separator: " ") },
                       ["0 resnet18/seed-0/badnets", "1 resnet18/seed-0/blend", "2 resnet18/seed-1/badnets", "3 resnet18/seed-1/blend"])
        XCTAssertTrue(SlurmSubmission.submissions(root: root).isEmpty, "prepared, not submitted")

        // Cell 1 finished with these settings, cell 2 with others: a resubmission runs 0, 2 and 3.
        let cells = try ExperimentRunner.cells(settings, root: root)
        try CellRecord(index: 1, cell: cells[1].relativeFolder, status: .done, settings: cells[1].settings, outcome: .init()).write(folder: cells[1].folder)
        var other = cells[2].settings
        other.training.epochs += 1
        try CellRecord(index: 2, cell: cells[2].relativeFolder, status: .done, settings: other, outcome: .init()).write(folder: cells[2].folder)
        let again = try SlurmSubmission.prepare(settings, root: root, executable: "/opt/bin/backdoor", arguments: [],
                                                workingDirectory: "/home/u", options: .init(), resume: true)
        XCTAssertEqual(again.cells, [0, 2, 3])
        XCTAssertTrue(try String(contentsOfFile: again.script, encoding: .utf8).contains("#SBATCH --array=0,2-3\n"))
        XCTAssertThrowsError(try SlurmSubmission.prepare(settings, root: root, executable: "b", arguments: [], workingDirectory: "/",
                                                         options: .init(), resume: false)) { error in
            XCTAssertTrue("\(error)".contains("pass --resume"), "\(error)")
        }
    }

    func testBadClusterSettingsNameTheFlag() throws {
        let settings = try settings([:])
        func message(_ options: SlurmSubmission.Options, _ settings: ExperimentSettings) -> String {
            do {
                _ = try SlurmSubmission.prepare(settings, root: NSTemporaryDirectory() + "unused-\(UUID().uuidString)", executable: "b",
                                                arguments: [], workingDirectory: "/", options: options, resume: false)
                return "no error"
            } catch { return "\(error)" }
        }
        XCTAssertEqual(message(.init(time: "2h"), settings), "--time: 2h is not a Slurm time limit: expected HH:MM:SS, MM, or D-HH:MM:SS")
        XCTAssertEqual(message(.init(maxParallel: 0), settings), "--max-parallel: 0 is out of range: expected at least 1")
        XCTAssertEqual(message(.init(extraArguments: ["mem=8G"]), settings),
                       "--sbatch-arg: \"mem=8G\" is not an sbatch option: expected one line such as --mem=8G")
        var chain = settings
        chain.matrix.defenses = []
        XCTAssertTrue(message(.init(), chain).hasPrefix("matrix.defenses: is empty: a matrix run cell by cell"), message(.init(), chain))
        XCTAssertThrowsError(try ExperimentRunner.runCell(settings, index: 2, root: "/nonexistent", dataDirectory: nil, resume: true,
                                                          quiet: true, training: testBackend, inference: testBackend)) { error in
            XCTAssertEqual("\(error)", "cell: 2 is out of range: expected a cell index in 0...1 (the matrix has 2 cells)")
        }
    }

    /// Real CIFAR-10 at toy size: cell 1 alone writes only inside blend/ and collect names cell 0
    /// missing; then cell 0, and the collected leaderboard equals a local run's.
    func testCellsRunAloneInAnyOrderAndCollectEqualsTheLocalRun() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let settings = try settings([
            "data.split_file": shared + "/anp/cifar_shuffle.txt", "data.train_limit": 512, "model.width": 4,
            "training.epochs": 1, "training.milestones": [1], "evaluation.test_limit": 100, "evaluation.eval_limit": 200,
            "defense.settings": ["anp": ["iterations": 3]],
        ])
        let base = try temporaryDirectory()
        let local = try XCTUnwrap(try ExperimentRunner.run(settings, root: base + "/local", dataDirectory: shared + "/cifar10",
                                                           resume: false, quiet: true, training: testBackend, inference: testBackend))
        let root = base + "/cells"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try ExperimentConfigFile.yaml(settings).write(toFile: root + "/config.yaml", atomically: true, encoding: .utf8)
        let blendRows = try ExperimentRunner.runCell(settings, index: 1, root: root, dataDirectory: shared + "/cifar10", resume: true,
                                                     quiet: true, training: testBackend, inference: testBackend, slurm: nil)
        XCTAssertEqual(blendRows.rows.map { "\($0.attack)/\($0.defense)" }, ["blend/clp", "blend/anp"])
        XCTAssertEqual(files(under: root).filter { !$0.hasPrefix("blend/") }, ["config.yaml"], "a cell writes only inside its folder")
        XCTAssertTrue(files(under: root).contains("blend/run_log.txt"))
        XCTAssertEqual(CellRecord.read(folder: root + "/blend")?.status, .done)

        let partial = try ExperimentRunner.collect(root: root, quiet: true)
        XCTAssertEqual(partial.problems, [ExperimentRunner.CellProblem(index: 0, cell: "badnets", state: "missing")])
        XCTAssertEqual(partial.leaderboard?.cells.map(\.folder), ["blend/defense-clp", "blend/defense-anp"])

        try ExperimentRunner.runCell(settings, index: 0, root: root, dataDirectory: shared + "/cifar10", resume: true,
                                     quiet: true, training: testBackend, inference: testBackend, slurm: nil)
        let collected = try ExperimentRunner.collect(root: root, quiet: true)
        XCTAssertEqual(collected.problems, [])
        var board = try XCTUnwrap(collected.leaderboard)
        XCTAssertEqual(try Leaderboard.read(path: root + "/leaderboard.json"), board)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/report.md"))
        // Equal to the local run's but for the seconds.
        for i in board.cells.indices { board.cells[i].seconds = local.cells[i].seconds }
        XCTAssertEqual(Leaderboard(cells: board.cells), local)

        // A cell whose settings changed is stale, not a result.
        var changed = settings
        changed.defense.settings["anp"] = ["iterations": 4]
        try ExperimentConfigFile.yaml(changed).write(toFile: root + "/config.yaml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try ExperimentRunner.collect(root: root, quiet: true).problems.map(\.state), ["stale", "stale"])
    }
}
