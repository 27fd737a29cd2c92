import Foundation
import Formats
import Support
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `train --poison-type inputaware` on a tiny real run, then `eval --trigger-info` and
/// `poison --export --trigger-info` with the generators it wrote; its flags' errors.
final class InputAwareCommandTests: XCTestCase {
    func testTrainWritesGeneratorsThatEvalAndPoisonUse() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        let folder = NSTemporaryDirectory() + "inputaware-cli-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let data = ["--data-dir", shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt"]
        var train = try TrainCommand.parse(data + ["--poison-type", "inputaware", "--width", "4", "--epochs", "1", "--batch-size", "64",
                                                   "--train-limit", "128", "--test-limit", "40", "--generator-width", "2",
                                                   "--clean-train-epochs", "1", "--output-dir", folder + "/run", "--quiet"])
        try train.run()
        let infoPath = folder + "/run/trigger_info.safetensors"
        let info = try SafeTensors.read(path: infoPath)
        XCTAssertEqual(info.metadata["trigger_type"], "inputaware")
        XCTAssertEqual(info.metadata["generator_width"], "2")
        XCTAssertEqual(info.tensors["netG.convblock_down_0.conv2d.weight"]?.shape, [2, 3, 3, 3])
        XCTAssertEqual(info.tensors["netM.convblock_up_5.conv2d.weight"]?.shape, [1, 2, 3, 3])
        XCTAssertTrue(FileManager.default.fileExists(atPath: infoPath.replacingOccurrences(of: ".safetensors", with: ".json")))

        var eval = try EvalCommand.parse(["--checkpoint", folder + "/run/model_last.safetensors", "--trigger-info", infoPath,
                                          "--data-dir", shared + "/cifar10", "--limit", "40", "--json"])
        try eval.run()

        var poison = try PoisonCommand.parse(data + ["--poison-type", "inputaware", "--trigger-info", infoPath,
                                                     "--export", folder + "/export"])
        try poison.run()
        let flags = try NPY.read(path: folder + "/export/backdoor_list.npy").data
        let labels = try NPY.read(path: folder + "/export/label.npy").int64s()
        // 45,000 attacker images: 12 of each full batch of 128, 7 of the last 72.
        XCTAssertEqual(flags.filter { $0 == 1 }.count, 12 * 351 + 7)
        XCTAssertTrue(zip(flags, labels).allSatisfy { $0 == 0 || $1 == 0 }, "backdoor images carry the target")
    }

    func testFlagsAreCheckedNamingTheFlag() throws {
        XCTAssertThrowsError(try PoisonCommand.parse(["--poison-type", "inputaware", "--export", "x"])) { error in
            XCTAssertTrue(PoisonCommand.message(for: error).contains("needs --trigger-info"), PoisonCommand.message(for: error))
        }
        XCTAssertThrowsError(try PoisonCommand.parse(["--poison-type", "inputaware", "--trigger-info", "t", "--mask-density", "2",
                                                      "--export", "x"])) { error in
            let text = PoisonCommand.message(for: error)
            XCTAssertTrue(text.contains("--mask-density 2.0 is not allowed; expected a number in [0, 1]"), text)
        }
        XCTAssertThrowsError(try TrainCommand.parse(["--poison-type", "inputaware", "--schedulerG-milestones", "1,x"])) { error in
            let text = TrainCommand.message(for: error)
            XCTAssertTrue(text.contains("--schedulerG-milestones 1,x is not a comma-separated list"), text)
        }
    }
}
