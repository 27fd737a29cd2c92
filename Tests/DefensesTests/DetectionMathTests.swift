import XCTest
import Formats
@testable import Defenses

/// The detectors' arithmetic against numpy (Fixtures/detection/detection_math.safetensors, from
/// scripts/fixtures/make_detection_fixtures.py): STRIP's entropy, the AUROC, the top singular
/// vector and PCA projections, Lloyd's k-means and the silhouette.
final class DetectionMathTests: XCTestCase {
    var fixture: SafeTensors!

    override func setUpWithError() throws { fixture = try Fixture.load("detection/detection_math.safetensors") }

    func d(_ name: String) throws -> [Double] { try XCTUnwrap(fixture.tensors[name], name).doubles() }

    func matrix(_ name: String) throws -> FeatureMatrix {
        let t = try XCTUnwrap(fixture.tensors[name], name)
        return FeatureMatrix(rows: t.shape[0], columns: t.shape[1], values: try t.doubles())
    }

    func assertClose(_ a: [Double], _ b: [Double], _ what: String, tolerance: Double = 1e-9,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let scale = max(b.map(abs).max() ?? 0, 1)
        for (i, (x, y)) in zip(a, b).enumerated() where abs(x - y) > tolerance * scale {
            XCTFail("\(what)[\(i)] = \(x), expected \(y)", file: file, line: line)
            return
        }
    }

    func testEntropyIsTheReferences() throws {
        let logits = try d("entropy.logits").map(Float.init)
        let expected = try d("entropy.value")
        assertClose(STRIPDetector.entropy(logits: logits, classes: 10), expected, "entropy", tolerance: 1e-6)
        XCTAssertLessThan(expected[2], 1e-5, "the saturated row is nearly certain")
    }

    func testAUROCCountsTiesAsHalf() throws {
        let truth = try fixture.tensors["auroc.truth"]!.int64s().map { $0 == 1 }
        let auroc = try XCTUnwrap(DetectionMetrics.auroc(scores: try d("auroc.scores"), truth: truth))
        XCTAssertEqual(auroc, try d("auroc.value")[0], accuracy: 1e-12)
        XCTAssertEqual(DetectionMetrics.auroc(scores: [3, 2, 1], truth: [true, false, false]), 1)
        XCTAssertEqual(DetectionMetrics.auroc(scores: [1, 1, 1, 1], truth: [true, false, true, false]), 0.5)
        XCTAssertNil(DetectionMetrics.auroc(scores: [1, 2], truth: [false, false]), "undefined without a poisoned image")
    }

    func testTopSingularVectorAndSpectralScores() throws {
        let x = try matrix("pca.x")
        let top = try XCTUnwrap(x.centred().topRightSingularVectors(1).first)
        assertClose(top, try d("pca.top1"), "top singular vector", tolerance: 1e-8)
        assertClose(SpectralDetector.scores(x), try d("pca.scores"), "spectral scores", tolerance: 1e-8)
    }

    func testPCAProjection() throws {
        let centred = try matrix("pca.x").centred()
        let axes = centred.topRightSingularVectors(4)
        assertClose(axes.flatMap { $0 }, try d("pca.components"), "principal axes", tolerance: 1e-7)
        assertClose(centred.projected(onto: axes).values, try d("pca.projected"), "projection", tolerance: 1e-7)
    }

    func testLloydFromTheReferenceStartAndTheSilhouette() throws {
        let x = try matrix("kmeans.x"), initial = try matrix("kmeans.init")
        let fit = KMeans.lloyd(x, initial: [Array(initial.row(0)), Array(initial.row(1))])
        XCTAssertEqual(fit.labels, try fixture.tensors["kmeans.labels"]!.int64s().map { Int($0) })
        assertClose(fit.centroids.flatMap { $0 }, try d("kmeans.centroids"), "centroids")
        XCTAssertEqual(fit.inertia, try d("kmeans.inertia")[0], accuracy: 1e-9)
        XCTAssertEqual(ClusterQuality.silhouette(x, labels: fit.labels), try d("silhouette.value")[0], accuracy: 1e-12)
        // k-means++ restarts find the same two blobs (up to the clusters' names).
        let seeded = KMeans.fit(x, k: 2, seed: 3)
        XCTAssertEqual(seeded.inertia, fit.inertia, accuracy: 1e-9)
        XCTAssertEqual(Set(seeded.labels.indices.filter { seeded.labels[$0] == seeded.labels[40] }),
                       Set(fit.labels.indices.filter { fit.labels[$0] == fit.labels[40] }))
    }

    func testMetricsCount() {
        let m = DetectionMetrics(flagged: [true, true, false, false, true], truth: [true, false, true, false, true],
                                 scores: [0.9, 0.8, 0.1, 0.2, 0.7])
        XCTAssertEqual([m.truePositives, m.falsePositives, m.trueNegatives, m.falseNegatives], [2, 1, 1, 1])
        XCTAssertEqual(m.tpr, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(m.fpr, 0.5, accuracy: 1e-12)
        XCTAssertEqual(m.precision, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(m.f1, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(m.auroc!, 3.0 / 6, accuracy: 1e-12, "pairs (0.9, 0.8), (0.9, 0.2), (0.7, 0.2) of six")
        let none = DetectionMetrics(flagged: [false, false], truth: [true, false], scores: [0, 0])
        XCTAssertEqual([none.precision, none.f1], [0, 0], "no flagged image: zero, not NaN")
    }
}
