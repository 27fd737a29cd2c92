import Attacks
import Datasets
import Foundation
import Formats
import Models
import NN
import Support
import Training
import XCTest
@testable import BackdoorCLI
@testable import Defenses
import TestSupport

/// `backdoor defend` end to end on real test images: the repaired model, result.json's numbers
/// and decisions, for CLP (against the numpy fixture's choice) and ANP.
final class DefendCommandTests: XCTestCase {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "defend-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func json(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    /// Writes the CLP fixture's model and a BadNets trigger; returns their paths.
    func fixtureModel(_ dir: String) throws -> (model: String, info: String, fixture: SafeTensors) {
        let fixture = try SafeTensors.read(path: SharedData.packageRoot() + "/Fixtures/defenses/clp_w4.safetensors")
        var state: [String: HostTensor] = [:]
        for (name, t) in fixture.tensors where name.hasPrefix("model.") { state[String(name.dropFirst(6))] = t }
        let model = try ResNet18.model(width: 4, on: testBackend)
        try model.load(stateDict: state)
        let paths = (dir + "/model.safetensors", dir + "/trigger_info.safetensors")
        try Checkpoint.save(model, to: paths.0)
        try TriggerInfo(poisonType: "badnets", trigger: try Trigger.standard(.checkerboard1Corner, alpha: 1), target: 0)
            .write(path: paths.1)
        return (paths.0, paths.1, fixture)
    }

    /// `backdoor defend --defense NAME` on the fixture model and the real test set; its result.json.
    func defend(_ name: String, _ flags: [String]) throws
        -> (result: [String: Any], output: String, model: String, fixture: SafeTensors) {
        let dir = try temporaryDirectory()
        let (modelPath, infoPath, fixture) = try fixtureModel(dir)
        let (result, output) = try defend(name, flags, checkpoint: modelPath, triggerInfo: infoPath, in: dir)
        return (result, output, modelPath, fixture)
    }

    /// `backdoor defend --defense NAME` on a given model into `dir/NAME`; its result.json and output folder.
    func defend(_ name: String, _ flags: [String], checkpoint: String, triggerInfo: String, in dir: String) throws
        -> (result: [String: Any], output: String) {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let output = dir + "/" + name
        try DefendCommand.parse([
            "--defense", name, "--checkpoint", checkpoint, "--trigger-info", triggerInfo, "--output-dir", output,
            "--data-dir", shared + "/cifar10", "--split-file", shared + "/anp/cifar_shuffle.txt",
        ] + flags).run()
        return (try json(output + "/result.json"), output)
    }

    func testCLPPrunesTheFixturesChannelsAndReportsBeforeAndAfter() throws {
        let (result, output, modelPath, fixture) = try defend("clp", ["--test-limit", "200"])
        let pruned = try XCTUnwrap(result["pruned"] as? [[String: Any]])
        let (original, _) = try Checkpoint.load(modelPath, on: testBackend)
        var expected: [String] = []
        for bn in original.batchNorms {
            for (i, flag) in try fixture.tensors["pruned_u3." + bn.name]!.floats().enumerated() where flag == 1 {
                expected.append("\(bn.name)[\(i)]")
            }
        }
        XCTAssertEqual(pruned.map { "\($0["layer"]!)[\($0["index"]!)]" }, expected)
        for phase in ["before", "after"] {
            let m = try XCTUnwrap(result[phase] as? [String: Double], phase)
            let (clean, asr, robust) = (m["clean_acc"]!, m["asr"]!, m["robust_acc"]!)
            XCTAssertTrue([clean, asr, robust].allSatisfy { (0...1).contains($0) }, "\(phase): \(m)")
            // On the same non-target images a prediction is either the target or the true label, not both.
            XCTAssertLessThanOrEqual(asr + robust, 1 + 1e-9, phase)
        }
        let (repaired, _) = try Checkpoint.load(output + "/model.safetensors", on: testBackend)
        for (a, b) in zip(original.batchNorms, repaired.batchNorms) {
            var weight = try a.weight.plainValues(), bias = try a.bias.plainValues()
            for key in expected where key.hasPrefix(a.name + "[") {
                let index = Int(key.dropFirst(a.name.count + 1).dropLast())!
                (weight[index], bias[index]) = (0, 0)
            }
            XCTAssertEqual(try b.weight.plainValues(), weight, a.name)
            XCTAssertEqual(try b.bias.plainValues(), bias, a.name)
        }
        let log = try String(contentsOfFile: output + "/defend_log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains("clp: \(expected.count) channels above mean + 3.0 std"), log)
    }

    func testANPPrunesOnlyNeuronsAtOrBelowTheThreshold() throws {
        let (result, output, _, _) = try defend("anp", ["--clean-frac", "0.002", "--nb-iter", "4", "--threshold", "0.9",
                                                        "--test-limit", "100"])
        XCTAssertEqual(result["clean_images"] as? Int, 100, "the first 0.2% of the split")
        let pruned = try XCTUnwrap(result["pruned"] as? [[String: Any]])
        XCTAssertFalse(pruned.isEmpty, "four steps move some masks under 0.9")
        XCTAssertTrue(pruned.allSatisfy { ($0["value"] as! Double) <= 0.9 })
        let (repaired, _) = try Checkpoint.load(output + "/model.safetensors", on: testBackend)
        let layers = Dictionary(uniqueKeysWithValues: repaired.batchNorms.map { ($0.name, $0) })
        for neuron in pruned {
            let weight = try layers[neuron["layer"] as! String]!.weight.plainValues()
            XCTAssertEqual(weight[neuron["index"] as! Int], 0)
        }
    }

    /// `--acc-ratio`: the threshold is chosen on the defender's images, and result.json says which,
    /// from which candidates and why. The rule is recomputed from the recorded accuracies, the
    /// chosen one is re-measured on the written model, and exactly the neurons at or below it are pruned.
    func testANPChoosesTheThresholdOnTheDefendersImagesAndRecordsTheDecision() throws {
        try checkThresholdChoice(flags: ["--clean-frac", "0.002"], rule: "defender's 100 images", choiceImages: 0..<100)
    }

    /// `holdout`: the masks are fitted on the first half of the defender's 200 images, the
    /// threshold chosen on the other half (and recorded as such).
    func testANPWithHoldoutChoosesTheThresholdOnImagesTheMasksWereNotFittedOn() throws {
        let (result, _) = try checkThresholdChoice(flags: ["--clean-frac", "0.004", "--set", "holdout=0.5"],
                                                   rule: "defender's 100 held-out images", choiceImages: 100..<200)
        let selection = (result["decision"] as? [String: Any])?["selection"] as? [String: Any]
        XCTAssertEqual(selection?["held_out"] as? Bool, true)
        XCTAssertEqual((result["settings"] as? [String: Double])?["holdout"], 0.5)
    }

    /// Runs ANP with `--acc-ratio 0.1` and checks the recorded decision against `choiceImages`
    /// (positions in the reference permutation): the rule's text, the unpruned model's accuracy on
    /// them, and the written model's.
    @discardableResult
    func checkThresholdChoice(flags: [String], rule: String, choiceImages: Range<Int>) throws -> (result: [String: Any], output: String) {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let (result, output, modelPath, _) = try defend("anp", flags + ["--nb-iter", "4", "--acc-ratio", "0.1",
                                                                        "--set", "pruning_step=0.1", "--test-limit", "100"])
        XCTAssertEqual((result["settings"] as? [String: Double])?["acc_ratio"], 0.1)
        let decision = try XCTUnwrap(result["decision"] as? [String: Any])
        let selection = try XCTUnwrap(decision["selection"] as? [String: Any])
        let candidates = try XCTUnwrap(selection["candidates"] as? [Double])
        XCTAssertEqual(candidates.count, 10)
        for (a, b) in zip(candidates, Pruning.thresholds(max: 0.9, step: 0.1)) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        XCTAssertTrue(try XCTUnwrap(selection["rule"] as? String).contains(rule), "\(selection)")
        let base = try XCTUnwrap(selection["defender_clean_acc_unpruned"] as? Double)
        let tried = try XCTUnwrap(selection["tried"] as? [[String: Any]])
        let accuracies = tried.map { $0["defender_clean_acc"] as! Double }
        let firstOut = accuracies.firstIndex { (base - $0) / base >= 0.1 }
        XCTAssertEqual(tried.count, firstOut.map { $0 + 1 } ?? 10, "tried up to the first that loses 10%, or all")
        let threshold = try XCTUnwrap(decision["threshold"] as? Double)
        XCTAssertEqual(threshold, firstOut == 0 ? ThresholdChoice.nothingPruned : tried[(firstOut ?? 10) - 1]["threshold"] as? Double)

        let pruned = try XCTUnwrap(result["pruned"] as? [[String: Any]])
        XCTAssertEqual(pruned.count, tried.last { $0["threshold"] as? Double == threshold }?["pruned"] as? Int ?? 0)
        XCTAssertTrue(pruned.allSatisfy { ($0["value"] as! Double) <= threshold })
        let (repaired, _) = try Checkpoint.load(output + "/model.safetensors", on: testBackend)
        let data = try CIFAR10.load(directory: shared + "/cifar10")
        let defender = data.train.subset(Array(try Permutation.read(path: shared + "/anp/cifar_shuffle.txt")[choiceImages]))
        XCTAssertEqual(try Evaluation.evaluate(try Checkpoint.load(modelPath, on: testBackend).model, on: defender).accuracy, base,
                       accuracy: 1e-12, "the baseline is the unpruned model's on the images the threshold is chosen on")
        if let chosen = tried.last(where: { $0["threshold"] as? Double == threshold }) {
            XCTAssertEqual(try Evaluation.evaluate(repaired, on: defender).accuracy, chosen["defender_clean_acc"] as! Double,
                           accuracy: 1e-12, "the recorded accuracy is the written model's")
        }
        return (result, output)
    }

    func testUnknownDefenseIsNamed() {
        XCTAssertThrowsError(try DefendCommand.parse(["--defense", "magic", "--checkpoint", "m"])) { error in
            XCTAssertTrue(DefendCommand.message(for: error).contains("magic"), DefendCommand.message(for: error))
        }
    }
}
