import XCTest
import Attacks
import Datasets
import Models
import NN
@testable import Defenses
import TestSupport

/// The three detectors on a quick BadNets poisoned set (the first images of the reference split's
/// attacker share, 10% of the non-target ones poisoned with the fixture's trigger) through the
/// quick BadNets model (Fixtures/defenses/badnets_w8, ASR 100%), and on the same images left clean,
/// where everything flagged is a false positive. Each prints its metrics (docs/defenses.md).
final class DetectionTests: XCTestCase {
    struct Setup {
        var model: Model
        var poisoned: PoisonedTrainingSet
        var benign: PoisonedTrainingSet
        var clean: ImageSet
    }

    func setup(images: Int, rate: Double = 0.1, cleanImages: Int = 100) throws -> Setup {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let folder = SharedData.packageRoot() + "/Fixtures/defenses/badnets_w8/"
        let (model, _) = try Checkpoint.load(folder + "model.safetensors", on: testBackend)
        let info = try TriggerInfo.read(path: folder + "trigger_info.safetensors")
        let data = try CIFAR10.load(directory: shared + "/cifar10")
        let split = DataSplit(permutation: try Permutation.read(path: shared + "/anp/cifar_shuffle.txt"), valFrac: 0.1)
        let attacker = data.train.subset(Array(split.attacker.prefix(images)))
        let poisoned = try Poisoning.trainingSet(attacker, trigger: info.trigger, target: info.target, rate: rate, seed: 0)
        return Setup(model: model, poisoned: poisoned, benign: PoisonedTrainingSet(clean: attacker),
                     clean: data.train.subset(Array(split.defender.prefix(cleanImages))))
    }

    func run(_ detector: PoisonDetector, on set: PoisonedTrainingSet, _ s: Setup, _ what: String) throws -> (DetectionMetrics, Detection) {
        var lines: [String] = []
        let start = Date()
        let detection = try detector.detect(s.model, inspected: set.images, clean: s.clean) { lines.append($0) }
        let metrics = DetectionMetrics(flagged: detection.flagged, truth: set.isPoisoned, scores: detection.scores)
        print(String(format: "%@ %@: %d images, %d poisoned, flagged %d; TPR %.3f FPR %.3f precision %.3f F1 %.3f AUROC %@ (%.1f s)",
                     detector.name, what, set.count, set.poisonedIndices.count, detection.flaggedIndices.count, metrics.tpr,
                     metrics.fpr, metrics.precision, metrics.f1, metrics.auroc.map { String(format: "%.3f", $0) } ?? "n/a",
                     Date().timeIntervalSince(start)))
        XCTAssertFalse(lines.isEmpty, "progress goes through the log")
        return (metrics, detection)
    }

    func testSpectralSignaturesSeparateThePoisonedImages() throws {
        let s = try setup(images: 3000)
        let detector = SpectralDetector()
        let (poisoned, detection) = try run(detector, on: s.poisoned, s, "badnets")
        XCTAssertGreaterThan(poisoned.auroc!, 0.75)
        // 1.5 x 10% of each class, by the class's own size.
        for c in detection.classes { XCTAssertEqual(c.flagged, Int(0.15 * Double(c.images))) }
        let target = s.poisoned.images.labels.indices.filter { s.poisoned.images.labels[$0] == 0 }
        let targetAUROC = try XCTUnwrap(DetectionMetrics.auroc(scores: target.map { detection.scores[$0] },
                                                               truth: target.map { s.poisoned.isPoisoned[$0] }))
        let flaggedInTarget = target.filter { detection.flagged[$0] }
        let precisionInTarget = Double(flaggedInTarget.filter { s.poisoned.isPoisoned[$0] }.count) / Double(flaggedInTarget.count)
        print(String(format: "  target class: AUROC %.3f, %d flagged, precision %.3f (poisoned share %.3f)", targetAUROC,
                     flaggedInTarget.count, precisionInTarget, Double(s.poisoned.poisonedIndices.count) / Double(target.count)))
        XCTAssertGreaterThan(targetAUROC, 0.95)
        XCTAssertGreaterThan(precisionInTarget, 0.95, "the target class's top scores are its poisoned images")
        XCTAssertGreaterThan(poisoned.tpr, 0.3, "1.5 x 10% of the class is a third of its poisoned images")
        let (benign, _) = try run(detector, on: s.benign, s, "benign")
        XCTAssertEqual(benign.truePositives, 0)
        XCTAssertEqual(benign.fpr, 0.15, accuracy: 0.01, "on a clean set it still removes 15% of each class")
    }

    func printClasses(_ detection: Detection) {
        for c in detection.classes {
            print(String(format: "  class %d: %d images, smaller cluster %.3f, silhouette %.3f, flagged %d", c.label, c.images,
                         c.smallerClusterFraction ?? .nan, c.silhouette ?? .nan, c.flagged))
        }
    }

    /// At rate 0.05 the target class is about 30% poisoned: its poisoned cluster is below the
    /// reference's 35% and is flagged. At rate 0.1 it is about 46% poisoned: the clusters still
    /// separate it (AUROC) but the size rule, as the reference's, flags nothing.
    func testActivationClusteringFlagsTheTargetClassesSmallerCluster() throws {
        let s = try setup(images: 3000, rate: 0.05)
        let detector = ActivationClusteringDetector()
        let (poisoned, detection) = try run(detector, on: s.poisoned, s, "badnets rate 0.05")
        printClasses(detection)
        XCTAssertGreaterThan(poisoned.auroc!, 0.8)
        let target = try XCTUnwrap(detection.classes.first { $0.label == 0 })
        XCTAssertGreaterThan(target.flagged, 0, "the target class's poisoned images form their own cluster")
        XCTAssertGreaterThan(poisoned.f1, 0.5)
        let dense = try setup(images: 3000, rate: 0.1)
        let (denser, denseDetection) = try run(detector, on: dense.poisoned, dense, "badnets rate 0.1")
        printClasses(denseDetection)
        XCTAssertGreaterThan(denser.auroc!, 0.8)
        XCTAssertGreaterThan(try XCTUnwrap(denseDetection.classes.first { $0.label == 0 }).smallerClusterFraction!, 0.35)
        let (benign, _) = try run(detector, on: s.benign, s, "benign")
        XCTAssertEqual(benign.truePositives, 0)
        XCTAssertLessThan(benign.fpr, 0.35, "at most the classes' smaller clusters below 35%")
    }

    func testSTRIPEntropyIsLowUnderTheTrigger() throws {
        let s = try setup(images: 300)
        let detector = STRIPDetector()
        let (poisoned, detection) = try run(detector, on: s.poisoned, s, "badnets")
        XCTAssertGreaterThan(poisoned.auroc!, 0.8)
        XCTAssertGreaterThan(poisoned.tpr, 0.5)
        XCTAssertNotNil(detection.threshold)
        let (benign, _) = try run(detector, on: s.benign, s, "benign")
        XCTAssertEqual(benign.truePositives, 0)
        XCTAssertLessThan(benign.fpr, 0.3, "the threshold was set at 10% FRR on other clean images")
    }
}
