import XCTest
import Models
import Formats
import Support
@testable import NN
import TestSupport

/// A state_dict saved by `torch.save` opens as a model whose logits equal PyTorch's.
final class PyTorchImportTests: XCTestCase {
    let torchFolder = SharedData.packageRoot() + "/Fixtures/formats/torch/"

    func testImportedNarrowModelGivesPyTorchLogits() throws {
        let (model, warnings) = try Checkpoint.load(torchFolder + "resnet18_narrow.pt", on: testBackend)
        XCTAssertEqual(warnings, [])
        XCTAssertEqual(model.width, 2, "width inferred from conv1.weight")
        let io = try SafeTensors.read(path: torchFolder + "resnet18_narrow_io.safetensors")
        let logits = try model.forward(images: io.tensors["input"]!.floats(), count: 2, mode: .evaluation)
        assertClose(logits, try io.tensors["logits"]!.floats(), rtol: 1e-5, atol: 1e-5, "imported logits")
    }

    func testConvertedCheckpointKeepsEveryTensorBitExact() throws {
        let (model, _) = try Checkpoint.load(torchFolder + "resnet18_narrow.pt", on: testBackend)
        let path = NSTemporaryDirectory() + "converted-\(UUID().uuidString).safetensors"
        try Checkpoint.save(model, to: path)
        let expected = try SafeTensors.read(path: torchFolder + "resnet18_narrow_expected.safetensors")
        let written = try SafeTensors.read(path: path)
        for (name, tensor) in expected.tensors {
            XCTAssertEqual(written.tensors[name], tensor, name)
        }
    }

    func testMaliciousCheckpointIsRefusedNamingTheGlobal() throws {
        XCTAssertThrowsError(try Checkpoint.load(torchFolder + "evil_os_system.pt", on: testBackend)) { error in
            XCTAssertTrue("\(error)".contains("system"), "\(error)")
        }
    }
}
