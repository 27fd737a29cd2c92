import Foundation
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `backdoor defend --defense sau|ft-sam` on the quick BadNets fixture: the flags reach the
/// settings, result.json and the log are written, bad values name their flag or setting.
extension DefendCommandTests {
    func testSAUAndFTSAMRunThroughDefend() throws {
        let dir = try temporaryDirectory()
        let (sau, sauOutput) = try defend("sau", ["--epochs", "1", "--batch-size", "100", "--clean-frac", "0.004",
                                                  "--lr", "0.001", "--set", "adv_steps=2", "--test-limit", "200"],
                                          checkpoint: badnetsFixture.model, triggerInfo: badnetsFixture.info, in: dir)
        XCTAssertEqual(sau["clean_images"] as? Int, 200)
        let sauSettings = try XCTUnwrap(sau["settings"] as? [String: Double])
        XCTAssertEqual(sauSettings["n_rounds"], 1, "--epochs is SAU's n_rounds")
        XCTAssertEqual(sauSettings["adv_steps"], 2)
        XCTAssertEqual(sauSettings["trigger_norm"] ?? 0, 0.2, accuracy: 1e-7, "the reference's default")
        let sauDecision = try XCTUnwrap(sau["decision"] as? [String: Any])
        XCTAssertNotNil(sauDecision["last_round_shared_fraction"] as? Double)
        let sauLog = try String(contentsOfFile: sauOutput + "/defend_log.txt", encoding: .utf8)
        XCTAssertTrue(sauLog.contains("sau: round 1/1 loss"), sauLog)

        let (sam, samOutput) = try defend("ft-sam", ["--epochs", "1", "--clean-frac", "0.004", "--set", "rho_max=3",
                                                     "--test-limit", "200"],
                                          checkpoint: badnetsFixture.model, triggerInfo: badnetsFixture.info, in: dir)
        let samSettings = try XCTUnwrap(sam["settings"] as? [String: Double])
        XCTAssertEqual(samSettings["rho_max"], 3)
        XCTAssertEqual(samSettings["rho_min"], 2)
        XCTAssertEqual(samSettings["adaptive"], 1)
        XCTAssertEqual(samSettings["label_smoothing"] ?? 0, 0.1, accuracy: 1e-7)
        XCTAssertEqual((sam["decision"] as? [String: Any])?["sam"] as? String, "adaptive")
        for result in [sau, sam] {
            for phase in ["before", "after"] { XCTAssertNotNil((result[phase] as? [String: Double])?["asr"], phase) }
            XCTAssertNotNil(result["seconds"] as? Double)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: samOutput + "/model.safetensors"))
        let samLog = try String(contentsOfFile: samOutput + "/defend_log.txt", encoding: .utf8)
        XCTAssertTrue(samLog.contains("ft-sam: epoch 1/1"), samLog)
    }

    func testSAUAndFTSAMBadValuesAreNamed() {
        for (flags, expected) in [
            (["--defense", "sau", "--epochs", "0"], "--epochs 0 is out of range: expected a whole number at least 1"),
            (["--defense", "sau", "--lr", "0"], "--lr 0 is out of range: expected a positive number"),
            (["--defense", "sau", "--set", "adv_lr=-1"], "sau: adv_lr -1 is out of range: expected a positive number"),
            (["--defense", "ft-sam", "--set", "rho_min=-1"], "ft-sam: rho_min -1 is out of range"),
            (["--defense", "ft-sam", "--set", "adaptive=2"], "ft-sam: adaptive 2 is out of range"),
            (["--defense", "sau", "--fst-alpha", "0.1"], "--fst-alpha is a setting of fst, not of --defense sau"),
        ] {
            XCTAssertThrowsError(try DefendCommand.parse(flags + ["--checkpoint", "m.safetensors"]), "\(flags)") { error in
                let message = DefendCommand.message(for: error)
                XCTAssertTrue(message.contains(expected), message)
            }
        }
    }
}
