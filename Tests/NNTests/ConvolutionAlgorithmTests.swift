import XCTest
import Backend
import Models
import OneDNNBackend
import Support
@testable import NN

/// `auto` (oneDNN's Winograd where it has it, ours where faster) computes the same network as
/// `direct`, up to Winograd's rounding, in every pass the tools use: evaluation, the input gradient of the
/// attacks, and training-mode passes with parameter gradients.
final class ConvolutionAlgorithmTests: XCTestCase {
    /// Batch and width at which oneDNN 2.6 picks Winograd on AVX-512 CPUs.
    let batch = 64, width = 16

    /// `auto` is oneDNN's choice: its Winograd on AVX-512 CPUs, direct on AVX2 CPUs (ours is opt-in).
    func testAutoPicksWinogradByTheCPU() throws {
        let g = ConvolutionGeometry(batch: batch, inChannels: width, outChannels: width, height: 32, width: 32,
                                    kernel: 3, stride: 1, padding: 1)
        let backend = try OneDNN(.init(convolutionAlgorithm: .auto))
        let auto = try backend.convolution(g)
        let direct = try OneDNN(.init(convolutionAlgorithm: .direct)).convolution(g).implementations()[0]
        XCTAssertFalse(direct.contains("wino"), direct)
        try auto.forward(input: backend.makeTensor(auto.inputLayout), weight: backend.makeTensor(auto.weightLayout),
                         bias: nil, output: backend.makeTensor(auto.outputLayout))
        let chosen = try auto.implementations()[0]
        if OneDNN.hasAVX512 {
            XCTAssertTrue(chosen.contains("wino"), "auto on an AVX-512 CPU chose \(chosen)")
        } else {
            XCTAssertEqual(chosen, direct)
        }
    }

    /// A random-init network with batch statistics is ill-conditioned: a 1e-6 relative change of
    /// the images already moves its parameter gradients by about 0.3%. So auto's deviation from
    /// direct is judged against the deviation that rounding the images at 3e-5 causes: Winograd
    /// F(4x4, 3x3) rounds about ten times as much as direct per layer (1e-6 against 1e-7 of a
    /// float64 reference, WinogradConvolutionTests), which at 1e-5 came within 1.4x of the bound.
    func testAutoDeviatesFromDirectLessThanRoundingTheImagesAt3e5() throws {
        var generator = SeededGenerator(seed: 11)
        let images = (0..<(batch * 3072)).map { _ in generator.nextGaussian() }
        let rounded = images.map { $0 * (1 + 3e-5 * generator.nextGaussian()) }
        let labels = (0..<batch).map { _ in Int32(generator.next() % 10) }
        func passes(_ algorithm: ConvolutionAlgorithm, _ images: [Float]) throws -> [(String, [Float])] {
            let model = try ResNet18.model(width: width, seed: 3, on: OneDNN(.init(convolutionAlgorithm: algorithm)))
            let (_, evalLogits, inputGradient) = try model.lossAndInputGradient(images: images, labels: labels)
            let trainLogits = try model.forward(images: images, count: batch, mode: .training)
            let ce = CrossEntropy.evaluate(logits: trainLogits, labels: labels, classes: 10)
            try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
            return try [("evaluation logits", evalLogits), ("input gradient", inputGradient),
                        ("training logits", trainLogits)]
                + model.parameters.map { ("gradient of \($0.name)", try $0.plainGradient()) }
        }
        func relativeError(_ a: [Float], _ b: [Float]) -> Double {
            let num = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +)
            return (num / b.map { Double($0) * Double($0) }.reduce(0, +)).squareRoot()
        }
        let direct = try passes(.direct, images), auto = try passes(.auto, images)
        let directRounded = try passes(.direct, rounded)
        for ((what, d), ((_, a), (_, r))) in zip(direct, zip(auto, directRounded)) {
            let allowed = relativeError(r, d)
            XCTAssertGreaterThan(allowed, 0, what)
            XCTAssertLessThanOrEqual(relativeError(a, d), allowed, what)
        }
    }
}
