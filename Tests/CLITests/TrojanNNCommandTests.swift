import Foundation
import Formats
import XCTest
@testable import Attacks
@testable import BackdoorCLI
import TestSupport

/// `backdoor poison --poison-type trojannn` against the committed clean quick model, `eval
/// --trigger-info` on what it wrote, and the TrojanNN flags' errors.
final class TrojanNNCommandTests: XCTestCase {
    let cleanModel = SharedData.packageRoot() + "/Fixtures/defenses/benign_w8/model.safetensors"

    func testPoisonOptimisesTheTriggerAndEvalReadsIt() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        let out = NSTemporaryDirectory() + "poison-trojannn-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let poison = try PoisonCommand.parse(["--poison-type", "trojannn", "--trojannn-model", cleanModel, "--trojannn-steps", "5",
                                              "--data-dir", shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt",
                                              "--export", out])
        try poison.run()
        let flags = try NPY.read(path: out + "/backdoor_list.npy").data
        let labels = try NPY.read(path: out + "/label.npy").int64s()
        XCTAssertEqual(flags.filter { $0 == 1 }.count, 4_500, "round(0.1 x 45,000) of any class")
        XCTAssertTrue(zip(flags, labels).allSatisfy { $0 == 0 || $1 == 0 }, "triggered images carry the target")
        let info = try TriggerInfo.read(path: out + "/trigger_info.safetensors")
        XCTAssertEqual(info.poisonType, "trojannn")
        XCTAssertEqual(info.notes["trojannn_steps"], "5")
        XCTAssertEqual(info.notes["trojannn_model"], cleanModel)
        guard case let .trojannn(trigger) = info.trigger else { return XCTFail("\(info.trigger)") }
        XCTAssertEqual(trigger.mask.filter { $0 == 1 }.count, 351, "the apple mask")
        let eval = try EvalCommand.parse(["--checkpoint", cleanModel, "--trigger-info", out + "/trigger_info.safetensors",
                                          "--data-dir", shared + "/cifar10", "--limit", "100", "--json"])
        try eval.run()
    }

    func testTrojanNNFlagsAreCheckedNamingTheFlag() throws {
        func refused(_ arguments: [String], _ message: String, line: UInt = #line) {
            XCTAssertThrowsError(try PoisonCommand.parse(["--poison-type", "trojannn"] + arguments + ["--export", "x"]), line: line) { error in
                let text = PoisonCommand.message(for: error)
                XCTAssertTrue(text.contains(message), text, line: line)
            }
        }
        refused([], "--poison-type trojannn needs --trojannn-model PATH")
        refused(["--trojannn-model", cleanModel, "--trojannn-steps", "0"], "--trojannn-steps 0 is not allowed; expected an integer >= 1")
        refused(["--trojannn-model", cleanModel, "--trojannn-eps", "1.5"], "--trojannn-eps 1.5 is not allowed; expected a number in (0, 1]")
        refused(["--trojannn-model", cleanModel, "--trojannn-step-size", "0"], "--trojannn-step-size 0.0 is not allowed")
        refused(["--trojannn-model", cleanModel, "--trojannn-neurons", "-1"], "--trojannn-neurons -1 is not allowed")
        refused(["--trojannn-model", cleanModel, "--trojannn-layer", ""], "--trojannn-layer \"\" is not allowed")
        XCTAssertThrowsError(try TrainCommand.parse(["--poison-type", "trojannn", "--trojannn-model", cleanModel, "--trojannn-eps", "0"])) {
            XCTAssertTrue(TrainCommand.message(for: $0).contains("--trojannn-eps 0.0 is not allowed"), TrainCommand.message(for: $0))
        }
        // Checked where the model is known: the layer must be one of its modules.
        let poison = try PoisonCommand.parse(["--poison-type", "trojannn", "--trojannn-model", cleanModel, "--trojannn-layer", "fc",
                                              "--export", NSTemporaryDirectory() + "trojannn-unused"])
        XCTAssertThrowsError(try poison.run()) { error in
            XCTAssertTrue("\(error)".contains("--trojannn-layer fc is not allowed; expected a module of resnet18-cifar"), "\(error)")
        }
        let missing = try PoisonCommand.parse(["--poison-type", "trojannn", "--trojannn-model", "/nonexistent.safetensors", "--export", "x"])
        XCTAssertThrowsError(try missing.run()) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent.safetensors") && "\(error)".contains("no such checkpoint file"), "\(error)")
        }
    }
}
