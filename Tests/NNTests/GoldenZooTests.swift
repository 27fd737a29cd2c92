import XCTest
import Formats
import Support
@testable import NN
import Models
import TestSupport

/// Every zoo model against PyTorch (Fixtures/zoo, scripts/fixtures/make_zoo_fixtures.py): a
/// `torch.save` state_dict of a width-4 instance opens through Checkpoint.load (architecture and
/// width inferred from its keys and shapes) and gives PyTorch's eval and training logits, losses,
/// input gradients and every parameter gradient; full-size state_dict layouts equal PyTorch's.
final class GoldenZooTests: XCTestCase {
    static let folder = SharedData.packageRoot() + "/Fixtures/zoo/"

    /// Tolerance relative to each tensor's largest value: the golden values are float64-computed,
    /// and PyTorch's own float32 run is within 2.5e-6 (logits, input gradients: 9e-6) of them, up
    /// to 2.2e-5 for the parameter gradients of the 20-50 BN layers deep VGG-19 and MobileNetV2
    /// (training-mode BN amplifies rounding). 1e-4 leaves an independent float32 implementation
    /// (other reduction orders, blocked layouts) room while a wrong connection is off by far more;
    /// MobileNetV2's parameter gradients get 3e-4 (52 BN layers: ours reach 1.2e-4, most 4e-5 to
    /// 9e-5). Tensors that are exactly 0 in float64 (conv biases and BN shifts that feed a
    /// training-mode BN, which removes any constant shift) must be below 1e-5: float32 leaves
    /// rounding there (ours up to 1.7e-6, PyTorch's 3e-7) and no scale to be relative to.
    func assertTensorClose(_ a: [Float], _ b: [Float], _ what: String, tolerance: Float = 1e-4,
                           file: StaticString = #filePath, line: UInt = #line) {
        let scale = b.map(abs).max() ?? 0
        let atol = scale < 1e-12 ? 1e-5 : tolerance * scale + 1e-6
        assertClose(a, b, rtol: 0, atol: atol, what, file: file, line: line)
    }

    func check(_ architecture: Architecture, gradientTolerance: Float = 1e-4, file: StaticString = #filePath,
               line: UInt = #line) throws {
        let name = architecture.rawValue
        let (model, warnings) = try Checkpoint.load(Self.folder + name + ".pt", on: directBackend)
        XCTAssertEqual(warnings, [], file: file, line: line)
        XCTAssertEqual(model.architecture, name, "architecture inferred from the keys", file: file, line: line)
        XCTAssertEqual(model.width, 4, "width inferred from the stem", file: file, line: line)
        let g = try SafeTensors.read(path: Self.folder + name + "_golden.safetensors")
        let x = try g.f("x")
        let labels = try g.tensors["labels"]!.int64s().map { Int32($0) }
        let n = labels.count

        // Eval mode: logits and the input gradient (lossAndInputGradient's is the summed loss's).
        let (losses, evalLogits, evalInputGradient) = try model.lossAndInputGradient(images: x, labels: labels)
        assertTensorClose(evalLogits, try g.f("eval_logits"), "\(name) eval logits", file: file, line: line)
        assertClose([losses.reduce(0, +) / Float(n)], try g.f("eval_loss"), rtol: 1e-4, "\(name) eval loss",
                    file: file, line: line)
        assertTensorClose(evalInputGradient.map { $0 / Float(n) }, try g.f("eval_input_grad"),
                          "\(name) eval input gradient", file: file, line: line)

        // Training mode: logits, loss, then every parameter's and the input's gradient.
        let logits = try model.forward(images: x, count: n, mode: .training)
        assertTensorClose(logits, try g.f("train_logits"), "\(name) train logits", file: file, line: line)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: model.numClasses)
        assertClose([ce.meanLoss], try g.f("train_loss"), rtol: 1e-4, "\(name) train loss", file: file, line: line)
        let gx = try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: true)!
        assertTensorClose(gx, try g.f("train_input_grad"), "\(name) train input gradient", file: file, line: line)
        let gradientNames = Set(g.tensors.keys.filter { $0.hasPrefix("grad.") })
        XCTAssertEqual(Set(model.parameters.map { "grad." + $0.name }), gradientNames, "\(name): parameters",
                       file: file, line: line)
        for p in model.parameters {
            assertTensorClose(try p.plainGradient(), try g.f("grad." + p.name), "\(name) gradient of \(p.name)",
                              tolerance: gradientTolerance, file: file, line: line)
        }
    }

    func testPreActResNet18MatchesPyTorch() throws { try check(.preactResNet18) }
    func testVGG16MatchesPyTorch() throws { try check(.vgg16) }
    func testVGG19MatchesPyTorch() throws { try check(.vgg19) }
    func testMobileNetV2MatchesPyTorch() throws { try check(.mobileNetV2, gradientTolerance: 3e-4) }

    /// The reference-size models have PyTorch's state_dict names, order, shapes and parameter count.
    func testFullSizeStateDictLayoutsMatchPyTorch() throws {
        let url = URL(fileURLWithPath: Self.folder + "layouts.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: [String: Any]]
        for architecture in Architecture.allCases where architecture != .resnet18 {
            let reference = json[architecture.rawValue]!
            let model = try architecture.model(on: directBackend)
            XCTAssertEqual(model.width, reference["width"] as? Int, architecture.rawValue)
            let entries = reference["state_dict"] as! [[Any]]
            let layout = model.stateDictLayout()
            XCTAssertEqual(layout.map(\.name), entries.map { $0[0] as! String }, architecture.rawValue)
            XCTAssertEqual(layout.map(\.shape), entries.map { $0[1] as! [Int] }, architecture.rawValue)
            XCTAssertEqual(model.parameterCount, reference["parameter_count"] as? Int, architecture.rawValue)
        }
    }

    /// Our checkpoints record the architecture; a wrong --model names both; keys tell the models apart.
    func testCheckpointsRecordAndCheckTheArchitecture() throws {
        for architecture in Architecture.allCases {
            let model = try architecture.model(width: 8, seed: 3, on: directBackend)
            let path = NSTemporaryDirectory() + "zoo-\(UUID().uuidString).safetensors"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try Checkpoint.save(model, to: path)
            let file = try SafeTensors.read(path: path)
            XCTAssertEqual(file.metadata["architecture"], architecture.rawValue)
            let (loaded, _) = try Checkpoint.load(path, expected: architecture, on: directBackend)
            XCTAssertEqual(loaded.architecture, architecture.rawValue)
            XCTAssertEqual(ModelZoo.architecture(of: file.tensors), architecture, "inferred from the keys alone")
            let other = architecture == .vgg16 ? Architecture.vgg19 : .vgg16
            XCTAssertThrowsError(try Checkpoint.load(path, expected: other, on: directBackend)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(architecture.flagName) && text.contains("--model asks for \(other.flagName)"),
                              text)
            }
        }
        XCTAssertNil(ModelZoo.architecture(of: ["weight": HostTensor(floats: [1], shape: [1])]))
    }

    /// VGG's own initialisation (the reference's): conv weights N(0, 2 / (9 out)), zero biases,
    /// classifier N(0, 0.01). Checked on the full-size VGG-16's last convolution (2.4M weights).
    func testVGGInitialisationIsTheReferences() throws {
        let state = try Architecture.vgg16.model(seed: 5, on: directBackend).stateDict()
        func std(_ values: [Float]) -> Double {
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
            return (values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)).squareRoot()
        }
        XCTAssertEqual(std(try state["features.40.weight"]!.floats()), (2.0 / (9 * 512)).squareRoot(), accuracy: 2e-4)
        XCTAssertEqual(std(try state["classifier.weight"]!.floats()), 0.01, accuracy: 1e-3)
        XCTAssertEqual(Set(try state["features.40.bias"]!.floats()), [0])
        XCTAssertEqual(Set(try state["classifier.bias"]!.floats()), [0])
    }
}
