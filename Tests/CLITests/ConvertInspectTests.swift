import Foundation
import Formats
import XCTest
@testable import BackdoorCLI

final class ConvertInspectTests: XCTestCase {
    private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/formats/torch").path

    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "cli-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testConvertTorchStateDictEqualsReferenceSafetensors() throws {
        let output = try temporaryDirectory() + "/model.safetensors"
        let summary = try ConvertCommand.convert(input: fixtures + "/resnet18_narrow.pt", output: output)
        XCTAssertTrue(summary.contains("wrote \(output)"), summary)
        let converted = try SafeTensors.read(path: output)
        let expected = try SafeTensors.read(path: fixtures + "/resnet18_narrow_expected.safetensors")
        XCTAssertEqual(converted.tensors, expected.tensors)
        XCTAssertEqual(converted.metadata["converted_from"], "resnet18_narrow.pt")
        XCTAssertEqual(converted.metadata["source_format"], "torch")
    }

    func testConvertNestedCheckpointKeepsOnlyTheStateDict() throws {
        let output = try temporaryDirectory() + "/nested.safetensors"
        _ = try ConvertCommand.convert(input: fixtures + "/nested.pt", output: output)
        let converted = try SafeTensors.read(path: output)
        XCTAssertEqual(converted.names, ["linear_bias", "linear_weight"])
        XCTAssertEqual(converted.metadata["arch"], "resnet18")
    }

    func testConvertRefusesMaliciousInputWithoutWritingOutput() throws {
        let output = try temporaryDirectory() + "/evil.safetensors"
        XCTAssertThrowsError(try ConvertCommand.convert(input: fixtures + "/evil_os_system.pt", output: output)) { error in
            XCTAssertTrue(String(describing: error).contains("refusing global posix.system"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    func testConvertValidatesOutputName() {
        XCTAssertThrowsError(try ConvertCommand.parse(["in.pt", "out.bin"]))
        XCTAssertThrowsError(try ConvertCommand.parse(["same.safetensors", "same.safetensors"]))
    }

    func testInspectListsNamesDtypesShapesAndMetadata() throws {
        let text = try InspectCommand.report(path: fixtures + "/nested.pt", json: false)
        XCTAssertTrue(text.contains("torch, 4 tensors"), text)
        XCTAssertTrue(text.contains("state_dict.linear_weight  f32   [3, 2]"), text)
        XCTAssertTrue(text.contains("epoch"), text)
        XCTAssertTrue(text.contains("arch: resnet18"), text)

        let json = try InspectCommand.report(path: fixtures + "/trigger_info_expected.safetensors", json: true)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(object["format"] as? String, "safetensors")
        let tensors = try XCTUnwrap(object["tensors"] as? [[String: Any]])
        let pattern = try XCTUnwrap(tensors.first { $0["name"] as? String == "trigger_pattern" })
        XCTAssertEqual(pattern["dtype"] as? String, "u8")
        XCTAssertEqual(pattern["shape"] as? [Int], [1, 32, 32, 3])
    }

    func testInspectRejectsNonTensorFiles() {
        XCTAssertThrowsError(try InspectCommand.report(path: fixtures + "/../png/rgb.png", json: false)) { error in
            XCTAssertTrue(String(describing: error).contains("is a PNG image"), "\(error)")
        }
    }

    /// Issue 12, case 11: tensor names and metadata from a file are shown escaped, so terminal
    /// escapes, NUL and newlines cannot reach the terminal.
    func testInspectEscapesNamesAndMetadata() throws {
        let path = try temporaryDirectory() + "/hostile.safetensors"
        let name = "evil\u{1B}[2J\nfake line\u{0}\u{202E}"
        try SafeTensors(tensors: [name: HostTensor(floats: [1], shape: [1])],
                        metadata: ["note\u{7}": "a\rb"]).write(path: path)
        let text = try InspectCommand.report(path: path, json: false)
        XCTAssertTrue(text.contains("evil\\u{1b}[2J\\u{a}fake line\\u{0}\\u{202e}"), text)
        XCTAssertTrue(text.contains("note\\u{7}: a\\u{d}b"), text)
        XCTAssertFalse(text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, text)
        XCTAssertEqual(text.split(separator: "\n").count, 4, "header, one tensor, metadata title, one entry")
        // JSON keeps the exact name (JSON escapes control characters itself).
        let json = try InspectCommand.report(path: path, json: true)
        XCTAssertTrue(json.contains("\\u001b[2J\\nfake line\\u0000"), json)
    }
}

