import Datasets
import Foundation
import Support
import XCTest
@testable import Attacks
import TestSupport

final class TriggerTests: XCTestCase {
    // MARK: Cell by cell against the reference's definitions

    func testCheckerboard1CornerCells() throws {
        let trigger = try Trigger.checkerboard1Corner()
        XCTAssertEqual(trigger.alpha, 1)
        XCTAssertEqual(trigger.patternChannels, 1)
        XCTAssertEqual(trigger.maskChannels, 1)
        let block: [[Double]] = [[0, 0, 255], [0, 255, 0], [255, 0, 255]]
        for row in 0..<32 {
            for column in 0..<32 {
                let inBlock = (29...31).contains(row) && (29...31).contains(column)
                XCTAssertEqual(trigger.mask[row * 32 + column], inBlock ? 1 : 0, "mask (\(row), \(column))")
                XCTAssertEqual(trigger.pattern[row * 32 + column],
                               inBlock ? block[row - 29][column - 29] : 122, "pattern (\(row), \(column))")
            }
        }
    }

    func testCheckerboard4CornerCells() throws {
        let trigger = try Trigger.checkerboard4Corner()
        // Written out by hand from the reference: rows 0-2 and 29-31; right columns 29-31 hold
        // the block, left columns 0-2 its mirror image.
        let right: [[Double]] = [[0, 0, 255], [0, 255, 0], [255, 0, 255]]
        let left: [[Double]] = [[255, 0, 0], [0, 255, 0], [255, 0, 255]]
        var expectedPattern = [Double](repeating: 0, count: 1024)
        var expectedMask = [Double](repeating: 0, count: 1024)
        for top in [0, 29] {
            for r in 0..<3 {
                for c in 0..<3 {
                    expectedPattern[(top + r) * 32 + 29 + c] = right[r][c]
                    expectedPattern[(top + r) * 32 + c] = left[r][c]
                    expectedMask[(top + r) * 32 + 29 + c] = 1
                    expectedMask[(top + r) * 32 + c] = 1
                }
            }
        }
        XCTAssertEqual(trigger.pattern, expectedPattern)
        XCTAssertEqual(trigger.mask, expectedMask)
        XCTAssertEqual(trigger.mask.reduce(0, +), 36)
        // Spot cells: the top-left corner pixel is the mirrored block's (0, 2) = 255.
        XCTAssertEqual(trigger.pattern[0], 255)
        XCTAssertEqual(trigger.pattern[2], 0)
        XCTAssertEqual(trigger.pattern[31], 255)
        XCTAssertEqual(trigger.pattern[3], 0)
        XCTAssertEqual(trigger.mask[3], 0)
    }

    func testDefaultAlphas() {
        XCTAssertEqual(Trigger.defaultAlpha(for: .checkerboard1Corner), 1)
        XCTAssertEqual(Trigger.defaultAlpha(for: .checkerboard4Corner), 1)
        XCTAssertEqual(Trigger.defaultAlpha(for: .gaussianNoise), 0.2)
    }

    // MARK: The blend formula, by hand

    func testBlendHandComputedCellsTruncate() {
        // 0.8 * 100 + 0.2 * 200 = 120 exactly in float64.
        XCTAssertEqual(Trigger.blend(100, mask: 1, pattern: 200, alpha: 0.2), 120)
        // 0.8 * 10 + 0.2 * 3 = 8.6 -> 8 (truncated, not rounded).
        XCTAssertEqual(Trigger.blend(10, mask: 1, pattern: 3, alpha: 0.2), 8)
        // 0.7 * 1 + 0.3 * 31 is 9.999999999999998 in float64 -> 9, as numpy gives.
        XCTAssertEqual(Trigger.blend(1, mask: 1, pattern: 31, alpha: 0.3), 9)
        // Mask 0 leaves the pixel; alpha 1 pastes the pattern.
        XCTAssertEqual(Trigger.blend(77, mask: 0, pattern: 255, alpha: 1), 77)
        XCTAssertEqual(Trigger.blend(77, mask: 1, pattern: 255, alpha: 1), 255)
        // A soft mask: 0.5 * 40 + 0.5 * (0.5 * 40 + 0.5 * 201) = 80.25 -> 80.
        XCTAssertEqual(Trigger.blend(40, mask: 0.5, pattern: 201, alpha: 0.5), 80)
    }

    func testApplyTouchesOnlyMaskedPixelsAndLeavesLabels() throws {
        let trigger = try Trigger.checkerboard1Corner()
        var set = ImageSet(pixels: [UInt8](repeating: 50, count: 2 * ImageSet.pixelsPerImage), labels: [3, 4])
        trigger.apply(to: &set, at: [1])
        XCTAssertEqual(Array(set.image(0)), [UInt8](repeating: 50, count: ImageSet.pixelsPerImage))
        let image = Array(set.image(1))
        // Pixel (30, 30) is 255 in all channels; (29, 29) is 0; (28, 28) is untouched.
        for channel in 0..<3 {
            XCTAssertEqual(image[(30 * 32 + 30) * 3 + channel], 255)
            XCTAssertEqual(image[(29 * 32 + 29) * 3 + channel], 0)
            XCTAssertEqual(image[(28 * 32 + 28) * 3 + channel], 50)
        }
        XCTAssertEqual(image.filter { $0 != 50 }.count, 9 * 3)
        XCTAssertEqual(set.labels, [3, 4])
    }

    // MARK: Golden images from numpy (scripts/fixtures/make_attack_fixtures.py)

    func testPoisonedImagesMatchNumpyByteForByte() throws {
        let fixture = try TriggerFixture.load()
        XCTAssertEqual(fixture.cases.count, 7)
        for testCase in fixture.cases {
            let kind = try XCTUnwrap(Trigger.Kind(rawValue: testCase.kind))
            let trigger = try Trigger(kind: kind, pattern: testCase.pattern.map(Double.init),
                                      patternChannels: testCase.patternChannels,
                                      mask: testCase.mask, maskChannels: testCase.maskChannels,
                                      alpha: testCase.alpha)
            var set = ImageSet(pixels: fixture.images.flatMap { $0 }, labels: fixture.images.map { _ in 1 })
            trigger.apply(to: &set, at: Array(0..<set.count))
            for (index, expected) in testCase.expected.enumerated() {
                let got = Array(set.image(index))
                let mismatches = zip(got, expected).filter { $0 != $1 }.count
                XCTAssertEqual(mismatches, 0, "\(testCase.name), image \(index): \(mismatches) bytes differ")
            }
        }
    }

    func testBuiltInTriggersMatchFixturePatterns() throws {
        let fixture = try TriggerFixture.load()
        let byName = Dictionary(uniqueKeysWithValues: fixture.cases.map { ($0.name, $0) })
        let badnets = try XCTUnwrap(byName["badnets"])
        XCTAssertEqual(try Trigger.checkerboard1Corner().pattern, badnets.pattern.map(Double.init))
        XCTAssertEqual(try Trigger.checkerboard1Corner().mask, badnets.mask)
        let cleanLabel = try XCTUnwrap(byName["clean_label"])
        XCTAssertEqual(try Trigger.checkerboard4Corner().pattern, cleanLabel.pattern.map(Double.init))
        XCTAssertEqual(try Trigger.checkerboard4Corner().mask, cleanLabel.mask)
    }

    // MARK: Seeded pattern and bad input

    func testSeededNoisePatternRepeatsPerSeedAndCoversTheRange() {
        let a = Trigger.seededNoisePattern(seed: 7)
        XCTAssertEqual(a.count, 32 * 32 * 3)
        XCTAssertEqual(a, Trigger.seededNoisePattern(seed: 7))
        XCTAssertNotEqual(a, Trigger.seededNoisePattern(seed: 8))
        let mean = Double(a.reduce(0) { $0 + Int($1) }) / Double(a.count)
        XCTAssertEqual(mean, 127.5, accuracy: 5)
        XCTAssertLessThan(a.min()!, 5)
        XCTAssertGreaterThan(a.max()!, 250)
    }

    func testBadTriggersAreRejectedWithTheValue() {
        XCTAssertThrowsError(try Trigger.checkerboard1Corner(alpha: 1.5)) { error in
            XCTAssertEqual("\(error)", "trigger alpha 1.5 is not allowed; expected a number in [0, 1]")
        }
        XCTAssertThrowsError(try Trigger.gaussianNoise(pattern: [UInt8](repeating: 0, count: 31 * 32 * 3), channels: 3)) { error in
            XCTAssertTrue("\(error)".contains("2976 values; expected 32 x 32 x 3 = 3072"), "\(error)")
        }
        XCTAssertThrowsError(try Trigger.gaussianNoise(pattern: [UInt8](repeating: 0, count: 32 * 32 * 4), channels: 4)) { error in
            XCTAssertTrue("\(error)".contains("4 channels; expected 1 or 3"), "\(error)")
        }
        XCTAssertThrowsError(try Trigger(kind: .gaussianNoise, pattern: [Double](repeating: 0, count: 1024), patternChannels: 1,
                                         mask: [Double](repeating: 2, count: 1024), maskChannels: 1, alpha: 0.2)) { error in
            XCTAssertTrue("\(error)".contains("mask value 2.0 is outside [0, 1]"), "\(error)")
        }
    }
}

/// Fixtures/attacks/triggers.json, written by scripts/fixtures/make_attack_fixtures.py.
struct TriggerFixture {
    struct Case {
        let name: String, kind: String, alpha: Double
        let pattern: [UInt8], patternChannels: Int
        let mask: [Double], maskChannels: Int
        let expected: [[UInt8]]
    }
    let images: [[UInt8]]
    let cases: [Case]

    static func load() throws -> TriggerFixture {
        let path = SharedData.packageRoot() + "/Fixtures/attacks/triggers.json"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let images = try (json["images_hex"] as? [String] ?? []).map(hexBytes)
        let cases = try (json["cases"] as? [[String: Any]] ?? []).map { entry -> Case in
            let mask: [Double]
            if let hex = entry["mask_hex"] as? String {
                mask = try hexBytes(hex).map(Double.init)
            } else {
                mask = try XCTUnwrap(entry["mask_values"] as? [Double])
            }
            return Case(name: try XCTUnwrap(entry["name"] as? String), kind: try XCTUnwrap(entry["kind"] as? String),
                        alpha: try XCTUnwrap(entry["alpha"] as? Double),
                        pattern: try hexBytes(try XCTUnwrap(entry["pattern_hex"] as? String)),
                        patternChannels: try XCTUnwrap(entry["pattern_channels"] as? Int),
                        mask: mask, maskChannels: try XCTUnwrap(entry["mask_channels"] as? Int),
                        expected: try (entry["expected_hex"] as? [String] ?? []).map(hexBytes))
        }
        return TriggerFixture(images: images, cases: cases)
    }

    static func hexBytes(_ hex: String) throws -> [UInt8] {
        let utf8 = Array(hex.utf8)
        guard utf8.count % 2 == 0 else { throw FileError("triggers.json", "odd-length hex string") }
        func nibble(_ c: UInt8) throws -> UInt8 {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            default: throw FileError("triggers.json", "bad hex digit \(c)")
            }
        }
        return try stride(from: 0, to: utf8.count, by: 2).map { try nibble(utf8[$0]) << 4 | nibble(utf8[$0 + 1]) }
    }
}
