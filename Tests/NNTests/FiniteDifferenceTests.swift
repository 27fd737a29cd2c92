import XCTest
import Backend
import Models
import Support
@testable import NN
import TestSupport

/// Backward passes against central finite differences of loss = sum(y * gy), on small shapes,
/// with and without weight gradients (the input-gradient-only mode of attacks and defenses).
final class FiniteDifferenceTests: XCTestCase {
    var generator = SeededGenerator(seed: 11)

    func randoms(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in generator.nextGaussian() * scale } }

    func check(_ what: String, values: [Float], analytic: [Float], samples: Int = 12, step: Float = 1e-2,
               tolerance: Float = 2e-2, _ f: ([Float]) throws -> Double) throws {
        try assertMatchesFiniteDifferences(what, values: values, analytic: analytic, samples: samples, step: step,
                                           tolerance: tolerance, generator: &generator, f)
    }

    func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    func testConvolutionBothModes() throws {
        for (stride, kernel, padding) in [(1, 3, 1), (2, 3, 1), (2, 1, 0)] {
            let shape = [2, 5, 6, 6]
            let conv = try Conv2d(5, 4, kernel: kernel, stride: stride, padding: padding, generator: &generator, on: testBackend)
            let x = randoms(shape.reduce(1, *))
            let w = try conv.weight.plainValues()
            let y0 = try conv.forward(testBackend.upload(x, shape: shape), forwardPass())
            let gy = randoms(y0.elementCount)
            func loss(x: [Float], w: [Float]) throws -> Double {
                try conv.weight.setPlainValues(w)
                return dot(try conv.forward(testBackend.upload(x, shape: shape), forwardPass()).plainValues(), gy)
            }
            _ = try loss(x: x, w: w)
            let gyTensor = try tensor(gy, shape: y0.shape, like: y0)
            let gx = try conv.backward(gyTensor, backwardPass(weightGradients: true), needsInputGradient: true)!
                .plainValues()
            let gw = try conv.weight.plainGradient()
            try check("conv s\(stride) k\(kernel) dx", values: x, analytic: gx) { try loss(x: $0, w: w) }
            try check("conv s\(stride) k\(kernel) dw", values: w, analytic: gw) { try loss(x: x, w: $0) }
            _ = try loss(x: x, w: w)
            let gxOnly = try conv.backward(gyTensor, backwardPass(weightGradients: false), needsInputGradient: true)!
            XCTAssertEqual(try gxOnly.plainValues(), gx, "input-gradient-only mode gives the same dx")
        }
    }

    func testBatchNormTrainingAndEvaluation() throws {
        let shape = [4, 3, 4, 4]
        for mode in [Mode.training, .evaluation] {
            for fuse in [false, true] {
                let bn = try BatchNorm2d(3, fuseReLU: fuse, on: testBackend)
                try bn.weight.setPlainValues([1.2, 0.7, -0.9])
                try bn.bias.setPlainValues([0.1, -0.2, 0.3])
                try bn.runningMean.setPlainValues([0.2, -0.1, 0.05])
                try bn.runningVar.setPlainValues([1.3, 0.8, 1.1])
                bn.momentum = 0  // keep running statistics fixed across the repeated forwards
                let x = randoms(shape.reduce(1, *))
                let y0 = try bn.forward(testBackend.upload(x, shape: shape), forwardPass(mode))
                let gy = randoms(y0.elementCount)
                let w = try bn.weight.plainValues(), b = try bn.bias.plainValues()
                func loss(_ x: [Float], _ w: [Float], _ b: [Float]) throws -> Double {
                    try bn.weight.setPlainValues(w)
                    try bn.bias.setPlainValues(b)
                    return dot(try bn.forward(testBackend.upload(x, shape: shape), forwardPass(mode)).plainValues(), gy)
                }
                _ = try loss(x, w, b)
                let gx = try bn.backward(tensor(gy, shape: shape, like: y0), backwardPass(), inPlace: false).plainValues()
                let gw = try bn.weight.plainGradient(), gb = try bn.bias.plainGradient()
                let what = "bn \(mode)\(fuse ? "+relu" : "")"
                // Larger steps would cross ReLU kinks; smaller ones drown in float32 rounding.
                try check(what + " dx", values: x, analytic: gx, step: 3e-3, tolerance: 3e-2) { try loss($0, w, b) }
                try check(what + " dw", values: w, analytic: gw, samples: 3, step: 3e-3) { try loss(x, $0, b) }
                try check(what + " db", values: b, analytic: gb, samples: 3, step: 3e-3) { try loss(x, w, $0) }
            }
        }
    }

    func testLinearAndPooling() throws {
        let linear = try Linear(6, 4, generator: &generator, on: testBackend)
        let x = randoms(3 * 6)
        let shape = [3, 6, 1, 1]
        let gy = randoms(3 * 4)
        let w = try linear.weight.plainValues(), b = try linear.bias.plainValues()
        func loss(_ x: [Float], _ w: [Float], _ b: [Float]) throws -> Double {
            try linear.weight.setPlainValues(w)
            try linear.bias.setPlainValues(b)
            return dot(try linear.forward(testBackend.upload(x, shape: shape), forwardPass()).plainValues(), gy)
        }
        _ = try loss(x, w, b)
        let gx = try linear.backward(testBackend.upload(gy, shape: [3, 4]), backwardPass(), needsInputGradient: true)!
            .plainValues()
        try check("linear dx", values: x, analytic: gx) { try loss($0, w, b) }
        try check("linear dw", values: w, analytic: try linear.weight.plainGradient()) { try loss(x, $0, b) }
        try check("linear db", values: b, analytic: try linear.bias.plainGradient(), samples: 4) { try loss(x, w, $0) }

        let poolShape = [2, 3, 8, 8]
        let px = randoms(poolShape.reduce(1, *))
        let src = try testBackend.upload(px, shape: poolShape)
        let pool = try testBackend.pooling(.init(.average, kernel: 4), input: src.layout)
        let pgy = randoms(2 * 3 * 2 * 2)
        func poolLoss(_ x: [Float]) throws -> Double {
            let y = try testBackend.makeTensor(pool.outputLayout)
            try pool.forward(input: testBackend.upload(x, shape: poolShape), output: y, workspace: nil)
            return dot(try y.plainValues(), pgy)
        }
        let pgx = try testBackend.makeTensor(pool.inputLayout)
        try pool.backward(outputGradient: tensor(pgy, shape: [2, 3, 2, 2]), inputGradient: pgx, workspace: nil)
        try check("pool dx", values: px, analytic: try pgx.plainValues()) { try poolLoss($0) }
    }

    func testCrossEntropyGradient() throws {
        let logits = randoms(4 * 10, scale: 2)
        let labels: [Int32] = [3, 0, 9, 5]
        let analytic = CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10).logitsGradient
        try check("cross-entropy", values: logits, analytic: analytic, step: 1e-2) {
            Double(CrossEntropy.evaluate(logits: $0, labels: labels, classes: 10).meanLoss)
        }
    }

    /// The whole network: parameter gradients in training mode, and the eval-mode input
    /// gradient that PGD uses (weights untouched, no weight gradients).
    func testResNetInputAndParameterGradients() throws {
        let model = try ResNet18.model(width: 4, seed: 3, on: testBackend)
        let n = 2
        let x = randoms(n * 3 * 32 * 32)
        let labels: [Int32] = [1, 7]
        _ = try model.forward(images: x, count: n, mode: .training)  // non-trivial running statistics
        for bn in model.batchNorms { bn.momentum = 0 }
        let (losses, _, gx) = try model.lossAndInputGradient(images: x, labels: labels)
        func evalLoss(_ x: [Float]) throws -> Double {
            let logits = try model.forward(images: x, count: n, mode: .evaluation)
            return Double(CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10).losses.reduce(0, +))
        }
        XCTAssertEqual(Double(losses.reduce(0, +)), try evalLoss(x), accuracy: 1e-4)
        try check("resnet eval dx", values: x, analytic: gx, samples: 8, step: 1e-2, tolerance: 5e-2) { try evalLoss($0) }

        let logits = try model.forward(images: x, count: n, mode: .training)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10)
        try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
        for parameter in [model.parameters[0], model.parameters[4], model.parameters.last!] {
            let values = try parameter.plainValues()
            let analytic = try parameter.plainGradient()
            try check("resnet d\(parameter.name)", values: values, analytic: analytic, samples: 4, step: 1e-3,
                      tolerance: 5e-2) { v in
                try parameter.setPlainValues(v)
                defer { try? parameter.setPlainValues(values) }
                let l = try model.forward(images: x, count: n, mode: .training)
                return Double(CrossEntropy.evaluate(logits: l, labels: labels, classes: 10).meanLoss)
            }
        }
    }
}
