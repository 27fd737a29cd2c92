import Datasets
import Formats
import Foundation
import Models
import NN
import XCTest
@testable import Attacks
import TestSupport

/// TrojanNN against BackdoorBench's arithmetic (Fixtures/attacks/trojannn.json, written by
/// scripts/fixtures/make_trojannn_fixtures.py with PIL, torch and numpy) and its optimisation on
/// the committed clean quick model (Fixtures/defenses/benign_w8).
final class TrojanNNTests: XCTestCase {
    static let fixture: [String: Any] = {
        let path = SharedData.packageRoot() + "/Fixtures/attacks/trojannn.json"
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }()

    func bytes(_ key: String) throws -> [UInt8] { try TriggerFixture.hexBytes(try XCTUnwrap(Self.fixture[key] as? String, key)) }

    static func cleanModel() throws -> Model {
        try Checkpoint.load(SharedData.packageRoot() + "/Fixtures/defenses/benign_w8/model.safetensors", on: testBackend).model
    }

    func testStampingMatchesTheReferenceByteForByte() throws {
        let images = try (Self.fixture["images_hex"] as! [String]).map(TriggerFixture.hexBytes)
        let mask = try bytes("mask_hex")
        for case let entry as [String: Any] in try XCTUnwrap(Self.fixture["cases"] as? [Any]) {
            let name = entry["name"] as! String
            let trigger = try TrojanNNTrigger(pattern: try TriggerFixture.hexBytes(entry["pattern_hex"] as! String), mask: mask)
            var set = ImageSet(pixels: images.flatMap { $0 }, labels: [Int](repeating: 3, count: images.count))
            AttackTrigger.trojannn(trigger).apply(to: &set, at: Array(0..<images.count))
            let expected = try (entry["poisoned_hex"] as! [String]).map(TriggerFixture.hexBytes)
            for (i, reference) in expected.enumerated() {
                XCTAssertEqual(Array(set.image(i)), reference, "\(name) pattern, image \(i)")
            }
            // The white image wraps (255 + p keeps p - 1): the reference's astype before its clip.
            XCTAssertTrue(zip(expected[2], trigger.pattern).contains { $0 != 255 && $1 > 1 }, "\(name): the fixture exercises the wrap")
        }
    }

    func testPatternBytesAndMaskAsTheReferenceStoresThem() throws {
        let floats = try XCTUnwrap(Self.fixture["pattern_floats_chw"] as? [Double]).map(Float.init)
        let maskImage = try bytes("mask_image_hex")
        let plane = 32 * 32
        var maskCHW = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane { for c in 0..<3 { maskCHW[c * plane + p] = Float(maskImage[p * 3 + c]) / 255 } }
        let trigger = try TrojanNN.trigger(pattern: floats, mask: maskCHW)
        XCTAssertEqual(trigger.pattern, try bytes("pattern_bytes_hex"), "x * 255 truncated in float32, as ToPILImage")
        XCTAssertEqual(trigger.mask, try bytes("mask_hex"))
        // The shipped mask is the fixture's resize of BackdoorBench's apple4.png.
        XCTAssertEqual(try TrojanNN.maskImage(path: nil), maskCHW)
        XCTAssertEqual(trigger.mask.filter { $0 == 1 }.count, 351, "117 pixels of the apple, in each channel")
    }

    func testMostConnectedNeuronsAsTheReference() throws {
        for case let entry as [String: Any] in try XCTUnwrap(Self.fixture["neurons"] as? [Any]) {
            let chosen = try TrojanNN.mostConnectedNeurons(weight: (entry["weight"] as! [Double]).map(Float.init), shape: entry["shape"] as! [Int],
                                                           count: entry["count"] as! Int)
            XCTAssertEqual(chosen, entry["chosen"] as! [Int], "shape \(entry["shape"]!)")
        }
        XCTAssertThrowsError(try TrojanNN.mostConnectedNeurons(weight: [1, 2, 3, 4], shape: [2, 2], count: 3)) { error in
            XCTAssertTrue("\(error)".contains("at most the layer's 2 inputs"), "\(error)")
        }
    }

    func testOptimisationRaisesTheChosenNeuronsOfTheCleanModel() throws {
        let model = try Self.cleanModel()
        var settings = TrojanNNSettings()
        settings.steps = 30
        let mask = try TrojanNN.maskImage(path: nil)
        var lines: [String] = []
        let result = try TrojanNN.optimise(model, mask: mask, settings: settings) { lines.append($0) }
        XCTAssertEqual(result.tap, "avgpool", "linear's input")
        XCTAssertEqual(result.steps, 30)
        let linear = try XCTUnwrap(try model.stateDict()["linear.weight"])
        XCTAssertEqual(result.neurons, try TrojanNN.mostConnectedNeurons(weight: try linear.floats(), shape: linear.shape, count: 2))
        // The reference's start is the mask image itself; its activations are the baseline.
        let start = try model.forward(images: CleanLabelPGD.normalised(mask, images: [0], normalization: .cifar10), count: 1,
                                      mode: .evaluation, taps: ["avgpool"]).features["avgpool"]!
        XCTAssertEqual(result.before, result.neurons.map { start[$0] })
        for (before, after) in zip(result.before, result.after) {
            XCTAssertGreaterThan(after, before * 1.3, "before \(result.before), after \(result.after)")
        }
        let end = try model.forward(images: CleanLabelPGD.normalised(result.pattern, images: [0], normalization: .cifar10), count: 1,
                                    mode: .evaluation, taps: ["avgpool"]).features["avgpool"]!
        XCTAssertEqual(result.after, result.neurons.map { end[$0] }, "the reported activations are the pattern's")
        for (x, x0) in zip(result.pattern, mask) {
            if x0 == 0 { XCTAssertEqual(x, 0, "outside the mask the pattern stays black") }
            XCTAssertLessThanOrEqual(abs(x - x0), 0.3 + 1e-6)
            XCTAssertTrue((0...1).contains(x))
        }
        XCTAssertNotEqual(result.pattern, mask, "the pattern moved")
        XCTAssertTrue(lines.first?.hasPrefix("trojannn: neurons") ?? false, "\(lines)")

        // Through the attack's settings: the trigger information carries pattern, mask and the choice.
        let attack = AttackSettings(poisonType: .trojannn, trojannn: settings)
        let info = try XCTUnwrap(attack.triggerInfo(cleanModel: model).info)
        guard case let .trojannn(trigger) = info.trigger else { return XCTFail("\(info.trigger)") }
        XCTAssertEqual(trigger, try TrojanNN.trigger(pattern: result.pattern, mask: mask))
        XCTAssertEqual(info.notes["trojannn_neuron_indices"], result.neurons.map(String.init).joined(separator: ","))
        XCTAssertEqual(info.notes["poison_rate_meaning"], Poisoning.Selection.wholeSet.rateMeaning)
        let path = NSTemporaryDirectory() + "trojannn-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path); try? FileManager.default.removeItem(atPath: TriggerInfo.jsonTwinPath(for: path)) }
        try info.write(path: path)
        XCTAssertEqual(try TriggerInfo.read(path: path), info)
        let file = try SafeTensors.read(path: path)
        XCTAssertEqual(file.tensors["trojannn_pattern"]?.shape, [32, 32, 3])
        XCTAssertEqual(file.tensors["trojannn_mask"]?.shape, [32, 32, 3])
    }

    func testBadSettingsAreRefusedNamingTheValue() throws {
        let model = try Self.cleanModel()
        let mask = try TrojanNN.maskImage(path: nil)
        func refused(_ change: (inout TrojanNNSettings) -> Void, _ message: String, line: UInt = #line) {
            var settings = TrojanNNSettings()
            change(&settings)
            XCTAssertThrowsError(try TrojanNN.optimise(model, mask: mask, settings: settings), line: line) { error in
                XCTAssertTrue("\(error)".contains(message), "\(error)", line: line)
            }
        }
        refused({ $0.steps = 0 }, "TrojanNN steps 0 is not allowed; expected an integer >= 1")
        refused({ $0.stepSize = 2 }, "TrojanNN step size 2.0 is not allowed")
        refused({ $0.epsilon = 0 }, "TrojanNN epsilon 0.0 is not allowed")
        refused({ $0.neurons = 0 }, "TrojanNN neurons 0 is not allowed")
        refused({ $0.neurons = 65 }, "at most the layer's 64 inputs")
        refused({ $0.targetValue = .nan }, "TrojanNN target value nan is not allowed")
        refused({ $0.layer = "fc" }, "TrojanNN layer fc is not allowed; expected a module of resnet18-cifar")
        refused({ $0.layer = "conv1" }, "a module that follows another in a Sequential")
        refused({ $0.layer = "avgpool" }, "a layer with a weight (no avgpool.weight")
        XCTAssertThrowsError(try AttackSettings(poisonType: .trojannn).triggerInfo()) { error in
            XCTAssertEqual("\(error)", "TrojanNN model missing is not allowed; expected a clean model to optimise the trigger against")
        }
        let black = NSTemporaryDirectory() + "trojannn-black-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: black) }
        try PNG.write(PNGImage(width: 32, height: 32, channels: 1, pixels: [UInt8](repeating: 0, count: 1024)), path: black)
        XCTAssertThrowsError(try TrojanNN.maskImage(path: black)) { XCTAssertTrue("\($0)".contains("black everywhere"), "\($0)") }
        XCTAssertThrowsError(try TrojanNNTrigger(pattern: [UInt8](repeating: 9, count: 3072), mask: [UInt8](repeating: 0, count: 3072))) {
            XCTAssertTrue("\($0)".contains("outside its mask"), "\($0)")
        }
    }
}
