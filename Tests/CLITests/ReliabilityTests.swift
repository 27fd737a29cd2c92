import ArgumentParser
import Attacks
import Datasets
import Foundation
import Formats
import Support
import XCTest
@testable import BackdoorCLI
@testable import Training
import TestSupport

/// Issue 12: what a careless or hostile user found (crashes, silent data loss, raw messages).
final class ReliabilityTests: XCTestCase {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "reliability-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// The message a command prints for these arguments (validation runs in `parse`).
    func message<C: ParsableArguments>(_ command: C.Type, _ arguments: [String],
                                                file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try command.parse(arguments)
            XCTFail("\(arguments) was accepted", file: file, line: line)
            return ""
        } catch {
            return command.message(for: error)
        }
    }

    func assertRefused<C: ParsableArguments>(_ command: C.Type, _ arguments: [String], _ fragments: [String],
                                                      file: StaticString = #filePath, line: UInt = #line) {
        let text = message(command, arguments, file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(text.contains(fragment), "\(arguments): \"\(text)\" lacks \"\(fragment)\"", file: file, line: line)
        }
    }

    // MARK: Case 1: the deep pickle through every command that reads one

    func testDeepPickleIsAnErrorInEveryCommand() throws {
        let fuzz = FuzzInputs.root()
        for path in [fuzz + "/crashes/pickle/deep-nesting-issue12.pkl", fuzz + "/crashes/zip/deep-nesting-data-pkl-issue12.pt"] {
            for (what, body) in [("inspect", { _ = try InspectCommand.report(path: path, json: false) }),
                                 ("convert", { _ = try ConvertCommand.convert(input: path, output: try self.temporaryDirectory() + "/x.safetensors") }),
                                 ("eval --checkpoint", { _ = try ModelFiles.loadModel(path, on: testBackend) }),
                                 ("--trigger-info", { _ = try TriggerInfo.read(path: path) })] as [(String, () throws -> Void)] {
                XCTAssertThrowsError(try body(), what) { error in
                    XCTAssertTrue("\(error)".contains("nests deeper than 500 levels"), "\(what): \(error)")
                }
            }
        }
    }

    // MARK: Cases 2, 3, 10, 12: flags out of range

    func testThreadsAndWidthHaveUpperBounds() {
        let cap = FlagLimits.maximumThreads
        assertRefused(EvalCommand.self, ["--checkpoint", "m", "--threads", "100000"],
                      ["--threads 100000 is out of range: expected 1...\(cap)"])
        assertRefused(TrainCommand.self, ["--threads", "\(cap + 1)"], ["--threads \(cap + 1) is out of range"])
        XCTAssertNoThrow(try EvalCommand.parse(["--checkpoint", "m", "--threads", "\(cap)"]))
        assertRefused(BenchCommand.self, ["--width", "100000"], ["--width 100000 is out of range: expected 1...256"])
        assertRefused(TrainCommand.self, ["--width", "5000"], ["--width 5000 is out of range"])
        assertRefused(ANPCommand.self, ["--benchmark", "1", "--width", "5000"], ["--width 5000 is out of range"])
        assertRefused(RunCommand.self, ["--width", "5000"], ["--width 5000 is out of range"])
        assertRefused(RunCommand.self, ["--threads", "100000"], ["--threads 100000 is out of range"])
    }

    func testPruneThresholdMustBeAMaskValue() {
        let base = ["--checkpoint", "m", "--mask-file", "f", "--trigger-info", "t"]
        assertRefused(PruneCommand.self, base + ["--threshold", "2"], ["--threshold 2.0 is out of range: expected a number in [0, 1]"])
        assertRefused(PruneCommand.self, base + ["--threshold", "-1"], ["--threshold -1.0 is out of range"])
        XCTAssertNoThrow(try PruneCommand.parse(base + ["--threshold", "0.2"]))
        assertRefused(RunCommand.self, ["--threshold", "1.5"], ["--threshold 1.5 is out of range"])
    }

    func testSmallerMessagesNameTheFlagAndTheRange() {
        // A negative number was taken for an option ("Missing value").
        assertRefused(TrainCommand.self, ["--epochs", "-1"], ["--epochs must be at least 1, got -1"])
        assertRefused(TrainCommand.self, ["--seed=-5"], ["-5", "0...18446744073709551615"])
        assertRefused(TrainCommand.self, ["--seed", "-5"], ["-5", "0...18446744073709551615"])
        assertRefused(BenchCommand.self, ["--batch-size", "0"], ["--batch-size 0 is out of range: expected at least 1"])
        assertRefused(BenchCommand.self, ["--steps", "0"], ["--steps 0 is out of range"])
        assertRefused(PoisonCommand.self, ["--export", "x"], ["poison needs --poison-type badnets, blend, clean-label, sig, wanet, bpp, ftrojan", "trojannn"])
        assertRefused(TrainCommand.self, ["--train-limit", "10000000"],
                      ["--train-limit 10000000 is out of range: expected 1...45000"])
        assertRefused(TrainCommand.self, ["--train-limit", "49000", "--val-frac", "0.1"], ["expected 1...45000"])
        XCTAssertNoThrow(try TrainCommand.parse(["--train-limit", "45000"]))
        assertRefused(TrainCommand.self, ["--resume", "--overwrite"], ["choose one"])
    }

    // MARK: Case 9: output folders that are files

    func testOutputFolderThatIsAFileIsNamed() throws {
        let directory = try temporaryDirectory()
        let file = directory + "/plain"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        XCTAssertThrowsError(try AtomicFile.write("y", to: file + "/model.safetensors")) { error in
            XCTAssertEqual("\(error)", "\(file): is a file, not a folder; expected a folder for the outputs (or a path that does not exist yet)")
        }
        XCTAssertThrowsError(try AtomicFile.write("y", to: file + "/deeper/model.safetensors")) { error in
            XCTAssertEqual("\(error)", "\(file)/deeper: cannot create the folder: \(file) is a file, not a folder")
        }
        XCTAssertThrowsError(try AtomicFile.write("y", to: directory)) { error in
            XCTAssertTrue("\(error)".contains("a directory of that name is in the way"), "\(error)")
        }
        // Disk full: /dev/full answers every write with ENOSPC.
        let log = try JSONLinesWriter(path: "/dev/full", truncate: false)
        XCTAssertThrowsError(try log.append(["a": 1])) { error in
            XCTAssertEqual("\(error)", "/dev/full: cannot append to the log: no space left on the device (ENOSPC)")
        }
    }

    /// Case 9: resuming in a folder that cannot be written is refused up front, in words.
    func testResumeIntoAnUnwritableFolderIsNamed() throws {
        var folder = try temporaryDirectory()
        chmod(folder, 0o555)
        if access(folder, W_OK) == 0 {  // root ignores the mode bits
            guard access("/proc/sys", W_OK) != 0 else { throw XCTSkip("no folder here that root cannot write") }
            folder = "/proc/sys"
        }
        XCTAssertThrowsError(try TrainingFolder(path: folder).prepareResume(config: TrainingConfig(), settings: [:])) { error in
            XCTAssertEqual("\(error)", "\(folder): cannot write here: the folder \(folder) is not writable (EACCES)")
        }
    }

    // MARK: Cases 4, 5, 7, 8, 12 on a real (tiny) training run

    func dataDirectory() throws -> String {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        return shared + "/cifar10"
    }

    func train(_ output: String, _ extra: [String]) throws {
        let data = try dataDirectory()
        var command = try TrainCommand.parse([
            "--data-dir", data, "--split-file", data + "/../anp/cifar_shuffle.txt", "--width", "4", "--epochs", "1",
            "--batch-size", "64", "--train-limit", "128", "--test-limit", "20", "--output-dir", output, "--quiet",
        ] + extra)
        try command.run()
    }

    func testResumeComparesTheAttackAndAFreshRunRefusesAnEarlierOne() throws {
        let output = try temporaryDirectory() + "/run"
        try train(output, ["--poison-type", "badnets"])
        let manifest = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/manifest.json"))) as? [String: Any])
        XCTAssertEqual(manifest["completed_epochs"] as? Int, 1)
        let files = try XCTUnwrap(manifest["files"] as? [String: [String: String]])
        for name in ["model_last.safetensors", "resume_state.safetensors"] {
            XCTAssertEqual(files[name]?["md5"], try MD5.hex(ofFile: output + "/" + name), name)
        }
        XCTAssertEqual(TrainingFolder(path: output).manifestEpoch(matching: "model_last.safetensors"), 1)
        let trigger = try Data(contentsOf: URL(fileURLWithPath: output + "/trigger_info.safetensors"))

        // Case 4: resuming as another attack is refused, naming the field and both values,
        // before the trigger information is rewritten.
        XCTAssertThrowsError(try train(output, ["--poison-type", "blend", "--epochs", "2", "--resume"])) { error in
            XCTAssertTrue("\(error)".contains("was written with --poison-type badnets, this run has --poison-type blend"), "\(error)")
            XCTAssertFalse("\(error)".contains("{"), "no dump of the configuration: \(error)")
        }
        XCTAssertThrowsError(try train(output, ["--poison-type", "badnets", "--poison-rate", "0.2", "--epochs", "2", "--resume"])) { error in
            XCTAssertTrue("\(error)".contains("--poison-rate 0.1, this run has --poison-rate 0.2"), "\(error)")
        }
        XCTAssertThrowsError(try train(output, ["--poison-type", "badnets", "--train-limit", "64", "--epochs", "2", "--resume"])) { error in
            XCTAssertTrue("\(error)".contains("--train-limit 128, this run has --train-limit 64"), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output + "/trigger_info.safetensors")), trigger)

        // Case 5: a fresh run into the folder is refused; --overwrite clears the earlier run.
        XCTAssertThrowsError(try train(output, [])) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(output): holds an earlier training run"), "\(error)")
            XCTAssertTrue("\(error)".contains("--resume") && "\(error)".contains("--overwrite"), "\(error)")
        }
        try train(output, ["--overwrite"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: output + "/trigger_info.safetensors"), "no stale trigger beside a benign model")
        XCTAssertFalse(FileManager.default.fileExists(atPath: output + "/trigger_info.json"))
        XCTAssertEqual(try SafeTensors.read(path: output + "/model_last.safetensors").metadata["poison_type"], "benign")
    }

    func testResumeCleansTemporariesAndDetectsADamagedState() throws {
        let output = try temporaryDirectory() + "/run"
        try train(output, [])
        // Case 7: what a kill -9 during a write leaves.
        for name in [".model_last.safetensors.tmp-123-456", ".dat.nosync1a2b"] {
            try Data(count: 1024).write(to: URL(fileURLWithPath: output + "/" + name))
        }
        try train(output, ["--epochs", "2", "--resume"])
        let hidden = try FileManager.default.contentsOfDirectory(atPath: output).filter { $0.hasPrefix(".") }
        XCTAssertEqual(hidden, [])
        XCTAssertEqual(TrainingFolder(path: output).manifestEpoch(matching: "resume_state.safetensors"), 2)

        // Case 12: one flipped byte in the resume state's data is found before it is used.
        let state = output + "/resume_state.safetensors"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: state)))
        bytes[bytes.count - 100] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: state))
        XCTAssertThrowsError(try train(output, ["--epochs", "3", "--resume"])) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(state): is damaged"), "\(error)")
        }
    }
}
