import Attacks
import Datasets
import Defenses
import Foundation
import Formats
import Support
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `backdoor detect` end to end: an exported BadNets folder and the quick BadNets model, the files it
/// writes, and its errors for bad flags and folders.
final class DetectCommandTests: XCTestCase {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "detect-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    let fixture = SharedData.packageRoot() + "/Fixtures/defenses/badnets_w8/"

    func testSpectralWritesTheResultSummaryAndScores() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let dir = try temporaryDirectory()
        let data = try CIFAR10.load(directory: shared + "/cifar10")
        let split = DataSplit(permutation: try Permutation.read(path: shared + "/anp/cifar_shuffle.txt"), valFrac: 0.1)
        let info = try TriggerInfo.read(path: fixture + "trigger_info.safetensors")
        let clean = data.train.subset(Array(split.attacker.prefix(1200)))
        let set = try Poisoning.trainingSet(clean, trigger: info.trigger, target: info.target, rate: 0.1, seed: 0)
        try PoisonedSetFolder.export(set, clean: clean, triggerInfo: info, to: dir + "/set")
        let output = dir + "/out"
        try DetectCommand.parse(["--method", "spectral", "--checkpoint", fixture + "model.safetensors",
                                 "--poisoned-set", dir + "/set", "--limit", "1000", "--output-dir", output]).run()

        let result = try DetectionResult.read(path: output + "/result.json")
        let truth = Array(set.isPoisoned.prefix(1000))
        XCTAssertEqual(result.images, 1000)
        XCTAssertEqual(result.poisoned, truth.filter { $0 }.count)
        XCTAssertEqual(result.settings, ["poison_rate": 0.1, "removal_factor": 1.5])
        let flagged = Set(result.flagged)
        XCTAssertEqual(result.metrics.truePositives, truth.indices.filter { truth[$0] && flagged.contains($0) }.count)
        XCTAssertEqual(result.metrics.truePositives + result.metrics.falsePositives, result.flagged.count)
        let scores = try NPY.read(path: output + "/scores.npy").doubles()
        XCTAssertEqual(scores.count, 1000)
        XCTAssertEqual(result.metrics.auroc!, DetectionMetrics.auroc(scores: scores, truth: truth)!, accuracy: 1e-12,
                       "the AUROC is of the written scores")
        XCTAssertGreaterThan(result.metrics.auroc!, 0.7)
        let summary = try String(contentsOfFile: output + "/summary.txt", encoding: .utf8)
        XCTAssertTrue(summary.contains("AUROC"), summary)
        XCTAssertTrue(summary.contains("flagged \(result.flagged.count)"), summary)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/detect_log.txt"))
    }

    func testBadFlagsAndFoldersAreNamed() throws {
        func message(_ arguments: [String]) -> String {
            do {
                var command = try DetectCommand.parse(arguments)
                try command.validate()
                try command.run()
                return ""
            } catch {
                return DetectCommand.fullMessage(for: error) + "\(error)"
            }
        }
        let base = ["--checkpoint", fixture + "model.safetensors", "--poisoned-set", "/nonexistent/set"]
        XCTAssertTrue(message(["--method", "sentinet"] + base).contains("--method sentinet: unknown detector; expected one of strip, spectral, ac"))
        XCTAssertTrue(message(["--method", "strip", "--frr", "1"] + base).contains("--frr 1 is out of range: expected a number in [0, 1)"))
        XCTAssertTrue(message(["--method", "ac", "--ac-dims", "0"] + base).contains("--ac-dims 0 is out of range"))
        XCTAssertTrue(message(["--method", "spectral", "--limit", "0"] + base).contains("--limit 0 is out of range"))
        XCTAssertTrue(message(["--method", "spectral"] + base).contains("/nonexistent/set: no such folder"))
    }
}
