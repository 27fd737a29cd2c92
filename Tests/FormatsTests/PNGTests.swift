import Foundation
import Support
import XCTest
@testable import Formats
import TestSupport

final class PNGTests: XCTestCase {
    private func path(_ name: String) -> String { FixturePaths.formats("png/\(name)") }
    private let width = 5, height = 4

    private func expectedRGB() -> [UInt8] {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 { pixels.append(UInt8((x * 20 + y * 7 + c * 85) % 256)) }
            }
        }
        return pixels
    }

    func testDecodesGrayRGBAndPalette() throws {
        let gray = try PNG.read(path: path("gray.png"))
        XCTAssertEqual(gray.channels, 1)
        XCTAssertEqual([gray.width, gray.height], [width, height])
        let expectedGray: [UInt8] = (0..<(width * height)).map { UInt8(($0 % width) * 16 + ($0 / width) * 3) }
        XCTAssertEqual(gray.pixels, expectedGray)
        XCTAssertEqual(gray.rgb().pixels, gray.pixels.flatMap { [$0, $0, $0] })

        let rgb = try PNG.read(path: path("rgb.png"))
        XCTAssertEqual(rgb, PNGImage(width: width, height: height, channels: 3, pixels: expectedRGB()))

        let palette = try PNG.read(path: path("palette.png"))
        var expected: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                let index = (x + y) % 4
                expected += [UInt8(index * 60), UInt8(255 - index * 60), UInt8(index * 30)]
            }
        }
        XCTAssertEqual(palette.channels, 3)
        XCTAssertEqual(palette.pixels, expected)
    }

    func testAlphaIsRejectedOrDroppedWithoutCompositing() throws {
        assertThrows(try PNG.read(path: path("rgba.png")), mentioning: ["rgba.png", "alpha channel"])
        let dropped = try PNG.read(path: path("rgba.png"), alpha: .drop)
        XCTAssertEqual(dropped, PNGImage(width: width, height: height, channels: 3, pixels: expectedRGB()))
    }

    func testRoundTripThroughFile() throws {
        let directory = try FixturePaths.temporaryDirectory(self)
        var generator = SplitMix(seed: 7)
        for channels in [1, 3] {
            let image = PNGImage(width: 32, height: 17, channels: channels,
                                 pixels: (0..<(32 * 17 * channels)).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
            let file = directory + "/image\(channels).png"
            try PNG.write(image, path: file)
            XCTAssertEqual(try PNG.read(path: file), image)
        }
    }

    func testSharedAnpNoiseTriggerMatchesIndependentDecoder() throws {
        guard let data = try SharedData.directory() else { throw XCTSkip("shared data not available") }
        let image = try PNG.read(path: data + "/anp/cifar_gaussian_noise.png")
        XCTAssertEqual([image.height, image.width, image.channels], [32, 32, 3])
        // Values from the pure-Python decoder in scripts/fixtures/make_png_fixtures.py.
        XCTAssertEqual(Array(image.pixels.prefix(6)), [52, 209, 225, 35, 123, 153])
        XCTAssertEqual(image.pixels.reduce(0) { $0 + Int($1) }, 382983)
        let weighted = image.pixels.enumerated().reduce(UInt64(0)) { ($0 + UInt64($1.offset + 1) * UInt64($1.element)) % (1 << 32) }
        XCTAssertEqual(weighted, 585352505)
    }

    func testBrokenFilesGiveClearErrors() {
        assertThrows(try PNG.read(path: FixturePaths.formats("npy/labels_i8.npy")), mentioning: ["labels_i8.npy", "not a PNG file"])
        assertThrows(try PNG.read(path: path("rgb16.png")), mentioning: ["rgb16.png", "16-bit"])
        assertThrows(try PNG.read(path: path("truncated.png")), mentioning: ["truncated.png", "invalid PNG"])
        assertThrows(try PNG.read(path: path("corrupt.png")), mentioning: ["corrupt.png", "invalid PNG"])
        assertThrows(try PNG.read(path: "/nonexistent/trigger.png"), mentioning: ["/nonexistent/trigger.png"])
    }
}

/// Small deterministic generator for test inputs.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
