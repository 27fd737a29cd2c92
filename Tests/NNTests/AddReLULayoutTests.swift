import XCTest
import Backend
@testable import OneDNNBackend

/// Issue 19: oneDNN 2.6's AVX-512 binary kernel with a ReLU post-op wrote (H W - 1) x 32 bytes
/// past its destination on nChw8c tensors with an odd number of 8-channel blocks: the layout our
/// Winograd passes on, at 8 channels (a width-8 ResNet's first stage). The addition must stay
/// inside its buffers and add correctly in every layout, and its ReLU backward must accept a
/// gradient in another layout (our nChw8c output, oneDNN's nChw16c gradient).
final class AddReLULayoutTests: XCTestCase {
    func testAddReLUStaysInsideItsBuffers() throws {
        let backend = try OneDNN()
        for (channels, side) in [(8, 4), (8, 32), (24, 8), (16, 8), (3, 5)] {
            for block in [8, 16, 1] {
                let shape = [2, channels, side, side]
                let desc = try MemoryDesc.channelBlocked(shape, block: block)
                let kernel = try backend.addition(desc.layout, relu: true)
                let count = shape.reduce(1, *)
                let a = (0..<count).map { Float($0 % 7) - 3 }, b = (0..<count).map { Float($0 % 5) - 2 }
                let x = try backend.copy(backend.upload(a, shape: shape), to: desc.layout)
                let y = try backend.copy(backend.upload(b, shape: shape), to: desc.layout)
                // The output inside a larger buffer whose tail must stay as it was.
                let floats = desc.byteCount / 4, slack = 64 * 1024
                let storage = UnsafeMutablePointer<Float>.allocate(capacity: floats + slack)
                defer { storage.deallocate() }
                storage.initialize(repeating: 0, count: floats)
                (storage + floats).initialize(repeating: 1234.5, count: slack)
                let out = try DNNLTensor(desc: desc, viewing: storage, base: backend, owner: backend)
                try kernel.forward(x, y, into: out)
                let overwritten = (0..<slack).filter { storage[floats + $0] != 1234.5 }.count
                XCTAssertEqual(overwritten, 0, "\(shape) block \(block): floats written past the output")
                XCTAssertEqual(try backend.download(out), zip(a, b).map { max($0 + $1, 0) }, "\(shape) block \(block)")
            }
        }
    }

    func testReLUBackwardTakesAGradientInAnotherLayout() throws {
        let backend = try OneDNN()
        let shape = [2, 16, 4, 4], count = 2 * 16 * 4 * 4
        let eight = try MemoryDesc.channelBlocked(shape, block: 8), sixteen = try MemoryDesc.channelBlocked(shape, block: 16)
        let kernel = try backend.addition(eight.layout, relu: true)
        let values = (0..<count).map { Float($0 % 3) - 1 }, gradient = (0..<count).map { Float($0) }
        let y = try backend.copy(backend.upload(values.map { max($0, 0) }, shape: shape), to: eight.layout)
        let g = try backend.copy(backend.upload(gradient, shape: shape), to: sixteen.layout)
        try kernel.reluBackward(output: y, outputGradient: g, inputGradient: g)
        XCTAssertEqual(try backend.download(g), zip(values, gradient).map { $0 > 0 ? $1 : 0 })
    }
}
