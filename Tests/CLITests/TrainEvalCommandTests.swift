import Foundation
import Formats
import Support
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `backdoor train` and `backdoor eval` end to end on a sliver of the shared CIFAR-10 copy.
final class TrainEvalCommandTests: XCTestCase {
    func dataDirectory() throws -> String {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        return shared + "/cifar10"
    }

    func testBadNetsTrainingWritesModelLogsAndTriggerInformation() throws {
        let data = try dataDirectory()
        let output = NSTemporaryDirectory() + "train-cli-\(UUID().uuidString)"
        var train = try TrainCommand.parse([
            "--poison-type", "badnets", "--data-dir", data, "--split-file", data + "/../anp/cifar_shuffle.txt",
            "--width", "4", "--epochs", "1", "--batch-size", "64", "--train-limit", "256", "--test-limit", "100",
            "--output-dir", output, "--quiet",
        ])
        try train.run()
        for file in ["model_init.safetensors", "model_last.safetensors", "train_log.txt", "train_log.jsonl",
                     "trigger_info.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/" + file), file)
        }
        let model = try SafeTensors.read(path: output + "/model_last.safetensors")
        XCTAssertEqual(model.metadata["width"], "4")
        XCTAssertEqual(model.metadata["poison_type"], "badnets")

        var eval = try EvalCommand.parse([
            "--checkpoint", output + "/model_last.safetensors", "--trigger-info", output + "/trigger_info.safetensors",
            "--data-dir", data, "--limit", "50", "--json",
        ])
        try eval.run()
    }

    func testEvalOpensAPyTorchStateDict() throws {
        let data = try dataDirectory()
        let checkpoint = SharedData.packageRoot() + "/Fixtures/formats/torch/resnet18_narrow.pt"
        var eval = try EvalCommand.parse(["--checkpoint", checkpoint, "--data-dir", data, "--limit", "20"])
        try eval.run()
    }

    func testBadFlagsAreRejectedNamingTheFlag() {
        for (arguments, flag) in [(["--poison-rate", "1.5"], "--poison-rate"), (["--poison-target", "10"], "--poison-target"),
                                  (["--epochs", "0"], "--epochs"), (["--milestones", "30;40"], "--milestones")] {
            XCTAssertThrowsError(try TrainCommand.parse(arguments)) { error in
                XCTAssertTrue(TrainCommand.message(for: error).contains(flag), "\(TrainCommand.message(for: error))")
            }
        }
    }
}
