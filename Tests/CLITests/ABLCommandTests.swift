import Foundation
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `backdoor train --defense abl` end to end on a sliver of the shared CIFAR-10 copy, and its flags' errors.
final class ABLCommandTests: XCTestCase {
    func testABLTrainingWritesModelResultAndLog() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        let output = NSTemporaryDirectory() + "abl-cli-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: output) }
        var train = try TrainCommand.parse([
            "--poison-type", "badnets", "--data-dir", shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt",
            "--width", "4", "--train-limit", "200", "--test-limit", "100", "--defense", "abl", "--isolation-epochs", "1",
            "--isolation-ratio", "0.05", "--finetuning-epochs", "1", "--unlearning-epochs", "1", "--abl-batch-size", "64",
            "--output-dir", output, "--quiet",
        ])
        try train.run()
        for file in ["model_last.safetensors", "abl_log.txt", "abl_result.json", "trigger_info.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/" + file), file)
        }
        let result = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/abl_result.json")))
            as? [String: Any])
        let isolation = try XCTUnwrap(result["isolation"] as? [String: Any])
        XCTAssertEqual((isolation["isolated"] as? [Int])?.count, 10, "5% of 200")
        // BadNets at 0.1 relabels floor(0.1 x the non-target images) of the 200.
        let poisoned = try XCTUnwrap(isolation["poisoned_images"] as? Int)
        XCTAssertTrue((17...20).contains(poisoned), "\(poisoned) poisoned")
        XCTAssertEqual((result["phases"] as? [[String: Any]])?.compactMap { $0["name"] as? String },
                       ["isolation", "finetuning", "unlearning"])
        let log = try String(contentsOfFile: output + "/abl_log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains("abl unlearning: epoch 1/1"), log)
    }

    func testABLFlagsAreCheckedNamingTheFlag() {
        func error(_ arguments: [String]) -> String {
            do {
                _ = try TrainCommand.parse(arguments)
                return "accepted"
            } catch { return TrainCommand.message(for: error) }
        }
        XCTAssertTrue(error(["--defense", "abl", "--isolation-ratio", "1"]).contains("--isolation-ratio 1 is out of range"))
        XCTAssertTrue(error(["--defense", "abl", "--unlearning-lr", "0"]).contains("--unlearning-lr 0 is out of range"))
        XCTAssertTrue(error(["--gamma", "0.3"]).contains("--gamma is a setting of --defense abl"))
        XCTAssertTrue(error(["--defense", "abl", "--poison-type", "wanet"]).contains("poisons each batch as it is drawn"))
        XCTAssertTrue(error(["--defense", "abl", "--resume"]).contains("--resume is for plain training"))
        XCTAssertTrue(error(["--defense", "sau"]).contains("sau"))
    }
}
