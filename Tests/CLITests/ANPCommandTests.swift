import Attacks
import Defenses
import Foundation
import NN
import Support
import XCTest
import Models
@testable import BackdoorCLI
import TestSupport

final class ANPCommandTests: XCTestCase {
    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "anp-command-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testDefaultsAreTheReferenceFlags() throws {
        let command = try ANPCommand.parse(["--checkpoint", "model.safetensors"])
        let config = command.config
        XCTAssertEqual(config.eps, 0.4)
        XCTAssertEqual(config.steps, 1)
        XCTAssertEqual(config.alpha, 0.2)
        XCTAssertEqual(config.learningRate, 0.2)
        XCTAssertEqual(config.iterations, 2000)
        XCTAssertEqual(config.printEvery, 500)
        XCTAssertEqual(config.batchSize, 128)
        XCTAssertEqual(command.valFrac, 0.01)

        let prune = try PruneCommand.parse(["--checkpoint", "m", "--mask-file", "mask_values.txt", "--trigger-info", "t"])
        XCTAssertNil(prune.pruningBy)
        XCTAssertEqual(prune.pruningMax, 0.90)
        XCTAssertEqual(prune.pruningStep, 0.05)
    }

    func testBadFlagsAreNamed() {
        func message(_ parse: () throws -> Void) -> String {
            do { try parse() } catch { return ANPCommand.message(for: error) }
            return "no error"
        }
        XCTAssertTrue(message { _ = try ANPCommand.parse(["--checkpoint", "m", "--anp-alpha", "1.5"]) }.contains("--anp-alpha 1.5"))
        XCTAssertTrue(message { _ = try ANPCommand.parse(["--checkpoint", "m", "--val-frac", "0"]) }.contains("--val-frac"))
        XCTAssertTrue(message { _ = try ANPCommand.parse([]) }.contains("--checkpoint"))
        XCTAssertTrue(message {
            _ = try PruneCommand.parse(["--checkpoint", "m", "--mask-file", "f", "--trigger-info", "t", "--threshold", "0.2",
                                        "--pruning-by", "number"])
        }.contains("--threshold"))
        XCTAssertTrue(message {
            _ = try PruneCommand.parse(["--checkpoint", "m", "--mask-file", "f", "--trigger-info", "t", "--pruning-by", "weight"])
        }.contains("weight"))
    }

    /// `backdoor anp` then `backdoor prune --threshold` on the real test set with a tiny model:
    /// the files come out in the reference formats and the pruned model has exactly the chosen zeros.
    func testANPThenThresholdPruningOnRealData() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let dir = try temporaryDirectory()
        let modelPath = dir + "/model.safetensors", infoPath = dir + "/trigger_info.safetensors"
        try Checkpoint.save(try ResNet18.model(width: 4, seed: 3, on: testBackend), to: modelPath)
        try TriggerInfo(poisonType: "badnets", trigger: try Trigger.standard(.checkerboard1Corner, alpha: 1), target: 0)
            .write(path: infoPath)
        let anp = try ANPCommand.parse([
            "--checkpoint", modelPath, "--trigger-info", infoPath, "--output-dir", dir + "/anp",
            "--data-dir", shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt", "--val-frac", "0.001",
            "--nb-iter", "3", "--print-every", "3", "--test-limit", "300", "--batch-size", "16", "--anp-alpha", "0.2", "--lr", "5",
        ])
        try anp.run()
        let log = try String(contentsOfFile: dir + "/anp/anp_log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains(ANPLogEntry.header + "\n3 \t 5.000 \t "), log)
        let scores = try MaskFile.read(path: dir + "/anp/mask_values.txt")
        let model = try ResNet18.model(width: 4, on: testBackend)
        XCTAssertEqual(scores.count, model.batchNorms.reduce(0) { $0 + $1.channels })
        XCTAssertTrue(scores.allSatisfy { $0.value >= 0 && $0.value <= 1 })

        let threshold = Pruning.sorted(scores)[5].value
        let prune = try PruneCommand.parse([
            "--checkpoint", modelPath, "--mask-file", dir + "/anp/mask_values.txt", "--trigger-info", infoPath,
            "--data-dir", shared + "/cifar10", "--output-dir", dir + "/prune", "--threshold", "\(threshold)",
            "--pruned-checkpoint", dir + "/pruned.safetensors", "--test-limit", "300",
        ])
        try prune.run()
        let (original, _) = try Checkpoint.load(modelPath, on: testBackend)
        let (pruned, _) = try Checkpoint.load(dir + "/pruned.safetensors", on: testBackend)
        let chosen = Pruning.neurons(scores, atOrBelow: threshold)
        XCTAssertGreaterThanOrEqual(chosen.count, 6)
        for (a, b) in zip(original.batchNorms, pruned.batchNorms) {
            var expected = try a.weight.plainValues()
            for neuron in chosen where neuron.layer == a.name { expected[neuron.index] = 0 }
            XCTAssertEqual(try b.weight.plainValues(), expected, a.name)
            XCTAssertEqual(try b.bias.plainValues(), try a.bias.plainValues(), a.name)
        }
        let summary = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: dir + "/prune/pruning_threshold_\(threshold).json"))) as! [String: Any]
        XCTAssertEqual(summary["pruned_neurons"] as? Int, chosen.count)
    }
}
