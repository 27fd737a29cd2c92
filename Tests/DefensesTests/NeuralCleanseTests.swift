import Datasets
import Foundation
import Models
import NN
import Support
import XCTest
@testable import Defenses
import TestSupport

/// Neural Cleanse's pieces: the MAD outlier test against numpy, the mask/pattern gradient against
/// finite differences, the stamping arithmetic, the unlearning set, and the cost schedule's effect.
final class NeuralCleanseTests: XCTestCase {
    /// Fixtures/defenses/nc_anomaly.json from scripts/fixtures/make_nc_fixtures.py (numpy).
    func testAnomalyIndexMatchesNumpy() throws {
        let path = SharedData.packageRoot() + "/Fixtures/defenses/nc_anomaly.json"
        let cases = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [[String: Any]])
        XCTAssertEqual(cases.count, 5)
        for (i, c) in cases.enumerated() {
            let report = AnomalyReport(norms: c["norms"] as! [Double])
            XCTAssertEqual(report.median, c["median"] as! Double, accuracy: 1e-12, "case \(i) median")
            XCTAssertEqual(report.mad, c["mad"] as! Double, accuracy: 1e-12, "case \(i) MAD")
            XCTAssertEqual(report.anomalyIndex, c["anomaly_index"] as! Double, accuracy: 1e-12, "case \(i) index")
            XCTAssertEqual(report.flagged, c["flagged"] as! [Int], "case \(i) flagged")
        }
    }

    func testEqualNormsFlagNothingAndAZeroMADFlagsOnlySmallerOnes() {
        XCTAssertEqual(AnomalyReport(norms: [5, 5, 5, 5]).flagged, [])
        XCTAssertEqual(AnomalyReport(norms: [5, 5, 5, 5]).anomalyIndex, 0)
        let report = AnomalyReport(norms: [5, 5, 1, 5, 9])
        XCTAssertEqual(report.mad, 0)
        XCTAssertEqual(report.flagged, [2], "below the median only; the large one is never flagged")
    }

    /// The loss's gradient in tanh space against central differences: along single mask
    /// coordinates and along the mask's and the pattern's gradients (float32: loose tolerance).
    func testObjectiveGradientMatchesFiniteDifferences() throws {
        let model = try ResNet18.model(width: 4, seed: 5, on: testBackend)
        var generator = SeededGenerator(seed: 21)
        // As in MaskOptimizerTests: large BN biases keep the ReLUs away from their kinks.
        for bn in model.batchNorms {
            try bn.weight.setPlainValues((0..<bn.channels).map { _ in 0.3 + 0.3 * generator.nextFloat() })
            try bn.bias.setPlainValues((0..<bn.channels).map { _ in 4 + 0.5 * generator.nextGaussian() })
        }
        let count = 3, plane = 1024
        let images = (0..<(count * 3 * plane)).map { _ in generator.nextGaussian() }
        var maskTanh = (0..<plane).map { _ in generator.nextGaussian() }
        var patternTanh = (0..<(3 * plane)).map { _ in generator.nextGaussian() }
        let cost: Float = 0.01
        func loss() throws -> Double {
            Double(try NeuralCleanse.objective(model, maskTanh: maskTanh, patternTanh: patternTanh, images: images,
                                               count: count, target: 3, cost: cost).loss)
        }
        let o = try NeuralCleanse.objective(model, maskTanh: maskTanh, patternTanh: patternTanh, images: images, count: count,
                                            target: 3, cost: cost)
        XCTAssertEqual(Double(o.loss), Double(o.crossEntropy) + Double(cost) * Double(o.regularisation), accuracy: 1e-4)
        let expectedNorm = maskTanh.reduce(0.0) { $0 + Double(tanh($1) / (2 + 1e-7) + 0.5) }
        XCTAssertEqual(Double(o.regularisation), expectedNorm, accuracy: 1e-3 * expectedNorm)

        var eps: Float = 2e-2
        func central(_ nudge: (Float) -> Void) throws -> Double {
            nudge(eps)
            let plus = try loss()
            nudge(-2 * eps)
            let minus = try loss()
            nudge(eps)
            return (plus - minus) / Double(2 * eps)
        }
        // The coordinates with the largest gradients, where float32 differences are informative.
        let maskProbes = o.maskGradient.indices.sorted { abs(o.maskGradient[$0]) > abs(o.maskGradient[$1]) }.prefix(4)
        for i in maskProbes {
            let numeric = try central { maskTanh[i] += $0 }
            check(Double(o.maskGradient[i]), numeric, "dL/dmask[\(i)]")
        }
        // Along the mask's and the pattern's gradients separately: d/dt L(theta + t u) = |g| for
        // u = g / |g|. Single pattern coordinates are too small for float32 differences; their
        // sum along u is not.
        for (name, g) in [("mask", o.maskGradient), ("pattern", o.patternGradient)] {
            let length = g.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
            let u = g.map { Float(Double($0) / length) }
            eps = name == "mask" ? 2e-2 : 0.1  // the pattern's loss change is small: a longer step
            let numeric = try central { t in
                if name == "mask" { for i in 0..<plane { maskTanh[i] += t * u[i] } }
                else { for i in 0..<(3 * plane) { patternTanh[i] += t * u[i] } }
            }
            XCTAssertEqual(length, numeric, accuracy: 0.03 * length, "directional derivative along the \(name) gradient")
        }
    }

    private func check(_ analytic: Double, _ numeric: Double, _ what: String) {
        let tolerance = 0.05 * max(abs(numeric), abs(analytic)) + 2e-4
        XCTAssertEqual(analytic, numeric, accuracy: tolerance, what)
    }

    func testStampIsTheReferenceArithmeticTruncatedToBytes() {
        var mask = [Float](repeating: 0, count: 1024), pattern = [Float](repeating: 0, count: 3072)
        mask[0] = 1
        mask[33] = 0.5  // pixel (1, 1)
        (pattern[0], pattern[1024], pattern[2048]) = (1, 0.5, 0)
        (pattern[33], pattern[1024 + 33], pattern[2048 + 33]) = (0.2, 1, 0.999)
        let trigger = ReversedTrigger(target: 0, mask: mask, pattern: pattern, norm: 1.5, attackSuccess: 1, epochsRun: 1)
        let images = ImageSet(pixels: [UInt8](repeating: 101, count: 3072), labels: [4])
        let stamped = trigger.stamp(images)
        XCTAssertEqual(Array(stamped.pixels[0..<3]), [255, 127, 0], "m = 1: the pattern x 255, truncated")
        // 101 * 0.5 + 255 * 0.5 * p: 50.5 + 25.5 = 76, 50.5 + 127.5 = 178, 50.5 + 127.3725 = 177.87 -> 177.
        XCTAssertEqual(Array(stamped.pixels[33 * 3..<33 * 3 + 3]), [76, 178, 177])
        XCTAssertEqual(stamped.pixels[3], 101, "m = 0 leaves the pixel")
        XCTAssertEqual(stamped.labels, [4])
        let (maskImage, triggerImage) = trigger.images
        XCTAssertEqual(maskImage.channels, 1)
        XCTAssertEqual(maskImage.pixels[0], 255)
        XCTAssertEqual(maskImage.pixels[33], 128)
        XCTAssertEqual(Array(triggerImage.pixels[99..<102]), [26, 128, 127], "m p x 255, rounded")
    }

    func testUnlearningSetKeepsEightyPercentAndStampsTheRestPerTrigger() {
        let count = 10
        let clean = ImageSet(pixels: (0..<(count * 3072)).map { UInt8($0 % 200) }, labels: Array(0..<count))
        var mask = [Float](repeating: 0, count: 1024)
        mask[5] = 1
        let triggers = [0, 1].map { t in
            ReversedTrigger(target: t, mask: mask, pattern: [Float](repeating: Float(t), count: 3072), norm: 1,
                            attackSuccess: 1, epochsRun: 1)
        }
        let set = NeuralCleanse.unlearningSet(clean, triggers: triggers, ratio: 0.2)
        XCTAssertEqual(set.labels, Array(0..<8) + [8, 9, 8, 9], "true labels kept")
        XCTAssertEqual(Array(set.pixels[0..<(8 * 3072)]), Array(clean.pixels[0..<(8 * 3072)]))
        XCTAssertEqual(set.image(8)[set.image(8).startIndex + 15], 0, "first trigger's pattern 0 at pixel 5")
        XCTAssertEqual(set.image(10)[set.image(10).startIndex + 15], 255, "second trigger's pattern 1")
        XCTAssertEqual(set.image(10)[set.image(10).startIndex + 16 + 3], clean.image(8)[clean.image(8).startIndex + 19])
    }

    func testInvalidSettingsNameTheSetting() {
        var config = NCConfig()
        config.unlearningRatio = 1
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("nc: unlearning_ratio 1 is out of range"), "\($0)") }
        config = NCConfig()
        config.attackSuccessThreshold = 0
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("atk_succ_threshold 0 "), "\($0)") }
        config = NCConfig()
        config.costMultiplier = 1
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("cost_multiplier 1 "), "\($0)") }
    }
}
