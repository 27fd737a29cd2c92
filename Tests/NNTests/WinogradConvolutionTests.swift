import XCTest
import Backend
import Support
@testable import NN
@testable import OneDNNBackend

/// The backend's own Winograd convolution (`--conv-algorithm winograd`) against a float64
/// reference convolution and against oneDNN's direct kernels, in all three passes, at sizes that
/// exercise partial tiles (7x7, 9x11), one image, and channel counts that are not multiples of the
/// 8-channel blocks. `ConvolutionAlgorithmTests` compares whole networks.
final class WinogradConvolutionTests: XCTestCase {
    struct Case {
        var batch, inChannels, outChannels, height, width: Int
        var geometry: ConvolutionGeometry {
            .init(batch: batch, inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                  kernel: 3, stride: 1, padding: 1)
        }
    }

    let cases = [Case(batch: 2, inChannels: 16, outChannels: 24, height: 8, width: 8),
                 Case(batch: 1, inChannels: 5, outChannels: 12, height: 7, width: 7),
                 Case(batch: 3, inChannels: 64, outChannels: 64, height: 9, width: 11),
                 Case(batch: 2, inChannels: 32, outChannels: 8, height: 32, width: 32),
                 Case(batch: 61, inChannels: 8, outChannels: 16, height: 30, width: 30)]

    /// The three passes' results (output, input gradient, weight gradient) of one kernel, in plain order.
    func passes(_ kernel: ConvolutionKernel, on backend: OneDNN, x: [Float], w: [Float], dy: [Float]) throws -> [[Float]] {
        let g = kernel.geometry
        let input = try backend.copy(backend.upload(x, shape: g.inputShape), to: kernel.inputLayout)
        let weight = try backend.copy(backend.upload(w, shape: g.weightShape), to: kernel.weightLayout)
        let outputGradient = try backend.copy(backend.upload(dy, shape: g.outputShape), to: kernel.outputLayout)
        let output = try backend.makeTensor(kernel.outputLayout)
        let inputGradient = try backend.makeTensor(kernel.inputGradientLayout())
        let weightGradient = try backend.makeTensor(kernel.weightLayout)
        try kernel.forward(input: input, weight: weight, bias: nil, output: output)
        try kernel.backwardData(outputGradient: outputGradient, weight: weight, inputGradient: inputGradient)
        try kernel.backwardWeights(input: input, outputGradient: outputGradient, weightGradient: weightGradient,
                                   biasGradient: nil)
        return try [output, inputGradient, weightGradient].map(backend.download)
    }

    /// The kernels compared: oneDNN's direct, `winograd` (F(4x4, 3x3)), F(2x2, 3x3), `auto`
    /// (per pass the fastest of those and oneDNN's own Winograd where it has one), and F(4x4, 3x3) with a
    /// scratch budget of 4,096 floats, which splits every case into chunks of images (one each)
    /// and all but the smallest into groups of tile positions, as ResNet-18's 512-channel layers
    /// are at the real budget.
    func kernels(_ g: ConvolutionGeometry) throws -> [(String, ConvolutionKernel, OneDNN)] {
        let direct = try OneDNN(.init(convolutionAlgorithm: .direct)), winograd = try OneDNN(.init(convolutionAlgorithm: .winograd))
        let auto = try OneDNN(.init(convolutionAlgorithm: .auto))
        let forced = try winograd.convolution(g)
        XCTAssertEqual(try forced.implementations(), Array(repeating: "winograd F(4x4,3x3)", count: 3))
        let f2 = try WinogradConvolution(g, tile: 2, scratch: WinogradScratch(), owner: winograd)
        let split = try WinogradConvolution(g, tile: 4, scratch: WinogradScratch(), owner: winograd, budget: 4096)
        XCTAssertEqual(split.chunkCount, g.batch, "\(g)")
        if g.inChannels > 8 { XCTAssertGreaterThan(split.groupCount, 1, "\(g)") }
        return [("direct", try direct.convolution(g), direct), ("F(4x4,3x3)", forced, winograd),
                ("F(2x2,3x3)", f2, winograd), ("auto", try auto.convolution(g), auto),
                ("F(4x4,3x3) in chunks and groups", split, winograd)]
    }

    /// Float64 cross-correlation with zero padding 1: forward, input gradient, weight gradient.
    func reference(_ g: ConvolutionGeometry, x: [Float], w: [Float], dy: [Float]) -> [[Double]] {
        let (n, c, o, h, wd) = (g.batch, g.inChannels, g.outChannels, g.height, g.width)
        var y = [Double](repeating: 0, count: n * o * h * wd)
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        for b in 0..<n { for oc in 0..<o { for ic in 0..<c { for i in 0..<3 { for j in 0..<3 {
            let wi = ((oc * c + ic) * 3 + i) * 3 + j
            for py in 0..<h { for px in 0..<wd {
                let sy = py + i - 1, sx = px + j - 1
                guard sy >= 0, sy < h, sx >= 0, sx < wd else { continue }
                let xi = ((b * c + ic) * h + sy) * wd + sx, yi = ((b * o + oc) * h + py) * wd + px
                y[yi] += Double(x[xi]) * Double(w[wi])
                dx[xi] += Double(dy[yi]) * Double(w[wi])
                dw[wi] += Double(dy[yi]) * Double(x[xi])
            } }
        } } } } }
        return [y, dx, dw]
    }

    func relativeError(_ a: [Float], _ reference: [Double]) -> Double {
        let num = zip(a, reference).map { (Double($0) - $1) * (Double($0) - $1) }.reduce(0, +)
        return (num / reference.map { $0 * $0 }.reduce(0, +)).squareRoot()
    }

    /// Winograd rounds worse than direct (its transforms scale by up to 8 and 1/24): measured
    /// here about 1e-7 for direct and 1e-6 for F(4x4, 3x3) against float64; bound at 1e-5, far
    /// below any effect on training.
    func testAllPassesMatchTheFloat64ReferenceWithin1e5() throws {
        var generator = SeededGenerator(seed: 7)
        for c in cases {
            let g = c.geometry
            let x = (0..<(g.inputShape.reduce(1, *))).map { _ in generator.nextGaussian() }
            let w = (0..<(g.weightShape.reduce(1, *))).map { _ in generator.nextGaussian() }
            let dy = (0..<(g.outputShape.reduce(1, *))).map { _ in generator.nextGaussian() }
            let exact = reference(g, x: x, w: w, dy: dy)
            for (name, kernel, backend) in try kernels(g) {
                let results = try passes(kernel, on: backend, x: x, w: w, dy: dy)
                for (pass, (result, e)) in zip(["forward", "input gradient", "weight gradient"], zip(results, exact)) {
                    XCTAssertLessThan(relativeError(result, e), 1e-5, "\(g) \(pass) \(name)")
                }
            }
        }
    }
}
