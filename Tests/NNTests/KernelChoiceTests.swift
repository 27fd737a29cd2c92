import XCTest
import Backend
import OneDNNBackend
@testable import NN

/// Every convolution of the CPU-sized and real ResNet-18 widths runs on an optimised oneDNN
/// kernel: the reference kernels are 10-100x slower and turned a 1-minute test into 20.
final class KernelChoiceTests: XCTestCase {
    func testNoConvolutionFallsBackToAReferenceKernel() throws {
        for width in [4, 8, 16, 64] {
            for batch in [1, 64] {
                for algorithm in ConvolutionAlgorithm.allCases {
                    let backend = try OneDNN(.init(convolutionAlgorithm: algorithm))
                    var channels = 3, size = 32, slow: [String] = []
                    func probe(_ inC: Int, _ outC: Int, _ kernel: Int, _ stride: Int, _ padding: Int) throws {
                        let conv = try backend.convolution(.init(batch: batch, inChannels: inC, outChannels: outC, height: size,
                                                             width: size, kernel: kernel, stride: stride, padding: padding))
                        // `auto` lists its candidates until a pass is timed: none may be a reference kernel.
                        for impl in try conv.implementations()
                            where impl.replacingOccurrences(of: "untimed: ", with: "").components(separatedBy: " | ")
                                .contains(where: { $0.hasPrefix("ref") }) {
                            slow.append("\(conv.geometry): \(impl)")
                        }
                    }
                    try probe(channels, width, 3, 1, 1)
                    channels = width
                    for (multiplier, stride) in [(1, 1), (2, 2), (4, 2), (8, 2)] {
                        let planes = width * multiplier
                        try probe(channels, planes, 3, stride, 1)
                        if stride != 1 { try probe(channels, planes, 1, stride, 0) }
                        size /= stride
                        try probe(planes, planes, 3, 1, 1)
                        channels = planes
                    }
                    XCTAssertEqual(slow, [], "width \(width), batch \(batch), \(algorithm)")
                }
            }
        }
    }
}
