import Foundation
import Formats
import Models
import XCTest
@testable import BackdoorCLI
import Defenses
import TestSupport

/// `backdoor defend --defense nc|rnp` on the quick BadNets fixture: result.json's decisions, the
/// reversed-trigger images, and flag validation naming the flag.
extension DefendCommandTests {
    var badnetsFixture: (model: String, info: String) {
        let folder = SharedData.packageRoot() + "/Fixtures/defenses/badnets_w8"
        return (folder + "/model.safetensors", folder + "/trigger_info.safetensors")
    }

    /// A short run (one reversal epoch on 32 images per class): the plumbing, not the detection
    /// (NeuralCleanseRunTests checks that): result.json's decisions agree with its own mask norms.
    func testNCWritesTheAnomalyIndexFlaggedClassesAndTriggerImages() throws {
        let (result, output) = try defend("nc", ["--set", "nc_epoch=1", "--set", "nc_images=32", "--batch-size", "16", "--epochs", "1",
                                                 "--clean-frac", "0.01", "--test-limit", "300"],
                                          checkpoint: badnetsFixture.model, triggerInfo: badnetsFixture.info,
                                          in: try temporaryDirectory())
        XCTAssertEqual(result["clean_images"] as? Int, 500)
        let decision = try XCTUnwrap(result["decision"] as? [String: Any])
        let norms = try XCTUnwrap(decision["mask_norms"] as? [Double])
        XCTAssertEqual(norms.count, 10)
        let expected = AnomalyReport(norms: norms)
        XCTAssertEqual(decision["flagged_classes"] as? [Int], expected.flagged, "norms \(norms)")
        XCTAssertEqual(try XCTUnwrap(decision["anomaly_index"] as? Double), expected.anomalyIndex, accuracy: 1e-9)
        XCTAssertEqual(decision["unlearned"] as? Bool, !expected.flagged.isEmpty)
        let settings = try XCTUnwrap(result["settings"] as? [String: Double])
        XCTAssertEqual(settings["batch_size"], 16)
        XCTAssertEqual(settings["nc_epoch"], 1)
        XCTAssertEqual(settings["epochs"], 1)
        XCTAssertEqual(settings["mask_lr"] ?? 0, 0.1, accuracy: 1e-6, "the reference's default")
        for c in 0..<10 {
            let mask = try PNG.read(path: output + "/nc_mask_\(c).png")
            XCTAssertEqual([mask.width, mask.height, mask.channels], [32, 32, 1])
            // The gray mask's bytes sum to about 255 x its L1 norm.
            XCTAssertEqual(Double(mask.pixels.reduce(0) { $0 + Int($1) }) / 255, norms[c], accuracy: 0.5 + 0.01 * norms[c])
            let trigger = try PNG.read(path: output + "/nc_trigger_\(c).png")
            XCTAssertEqual([trigger.width, trigger.height, trigger.channels], [32, 32, 3])
        }
        for phase in ["before", "after"] { XCTAssertNotNil((result[phase] as? [String: Double])?["asr"], phase) }
    }

    /// result.json's pruned list is the sweep row the defender-data rule picks (recomputed here
    /// from the sweep it reports), and each pruned BN weight is zero in the written model.
    func testRNPWritesThePrunedNeuronsAndHowTheLevelWasChosen() throws {
        let (result, output) = try defend("rnp", ["--test-limit", "300", "--set", "recovering_epochs=10", "--acc-ratio", "0.3"],
                                          checkpoint: badnetsFixture.model, triggerInfo: badnetsFixture.info,
                                          in: try temporaryDirectory())
        XCTAssertEqual(result["clean_images"] as? Int, 500, "RNP's default share, the authors' 1%")
        let pruned = try XCTUnwrap(result["pruned"] as? [[String: Any]])
        let decision = try XCTUnwrap(result["decision"] as? [String: Any])
        let selection = try XCTUnwrap(decision["selection"] as? String)
        XCTAssertTrue(selection.contains("defender's 500 images"), selection)
        let sweep = try XCTUnwrap(decision["sweep"] as? [[String: Any]])
        XCTAssertEqual(sweep.count, 19, "thresholds 0 to 0.9 by 0.05")
        let base = try XCTUnwrap(decision["defender_clean_acc_before"] as? Double)
        // The last level before the first that loses 30% of the unpruned model's defender accuracy.
        let firstOut = sweep.firstIndex { (base - ($0["defender_clean_acc"] as! Double)) / base >= 0.3 } ?? sweep.count
        let kept = firstOut == 0 ? nil : sweep[firstOut - 1]
        XCTAssertEqual(pruned.count, kept?["pruned"] as? Int ?? 0)
        XCTAssertFalse(pruned.isEmpty, "sweep \(sweep)")
        let level = try XCTUnwrap(kept?["level"] as? Double)
        XCTAssertTrue(pruned.allSatisfy { ($0["value"] as! Double) <= level })
        XCTAssertLessThanOrEqual(try XCTUnwrap(decision["unlearned_train_acc"] as? Double), 0.2)
        let (repaired, _) = try Checkpoint.load(output + "/model.safetensors", on: testBackend)
        let layers = Dictionary(uniqueKeysWithValues: repaired.batchNorms.map { ($0.name, $0) })
        for neuron in pruned {
            XCTAssertEqual(try layers[neuron["layer"] as! String]!.weight.plainValues()[neuron["index"] as! Int], 0)
        }
    }

    func testNCAndRNPFlagsAreValidated() {
        let base = ["--checkpoint", "m.safetensors"]
        for (flags, expected) in [
            (["--defense", "nc", "--set", "unlearning_ratio=1.5"], "nc: unlearning_ratio 1.5 is out of range"),
            (["--defense", "nc", "--set", "atk_succ_threshold=0"], "atk_succ_threshold 0 "),
            (["--defense", "nc", "--set", "nc_epoch=0"], "nc_epoch 0 "),
            (["--defense", "rnp", "--set", "pruning_by=3"], "pruning_by 3 "),
            (["--defense", "rnp", "--set", "clean_threshold=2"], "rnp: clean_threshold 2 is out of range"),
            (["--defense", "rnp", "--acc-ratio", "0"], "--acc-ratio 0 is out of range"),
        ] {
            XCTAssertThrowsError(try DefendCommand.parse(base + flags), "\(flags)") { error in
                XCTAssertTrue(DefendCommand.message(for: error).contains(expected), DefendCommand.message(for: error))
            }
        }
    }
}
