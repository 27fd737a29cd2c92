import XCTest
import Formats
import Support
@testable import NN
import Models
import TestSupport

/// A width-4 ResNet-18 against PyTorch (Fixtures/nn/resnet18_w4.safetensors): logits, loss,
/// every parameter gradient, and the whole state after two SGD steps.
final class GoldenResNetTests: XCTestCase {
    func prefixed(_ file: SafeTensors, _ prefix: String) -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for (name, t) in file.tensors where name.hasPrefix(prefix) { out[String(name.dropFirst(prefix.count))] = t }
        return out
    }

    /// Tolerance relative to the tensor's largest value (many reductions in another order).
    func assertTensorClose(_ a: [Float], _ b: [Float], _ what: String, tolerance: Float = 1e-4) {
        let scale = b.map(abs).max() ?? 0
        assertClose(a, b, rtol: 0, atol: tolerance * scale + 1e-6, what)
    }

    func testForwardGradientsAndTwoSGDSteps() throws {
        let g = try Fixture.load("nn/resnet18_w4.safetensors")
        let model = try ResNet18.model(width: 4, on: testBackend)
        try model.load(stateDict: prefixed(g, "init."))
        let x = try g.f("x")
        let labels = try g.tensors["labels"]!.int64s().map { Int32($0) }

        assertTensorClose(try model.forward(images: x, count: 8, mode: .evaluation), try g.f("eval_logits"), "eval logits")

        let sgd = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 5e-4)
        for step in 1...2 {
            let logits = try model.forward(images: x, count: 8, mode: .training)
            let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10)
            if step == 1 {
                assertTensorClose(logits, try g.f("train_logits"), "train logits")
                assertClose([ce.meanLoss], try g.f("train_loss"), rtol: 1e-4, "train loss")
            } else {
                assertClose([ce.meanLoss], try g.f("step1_train_loss"), rtol: 1e-4, "step-1 loss")
            }
            try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
            if step == 1 {
                for p in model.parameters {
                    assertTensorClose(try p.plainGradient(), try g.f("grad." + p.name), "gradient of \(p.name)")
                }
            }
            try sgd.step(model.parameters)
        }
        let state = try model.stateDict()
        for (name, expected) in prefixed(g, "step2.") {
            guard let actual = state[name] else { XCTFail("missing \(name)"); continue }
            if expected.dtype == .i64 {
                XCTAssertEqual(try actual.int64s(), try expected.int64s(), name)
            } else {
                assertTensorClose(try actual.floats(), try expected.floats(), "step 2 \(name)")
            }
        }
        assertTensorClose(try model.forward(images: x, count: 8, mode: .evaluation), try g.f("step2_eval_logits"),
                          "eval logits after two steps")
    }

    func testStateDictLayoutMatchesPyTorch() throws {
        let url = URL(fileURLWithPath: SharedData.packageRoot() + "/Fixtures/nn/resnet18_param_count.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let entries = json["width4_state_dict"] as! [[String: Any]]
        let layout = try ResNet18.model(width: 4, on: testBackend).stateDictLayout()
        XCTAssertEqual(layout.map(\.name), entries.map { $0["name"] as! String })
        XCTAssertEqual(layout.map(\.shape), entries.map { $0["shape"] as! [Int] })
        let counts = json["parameter_counts"] as! [String: Int]
        for width in [4, 16, 64] {
            let model = try ResNet18.model(width: width, on: testBackend)
            XCTAssertEqual(model.parameterCount, counts[String(width)], "width \(width)")
        }
    }

    func testCheckpointRoundTripGivesSameLogits() throws {
        let model = try ResNet18.model(width: 4, seed: 9, on: testBackend)
        var generator = SeededGenerator(seed: 2)
        let x = (0..<(2 * 3072)).map { _ in generator.nextGaussian() }
        _ = try model.forward(images: x, count: 2, mode: .training)  // non-trivial running stats
        let before = try model.forward(images: x, count: 2, mode: .evaluation)
        let path = NSTemporaryDirectory() + "ckpt-\(UUID().uuidString).safetensors"
        try Checkpoint.save(model, to: path)
        let (loaded, warnings) = try Checkpoint.load(path, on: testBackend)
        XCTAssertTrue(warnings.isEmpty)
        XCTAssertEqual(loaded.width, 4)
        XCTAssertEqual(try loaded.forward(images: x, count: 2, mode: .evaluation), before)
        XCTAssertEqual(try SafeTensors.read(path: path).tensors["bn1.num_batches_tracked"]?.dtype, .i64)
    }

    func testMismatchedStateDictIsAnErrorListingNames() throws {
        let model = try ResNet18.model(width: 4, on: testBackend)
        var state = try model.stateDict()
        state["linear.bias"] = nil
        state["extra.weight"] = HostTensor(floats: [1], shape: [1])
        state["conv1.weight"] = HostTensor(floats: .init(repeating: 0, count: 8 * 27), shape: [8, 3, 3, 3])
        XCTAssertThrowsError(try model.load(stateDict: state)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("missing linear.bias"), text)
            XCTAssertTrue(text.contains("unexpected extra.weight"), text)
            XCTAssertTrue(text.contains("conv1.weight: shape [8, 3, 3, 3], expected [4, 3, 3, 3]"), text)
        }
        let warnings = try model.load(stateDict: state, strict: false)
        XCTAssertEqual(warnings.count, 3)
    }
}
