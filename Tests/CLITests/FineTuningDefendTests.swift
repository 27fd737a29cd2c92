import Foundation
import Models
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `backdoor defend --defense ft|fp|nad|fst`: flags over the references' defaults, result.json's
/// settings and decisions, and clear errors for bad values.
final class FineTuningDefendTests: XCTestCase {
    let fixture = SharedData.packageRoot() + "/Fixtures/defenses/badnets_w8/"

    func defend(_ name: String, _ flags: [String]) throws -> [String: Any] {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let output = NSTemporaryDirectory() + "defend-ft-tests-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: output) }
        try DefendCommand.parse([
            "--defense", name, "--checkpoint", fixture + "model.safetensors", "--trigger-info",
            fixture + "trigger_info.safetensors", "--output-dir", output, "--data-dir", shared + "/cifar10",
            "--split-file", shared + "/anp/cifar_shuffle.txt",
        ] + flags).run()
        XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/model.safetensors"))
        let log = try String(contentsOfFile: output + "/defend_log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains("\(name): epoch 1/"), log)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/result.json")))
            as? [String: Any])
    }

    func testFPWritesItsPrunedChannelsAndHowItChoseTheLevel() throws {
        let result = try defend("fp", ["--epochs", "1", "--clean-frac", "0.01", "--test-limit", "300", "--acc-ratio", "0.05"])
        XCTAssertEqual(result["clean_images"] as? Int, 500)
        let settings = try XCTUnwrap(result["settings"] as? [String: Double])
        XCTAssertEqual(settings["epochs"], 1)
        XCTAssertEqual(settings["acc_ratio"], 0.05)
        XCTAssertEqual(settings["lr"] ?? 0, 0.01, accuracy: 1e-8, "BackdoorBench's default")
        XCTAssertEqual(settings["batch_size"], 256)
        for phase in ["before", "after"] {
            let m = try XCTUnwrap(result[phase] as? [String: Double], phase)
            XCTAssertNotNil(m["clean_acc"])
            XCTAssertNotNil(m["asr"])
            XCTAssertNotNil(m["robust_acc"])
        }
        XCTAssertNotNil(result["seconds"] as? Double)
        let pruned = try XCTUnwrap(result["pruned"] as? [[String: Any]])
        let decision = try XCTUnwrap(result["decision"] as? [String: Any])
        XCTAssertEqual(decision["pruned_channels"] as? Int, pruned.count)
        XCTAssertTrue(pruned.allSatisfy { $0["layer"] as? String == "layer4" && ($0["index"] as? Int).map { (0..<64).contains($0) } == true })
        XCTAssertTrue((decision["level_chosen_on"] as? String)?.contains("defender's clean images (500)") == true)
    }

    func testFSTDefaultsToTheAuthorsCleanShareAndAlpha() throws {
        let result = try defend("fst", ["--epochs", "1", "--test-limit", "200"])
        XCTAssertEqual(result["clean_images"] as? Int, 1000, "the authors' 2% of 50,000")
        let settings = try XCTUnwrap(result["settings"] as? [String: Double])
        XCTAssertEqual(settings["fst_alpha"], 0.1)
        XCTAssertEqual(settings["batch_size"], 128)
        XCTAssertEqual(settings["weight_decay"], 0)
        XCTAssertEqual((result["pruned"] as? [Any])?.count, 0)
        // Its passes: one epoch of training steps over the 1,000 images, in batches of 128.
        let passes = try XCTUnwrap(result["passes"] as? [[String: Any]])
        let steps = passes.filter { $0["mode"] as? String == "train" && $0["backward"] as? String == "weights" }
        XCTAssertEqual(steps.reduce(0) { $0 + ($1["batch"] as? Int ?? 0) * ($1["count"] as? Int ?? 0) }, 1000, "\(passes)")
        XCTAssertEqual(steps.first { $0["batch"] as? Int == 128 }?["count"] as? Int, 7, "\(passes)")
    }

    func testBadValuesAreNamed() {
        let base = ["--checkpoint", "m.safetensors"]
        for (flags, expected) in [
            (["--defense", "nad", "--nad-betas", "500,1000"], "--nad-betas \"500,1000\" is invalid: expected three numbers"),
            (["--defense", "nad", "--nad-betas", "a,b,c"], "--nad-betas \"a,b,c\""),
            (["--defense", "nad", "--nad-p", "0"], "--nad-p 0 is out of range"),
            (["--defense", "fp", "--acc-ratio", "0"], "--acc-ratio 0 is out of range"),
            (["--defense", "fp", "--once-prune-ratio", "1.5"], "--once-prune-ratio 1.5 is out of range"),
            (["--defense", "ft", "--epochs", "0"], "--epochs 0 is out of range"),
            (["--defense", "ft", "--batch-size", "0"], "--batch-size 0 is out of range"),
            (["--defense", "ft", "--lr=-1"], "--lr -1 is out of range"),
            (["--defense", "ft", "--clean-frac", "0"], "--clean-frac 0 leaves the defender no clean images"),
            (["--defense", "fst", "--fst-alpha=-0.1"], "--fst-alpha -0.1 is out of range"),
        ] {
            XCTAssertThrowsError(try DefendCommand.parse(flags + base), "\(flags)") { error in
                let message = DefendCommand.message(for: error)
                XCTAssertTrue(message.contains(expected), message)
            }
        }
    }

    func testNADOnAModelWithoutStagesIsRefusedByName() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let dir = NSTemporaryDirectory() + "defend-nad-vgg-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        try Checkpoint.save(try Architecture.vgg16.model(width: 8, on: testBackend), to: dir + "/vgg.safetensors")
        XCTAssertThrowsError(try DefendCommand.parse([
            "--defense", "nad", "--checkpoint", dir + "/vgg.safetensors", "--output-dir", dir + "/out", "--data-dir",
            shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt", "--test-limit", "10", "--epochs", "1",
        ]).run()) { error in
            XCTAssertTrue("\(error)".contains("nad: attention distillation needs stage outputs"), "\(error)")
            XCTAssertTrue("\(error)".contains("vgg16-bn"), "\(error)")
        }
    }
}
