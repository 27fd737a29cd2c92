import ArgumentParser
import Experiments
import Foundation
import Models
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `--model` on the commands that build or open a network (issue 13).
final class ModelFlagTests: XCTestCase {
    func message<C: ParsableArguments>(_ command: C.Type, _ arguments: [String]) -> String {
        do {
            _ = try command.parse(arguments)
            return "accepted"
        } catch {
            return command.message(for: error)
        }
    }

    func testWidthIsRefusedForModelsOutsideTheResNetFamily() {
        for (command, extra) in [(TrainCommand.self as ParsableArguments.Type, [String]()), (BenchCommand.self, []),
                                 (ANPCommand.self, ["--benchmark", "1"]), (RunCommand.self, [])] {
            let text = message(command, extra + ["--model", "vgg16-bn", "--width", "16"])
            XCTAssertTrue(text.contains("--width applies to the ResNet family") && text.contains("vgg16-bn"),
                          "\(command): \(text)")
            XCTAssertEqual(message(command, extra + ["--model", "preact-resnet18", "--width", "16"]), "accepted", "\(command)")
            XCTAssertEqual(message(command, extra + ["--model", "mobilenetv2"]), "accepted", "\(command)")
        }
        let unknown = message(TrainCommand.self, ["--model", "resnet50"])
        XCTAssertTrue(unknown.contains("resnet50") && unknown.contains("mobilenetv2"), unknown)
    }

    func testSettingsFollowTheModel() throws {
        let vgg = try ExperimentOptions.parse(["--model", "vgg19-bn"]).settings()
        XCTAssertEqual(try vgg.model.architecture, .vgg19)
        XCTAssertEqual(vgg.model.width, 64, "the quick preset's width 16 is for the ResNet family")
        let preact = try ExperimentOptions.parse(["--model", "preact-resnet18"]).settings()
        XCTAssertEqual(preact.model.width, try ExperimentConfigFile.settings(preset: "quick").model.width)
        XCTAssertEqual(try ExperimentOptions.parse([]).settings().model.architecture, .resnet18)
        XCTAssertEqual(try TrainCommand.parse(["--model", "mobilenetv2"]).network.width(nil), 32)
    }

    func testOpeningACheckpointOfAnotherModelNamesBoth() throws {
        let path = NSTemporaryDirectory() + "model-flag-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Checkpoint.save(try Architecture.preactResNet18.model(width: 4, on: testBackend), to: path)
        XCTAssertThrowsError(try ModelFiles.loadModel(path, expected: .resnet18, on: testBackend)) { error in
            XCTAssertEqual("\(error)", "\(path): holds a preact-resnet18 model, but --model asks for resnet18")
        }
        XCTAssertEqual(try ModelFiles.loadModel(path, on: testBackend).architecture, "preact-resnet18")
    }
}
