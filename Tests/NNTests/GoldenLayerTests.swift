import XCTest
import Backend
import Models
import Support
import Formats
@testable import NN
import TestSupport

/// Each layer's forward and backward against PyTorch (Fixtures/nn/layers.safetensors).
final class GoldenLayerTests: XCTestCase {
    var golden: SafeTensorsBox!
    struct SafeTensorsBox { let file: SafeTensors }

    override func setUpWithError() throws {
        golden = SafeTensorsBox(file: try Fixture.load("nn/layers.safetensors"))
    }

    func checkConvolution(_ prefix: String, stride: Int, padding: Int) throws {
        let g = golden.file
        let w = g.shape(prefix + ".w"), x = g.shape(prefix + ".x")
        var generator = SeededGenerator(seed: 0)
        let conv = try Conv2d(w[1], w[0], kernel: w[2], stride: stride, padding: padding, generator: &generator, on: testBackend)
        try conv.weight.setPlainValues(g.f(prefix + ".w"))
        let y = try conv.forward(tensor(g.f(prefix + ".x"), shape: x), forwardPass())
        assertClose(try y.plainValues(), try g.f(prefix + ".y"), rtol: 1e-5, atol: 1e-5, "\(prefix) y")
        let gy = try tensor(g.f(prefix + ".gy"), shape: y.shape, like: y)
        let gx = try conv.backward(gy, backwardPass(weightGradients: true), needsInputGradient: true)!
        assertClose(try gx.plainValues(), try g.f(prefix + ".gx"), rtol: 1e-5, atol: 1e-5, "\(prefix) gx")
        assertClose(try conv.weight.plainGradient(), try g.f(prefix + ".gw"), rtol: 1e-5, atol: 1e-5, "\(prefix) gw")
        // Input-gradient-only mode leaves the weight gradient untouched.
        try conv.weight.gradient.fill(0)
        let gx2 = try conv.backward(gy, backwardPass(weightGradients: false), needsInputGradient: true)!
        assertClose(try gx2.plainValues(), try g.f(prefix + ".gx"), rtol: 1e-5, atol: 1e-5, "\(prefix) gx only")
        XCTAssertEqual(try conv.weight.plainGradient().map(abs).max(), 0)
    }

    func testConvolutions() throws {
        try checkConvolution("conv_s1", stride: 1, padding: 1)
        try checkConvolution("conv_s2", stride: 2, padding: 1)
        try checkConvolution("conv_1x1", stride: 2, padding: 0)
    }

    func testBatchNormTraining() throws {
        let g = golden.file
        let x = g.shape("bn_train.x")
        let bn = try BatchNorm2d(x[1], fuseReLU: false, on: testBackend)
        try bn.weight.setPlainValues(g.f("bn_train.w"))
        try bn.bias.setPlainValues(g.f("bn_train.b"))
        try bn.runningMean.setPlainValues(g.f("bn_train.running_mean_in"))
        try bn.runningVar.setPlainValues(g.f("bn_train.running_var_in"))
        // A blocked input layout, as activations have between layers.
        let blocked = try testBackend.convolution(.init(batch: x[0], inChannels: x[1], outChannels: x[1], height: x[2],
                                                        width: x[3], kernel: 3, stride: 1, padding: 1)).outputLayout
        let input = try testBackend.upload(g.f("bn_train.x"), shape: x).relayout(to: blocked)
        let y = try bn.forward(input, forwardPass(.training))
        assertClose(try y.plainValues(), try g.f("bn_train.y"), "bn_train y")
        assertClose(try bn.runningMean.plainValues(), try g.f("bn_train.running_mean_out"), "running mean")
        assertClose(try bn.runningVar.plainValues(), try g.f("bn_train.running_var_out"), "running var (unbiased)")
        XCTAssertEqual(bn.numBatchesTracked.value, 1)
        let gx = try bn.backward(tensor(g.f("bn_train.gy"), shape: x, like: y), backwardPass(), inPlace: false)
        assertClose(try gx.plainValues(), try g.f("bn_train.gx"), "bn_train gx")
        assertClose(try bn.weight.plainGradient(), try g.f("bn_train.gw"), "bn_train gw")
        assertClose(try bn.bias.plainGradient(), try g.f("bn_train.gb"), "bn_train gb")
    }

    func testBatchNormEvaluation() throws {
        let g = golden.file
        let x = g.shape("bn_eval.x")
        let bn = try BatchNorm2d(x[1], fuseReLU: false, on: testBackend)
        try bn.weight.setPlainValues(g.f("bn_eval.w"))
        try bn.bias.setPlainValues(g.f("bn_eval.b"))
        try bn.runningMean.setPlainValues(g.f("bn_eval.running_mean"))
        try bn.runningVar.setPlainValues(g.f("bn_eval.running_var"))
        let y = try bn.forward(tensor(g.f("bn_eval.x"), shape: x), forwardPass(.evaluation))
        assertClose(try y.plainValues(), try g.f("bn_eval.y"), "bn_eval y")
        XCTAssertEqual(try bn.runningMean.plainValues(), try g.f("bn_eval.running_mean"), "eval keeps statistics")
        let gx = try bn.backward(tensor(g.f("bn_eval.gy"), shape: x, like: y), backwardPass(), inPlace: false)
        assertClose(try gx.plainValues(), try g.f("bn_eval.gx"), "bn_eval gx")
        assertClose(try bn.weight.plainGradient(), try g.f("bn_eval.gw"), "bn_eval gw")
        assertClose(try bn.bias.plainGradient(), try g.f("bn_eval.gb"), "bn_eval gb")
    }

    func testReLUThroughTheResidualJoin() throws {
        let g = golden.file
        let shape = g.shape("relu.x")
        let x = try tensor(g.f("relu.x"), shape: shape)
        let zero = try testBackend.makeTensor(x.layout)
        let join = try testBackend.addition(x.layout, relu: true)
        let y = try testBackend.makeTensor(x.layout)
        try join.forward(x, zero, into: y)
        XCTAssertEqual(try y.plainValues(), try g.f("relu.y"))
        let gx = try testBackend.makeTensor(x.layout)
        try join.reluBackward(output: y, outputGradient: tensor(g.f("relu.gy"), shape: shape), inputGradient: gx)
        XCTAssertEqual(try gx.plainValues(), try g.f("relu.gx"))
    }

    func testAveragePooling() throws {
        let g = golden.file
        for prefix in ["pool4", "pool8"] {
            let x = try tensor(g.f(prefix + ".x"), shape: g.shape(prefix + ".x"))
            let pool = try testBackend.pooling(.init(.average, kernel: 4), input: x.layout)
            let y = try testBackend.makeTensor(pool.outputLayout)
            try pool.forward(input: x, output: y, workspace: nil)
            assertClose(try y.plainValues(), try g.f(prefix + ".y"), "\(prefix) y")
            let gx = try testBackend.makeTensor(pool.inputLayout)
            try pool.backward(outputGradient: tensor(g.f(prefix + ".gy"), shape: y.shape, like: y), inputGradient: gx,
                              workspace: nil)
            assertClose(try gx.plainValues(), try g.f(prefix + ".gx"), "\(prefix) gx")
        }
    }

    func testLinear() throws {
        let g = golden.file
        let w = g.shape("linear.w"), x = g.shape("linear.x")
        var generator = SeededGenerator(seed: 0)
        let linear = try Linear(w[1], w[0], generator: &generator, on: testBackend)
        try linear.weight.setPlainValues(g.f("linear.w"))
        try linear.bias.setPlainValues(g.f("linear.b"))
        let y = try linear.forward(tensor(g.f("linear.x"), shape: [x[0], x[1], 1, 1]), forwardPass())
        assertClose(try y.plainValues(), try g.f("linear.y"), "linear y")
        let gx = try linear.backward(tensor(g.f("linear.gy"), shape: y.shape), backwardPass(), needsInputGradient: true)!
        assertClose(try gx.plainValues(), try g.f("linear.gx"), "linear gx")
        assertClose(try linear.weight.plainGradient(), try g.f("linear.gw"), "linear gw")
        assertClose(try linear.bias.plainGradient(), try g.f("linear.gb"), "linear gb")
    }

    func testCrossEntropy() throws {
        let g = golden.file
        let labels = try g.tensors["ce.labels"]!.int64s().map { Int32($0) }
        let result = CrossEntropy.evaluate(logits: try g.f("ce.logits"), labels: labels, classes: 10)
        assertClose([result.meanLoss], try g.f("ce.loss"), rtol: 1e-6, "ce loss")
        assertClose(result.logitsGradient, try g.f("ce.glogits"), rtol: 1e-5, atol: 1e-7, "ce glogits")
    }
}
