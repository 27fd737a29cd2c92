import Foundation
import Formats
import Support
import XCTest
@testable import Attacks
import TestSupport

final class TriggerInfoTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "trigger-info-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testRoundTripOfEveryKind() throws {
        let infos = [
            try TriggerInfo(poisonType: "badnets", trigger: try .checkerboard1Corner(), target: 0),
            try TriggerInfo(poisonType: "clean-label", trigger: try .checkerboard4Corner(alpha: 0.7), target: 9),
            try TriggerInfo(poisonType: "blend",
                            trigger: try .gaussianNoise(pattern: Trigger.seededNoisePattern(seed: 4), channels: 3),
                            target: 2, patternSource: "seeded noise (seed 4)"),
        ]
        for info in infos {
            let path = directory + "/\(info.poisonType)/" + TriggerInfo.fileName
            try info.write(path: path)
            XCTAssertEqual(try TriggerInfo.read(path: path), info)
            // The tensors are uint8 with HWC shapes, as documented.
            let file = try SafeTensors.read(path: path)
            XCTAssertEqual(file.tensors["trigger_pattern"]?.dtype, .u8)
            XCTAssertEqual(file.tensors["trigger_pattern"]?.shape, [32, 32, info.trigger.pattern!.patternChannels])
            XCTAssertEqual(file.tensors["trigger_mask"]?.shape, [32, 32, 1])
            XCTAssertEqual(file.metadata["trigger_alpha"].flatMap(Double.init), info.trigger.pattern!.alpha)
            XCTAssertEqual(file.metadata["poison_target"], "\(info.target)")
        }
    }

    func testSoftMaskIsStoredAsFloat64Exactly() throws {
        var mask = [Double](repeating: 0, count: 32 * 32 * 3)
        for i in mask.indices { mask[i] = Double(i % 7) / 7 }
        let trigger = try Trigger(kind: .gaussianNoise, pattern: [Double](repeating: 12.5, count: 1024), patternChannels: 1,
                                  mask: mask, maskChannels: 3, alpha: 0.45)
        let info = try TriggerInfo(poisonType: "blend", trigger: trigger, target: 1)
        let path = directory + "/soft.safetensors"
        try info.write(path: path)
        let file = try SafeTensors.read(path: path)
        XCTAssertEqual(file.tensors["trigger_mask"]?.dtype, .f64)
        XCTAssertEqual(file.tensors["trigger_pattern"]?.dtype, .f64)
        XCTAssertEqual(try TriggerInfo.read(path: path), info)
    }

    func testJSONTwinSummarises() throws {
        let info = try TriggerInfo(poisonType: "badnets", trigger: try .checkerboard1Corner(), target: 5)
        let path = directory + "/trigger_info.safetensors"
        try info.write(path: path)
        let twin = TriggerInfo.jsonTwinPath(for: path)
        XCTAssertEqual(twin, directory + "/trigger_info.json")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: twin))) as? [String: Any])
        XCTAssertEqual(json["trigger_type"] as? String, "checkerboard_1corner")
        XCTAssertEqual(json["poison_target"] as? Int, 5)
        XCTAssertEqual(json["trigger_alpha"] as? Double, 1)
        XCTAssertEqual(json["tensors_file"] as? String, "trigger_info.safetensors")
    }

    func testReadsAFileWrittenByPython() throws {
        // scripts/fixtures/make_attack_fixtures.py: safetensors.numpy with the reference's (1, 32, 32, C) shapes.
        let info = try TriggerInfo.read(path: SharedData.packageRoot() + "/Fixtures/attacks/trigger_info_python.safetensors")
        let fixture = try TriggerFixture.load()
        let blend = try XCTUnwrap(fixture.cases.first { $0.name == "blend" })
        XCTAssertEqual(info.poisonType, "blend")
        XCTAssertEqual(info.target, 3)
        XCTAssertEqual(info.trigger, .pattern(try Trigger.gaussianNoise(pattern: blend.pattern, channels: 3, alpha: 0.2)))
    }

    func testBadFilesNameThePathAndTheProblem() throws {
        let notSafetensors = directory + "/model.th"
        try Data("PK\u{3}\u{4} a zip, not safetensors".utf8).write(to: URL(fileURLWithPath: notSafetensors))
        XCTAssertThrowsError(try TriggerInfo.read(path: notSafetensors)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix(notSafetensors + ": not a trigger information file"), text)
            XCTAssertTrue(text.contains("docs/trigger-info.md"), text)
        }

        let otherSafetensors = directory + "/weights.safetensors"
        try SafeTensors(tensors: ["w": HostTensor(floats: [1], shape: [1])]).write(path: otherSafetensors)
        XCTAssertThrowsError(try TriggerInfo.read(path: otherSafetensors)) { error in
            XCTAssertTrue("\(error)".contains("metadata \"format\" is missing; expected \"backdoorlab.trigger_info\""), "\(error)")
        }

        let good = try TriggerInfo(poisonType: "badnets", trigger: try .checkerboard1Corner(), target: 0)
        func variant(_ name: String, _ change: (inout SafeTensors) -> Void) throws -> String {
            var file = SafeTensors(tensors: ["trigger_pattern": TriggerInfo.tensor(good.trigger.pattern!.pattern, channels: 1),
                                             "trigger_mask": TriggerInfo.tensor(good.trigger.pattern!.mask, channels: 1)],
                                   metadata: good.metadata)
            change(&file)
            let path = directory + "/\(name).safetensors"
            try file.write(path: path)
            return path
        }
        let cases: [(String, (inout SafeTensors) -> Void, String)] = [
            ("kind", { $0.metadata["trigger_type"] = "square" }, "trigger_type \"square\" is unknown"),
            ("alpha", { $0.metadata["trigger_alpha"] = "1.5" }, "trigger alpha 1.5 is not allowed; expected a number in [0, 1]"),
            ("target", { $0.metadata["poison_target"] = "12" }, "poison target 12 is not allowed"),
            ("shape", { $0.tensors["trigger_mask"] = HostTensor(uint8s: [UInt8](repeating: 0, count: 28 * 28), shape: [28, 28, 1]) },
             "tensor \"trigger_mask\" has shape [28, 28, 1]; expected [32, 32, 1] or [32, 32, 3]"),
            ("dtype", { $0.tensors["trigger_mask"] = HostTensor(int64s: [Int64](repeating: 0, count: 1024), shape: [32, 32, 1]) },
             "dtype I64; expected U8, F32 or F64"),
            ("missing", { $0.tensors["trigger_pattern"] = nil }, "no tensor \"trigger_pattern\""),
        ]
        for (name, change, expected) in cases {
            let path = try variant(name, change)
            XCTAssertThrowsError(try TriggerInfo.read(path: path)) { error in
                XCTAssertTrue("\(error)".hasPrefix(path + ": "), "\(error)")
                XCTAssertTrue("\(error)".contains(expected), "\(name): \(error)")
            }
        }
    }
}
