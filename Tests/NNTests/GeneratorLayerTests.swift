import XCTest
import Backend
import Support
@testable import NN
import TestSupport

/// The layers the Input-aware generators add: bilinear x2 upsampling (PyTorch's align_corners
/// False) and the scaled tanh squash, forward against their formulas and backward against
/// central finite differences.
final class GeneratorLayerTests: XCTestCase {
    var generator = SeededGenerator(seed: 23)

    func randoms(_ n: Int) -> [Float] { (0..<n).map { _ in generator.nextGaussian() } }
    func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    func testUpsampleForwardMatchesPyTorchOnARow() throws {
        // torch.nn.Upsample(scale_factor=2, mode="bilinear") of [[1, 2, 4]] (1 x 1 x 1 x 3):
        // [1, 1.25, 1.75, 2.5, 3.5, 4] along the row (the edges clamp), repeated down both rows.
        let up = Upsample2d(on: testBackend)
        let y = try up.forward(testBackend.upload([1, 2, 4], shape: [1, 1, 1, 3]), forwardPass()).plainValues()
        XCTAssertEqual(y, [1, 1.25, 1.75, 2.5, 3.5, 4, 1, 1.25, 1.75, 2.5, 3.5, 4])
    }

    func testUpsampleBackwardMatchesFiniteDifferences() throws {
        let shape = [2, 3, 4, 5]
        let up = Upsample2d(on: testBackend)
        let x = randoms(shape.reduce(1, *))
        let y0 = try up.forward(testBackend.upload(x, shape: shape), forwardPass())
        XCTAssertEqual(y0.shape, [2, 3, 8, 10])
        let gy = randoms(y0.elementCount)
        let gx = try up.backward(tensor(gy, shape: y0.shape), backwardPass(), needsInputGradient: true)!.plainValues()
        // Linear in x: differences are exact up to rounding.
        try assertMatchesFiniteDifferences("upsample dx", values: x, analytic: gx, samples: 20, tolerance: 1e-3, generator: &generator) {
            dot(try up.forward(testBackend.upload($0, shape: shape), forwardPass()).plainValues(), gy)
        }
        XCTAssertNil(try up.backward(tensor(gy, shape: y0.shape), backwardPass(), needsInputGradient: false))
    }

    func testUpsampleTakesABlockedInputAndGivesItsLayoutBack() throws {
        // After a convolution the activation is in oneDNN's blocked layout; the gradient must come back in it.
        let conv = try Conv2d(3, 8, kernel: 3, padding: 1, generator: &generator, on: testBackend)
        let x = try conv.forward(testBackend.upload(randoms(2 * 3 * 4 * 4), shape: [2, 3, 4, 4]), forwardPass())
        let up = Upsample2d(on: testBackend)
        let plainInput = try x.plainValues()
        let y = try up.forward(x, forwardPass())
        let reference = try Upsample2d(on: testBackend).forward(testBackend.upload(plainInput, shape: x.shape), forwardPass()).plainValues()
        XCTAssertEqual(try y.plainValues(), reference)
        let gx = try up.backward(tensor(randoms(y.elementCount), shape: y.shape), backwardPass(), needsInputGradient: true)!
        XCTAssertEqual(gx.layout, x.layout)
    }

    func testScaledTanhForwardAndBackward() throws {
        for (scale, shift) in [(Float(1), Float(0)), (20, -10)] {
            let shape = [2, 1, 3, 3]
            let layer = ScaledTanh(scale: scale, shift: shift, on: testBackend)
            // Around 0.5 the threshold (20 x - 10) is off its flat tails.
            let x = randoms(shape.reduce(1, *)).map { scale == 1 ? $0 : 0.5 + $0 / 20 }
            let y0 = try layer.forward(testBackend.upload(x, shape: shape), forwardPass())
            for (i, value) in try y0.plainValues().enumerated() {
                XCTAssertEqual(value, tanh(scale * x[i] + shift) / (2 + 1e-7) + 0.5, accuracy: 1e-6)
            }
            let gy = randoms(y0.elementCount)
            let gx = try layer.backward(tensor(gy, shape: shape), backwardPass(), needsInputGradient: true)!.plainValues()
            try assertMatchesFiniteDifferences("tanh \(scale) dx", values: x, analytic: gx, step: 1e-3, generator: &generator) {
                dot(try layer.forward(testBackend.upload($0, shape: shape), forwardPass()).plainValues(), gy)
            }
        }
    }

    func testParameterAdamMatchesTheHostAdam() throws {
        let p = try Parameter("w", plainShape: [4], values: [0.5, -1, 2, 0], on: testBackend)
        var reference: [Float] = [0.5, -1, 2, 0]
        var adam = Adam(count: 4, learningRate: 0.01)
        let optimiser = ParameterAdam(learningRate: 0.01)
        for step in 0..<3 {
            let g: [Float] = [0.1, -0.2, Float(step), 0.3]
            try p.gradient.setPlainValues(g)
            try optimiser.step([p])
            adam.step(&reference, gradient: g)
        }
        XCTAssertEqual(try p.plainValues(), reference)
        // Adam's first step moves every coordinate with a nonzero gradient by the learning rate.
        var first: [Float] = [0, 0]
        var fresh = Adam(count: 2, learningRate: 0.01)
        fresh.step(&first, gradient: [3, -0.001])
        XCTAssertEqual(first[0], -0.01, accuracy: 1e-6)
        XCTAssertEqual(first[1], 0.01, accuracy: 1e-4)
    }
}
