import XCTest
import Backend
import Support
@testable import NN
import TestSupport

/// A model built from the Layer protocol alone (no edits anywhere else): conv (with bias) - BN -
/// ReLU - max pool - grouped conv - BN - average pool - linear. Its state_dict names come from
/// the tree walk, its gradients match finite differences, and feature taps read and feed back
/// intermediate activations.
final class ComposedModelTests: XCTestCase {
    var generator = SeededGenerator(seed: 21)
    let n = 3, classes = 5

    func makeModel() throws -> Model {
        let root = Sequential(named: [
            ("stem", try Conv2d(3, 4, kernel: 3, padding: 1, bias: true, generator: &generator, on: testBackend)),
            ("bn", try BatchNorm2d(4, fuseReLU: true, on: testBackend)),
            ("down", Pool2d(.init(.max, kernel: 2), on: testBackend)),
            ("features", Sequential([
                try Conv2d(4, 6, kernel: 3, padding: 1, groups: 2, generator: &generator, on: testBackend),
                try BatchNorm2d(6, on: testBackend),
            ])),
            ("pool", Pool2d(.init(.average, kernel: 4), on: testBackend)),
            ("head", try Linear(6, classes, generator: &generator, on: testBackend)),
        ])
        return Model(root: root, architecture: "composed-test", numClasses: classes, inputShape: [3, 8, 8], on: testBackend)
    }

    func randoms(_ count: Int) -> [Float] { (0..<count).map { _ in generator.nextGaussian() } }

    func testStateDictNamesComeFromTheTree() throws {
        let model = try makeModel()
        XCTAssertEqual(model.stateDictLayout().map(\.name), [
            "stem.weight", "stem.bias",
            "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
            "features.0.weight",
            "features.1.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var",
            "features.1.num_batches_tracked",
            "head.weight", "head.bias",
        ])
        XCTAssertEqual(model.stateDictLayout().first { $0.name == "features.0.weight" }?.shape, [6, 2, 3, 3],
                       "grouped weights in PyTorch's O x I/groups x k x k")
        XCTAssertEqual(model.batchNorms.map(\.name), ["bn", "features.1"])
        let copy = try makeModel()
        try copy.load(stateDict: model.stateDict())
        let x = randoms(n * 3 * 64)
        XCTAssertEqual(try copy.forward(images: x, count: n, mode: .evaluation),
                       try model.forward(images: x, count: n, mode: .evaluation))
    }

    /// Central differences of the training-mode loss for parameters, of the eval-mode loss for the input.
    func testGradientsMatchFiniteDifferences() throws {
        let model = try makeModel()
        for bn in model.batchNorms { bn.momentum = 0 }
        let x = randoms(n * 3 * 64)
        let labels: [Int32] = [0, 3, 4]
        func loss(_ mode: Mode, _ images: [Float]) throws -> Double {
            let logits = try model.forward(images: images, count: n, mode: mode)
            return Double(CrossEntropy.evaluate(logits: logits, labels: labels, classes: classes).meanLoss)
        }
        let logits = try model.forward(images: x, count: n, mode: .training)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: classes)
        try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
        for parameter in model.parameters {
            let values = try parameter.plainValues()
            try assertMatchesFiniteDifferences(parameter.name, values: values, analytic: try parameter.plainGradient(),
                                               samples: 3, step: 3e-3, tolerance: 3e-2, generator: &generator) { v in
                try parameter.setPlainValues(v)
                defer { try? parameter.setPlainValues(values) }
                return try loss(.training, x)
            }
        }
        // The input gradient is that of the summed loss: N times the mean's.
        let (_, _, gx) = try model.lossAndInputGradient(images: x, labels: labels)
        try assertMatchesFiniteDifferences("input", values: x, analytic: gx, samples: 8, tolerance: 3e-2,
                                           generator: &generator) { Double(n) * (try loss(.evaluation, $0)) }
    }

    /// Taps return a stage's output, and a gradient fed into a tap reaches the input: for
    /// L = sum(r * features) with no logits gradient, dL/dx against central differences.
    func testTapsReturnFeaturesAndTakeGradients() throws {
        let model = try makeModel()
        let x = randoms(n * 3 * 64)
        let (logits, features) = try model.forward(images: x, count: n, mode: .evaluation, taps: ["features", "pool"])
        XCTAssertEqual(features["features"]?.count, n * 6 * 4 * 4)
        XCTAssertEqual(features["pool"]?.count, n * 6)
        XCTAssertEqual(logits, try model.forward(images: x, count: n, mode: .evaluation), "taps do not change the logits")
        let r = randoms(n * 6 * 4 * 4)
        func objective(_ images: [Float]) throws -> Double {
            let f = try model.forward(images: images, count: n, mode: .evaluation, taps: ["features"]).features["features"]!
            return zip(f, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        _ = try model.forward(images: x, count: n, mode: .evaluation, taps: ["features"])
        let gx = try model.backward(logitsGradient: [Float](repeating: 0, count: n * classes),
                                    tapGradients: ["features": r], weightGradients: false, wantInputGradient: true)!
        try assertMatchesFiniteDifferences("input through the tap", values: x, analytic: gx, samples: 8, tolerance: 3e-2,
                                           generator: &generator, objective)
        XCTAssertThrowsError(try model.forward(images: x, count: n, mode: .evaluation, taps: ["nope"])) {
            XCTAssertTrue("\($0)".contains("no module named \"nope\""), "\($0)")
        }
    }
}
