import Datasets
import Formats
import Foundation
import NN
import Support

/// A poisoned-sample detector: looks at an (exported) training set through a model and says which
/// images it believes carry a trigger. The truth (`backdoor_list.npy`) is never shown to it; it
/// only scores the decision afterwards (`DetectionMetrics`).
public protocol PoisonDetector {
    /// The `--method` name.
    var name: String { get }
    /// Its settings, for result.json.
    var settings: [String: Double] { get }
    /// `clean` is the defender's clean images (STRIP's blends and threshold; unused by the others).
    func detect(_ model: Model, inspected: ImageSet, clean: ImageSet, log: (String) throws -> Void) throws -> Detection
}

/// What a detector decided: a suspicion score per image (higher is more suspicious; the AUROC is
/// of this score), the flagged images, and per-class or threshold details for result.json.
public struct Detection {
    public var scores: [Double]
    public var flagged: [Bool]
    public var threshold: Double?
    public var classes: [ClassDetection]

    public init(scores: [Double], flagged: [Bool], threshold: Double? = nil, classes: [ClassDetection] = []) {
        precondition(scores.count == flagged.count, "one score and one decision per image")
        (self.scores, self.flagged, self.threshold, self.classes) = (scores, flagged, threshold, classes)
    }

    public var flaggedIndices: [Int] { flagged.indices.filter { flagged[$0] } }
}

/// One class of a per-class detector (spectral signatures, activation clustering).
public struct ClassDetection: Codable, Equatable {
    public var label: Int
    public var images: Int
    public var flagged: Int
    /// Activation clustering: the smaller cluster's share of the class and the silhouette of the 2-means split.
    public var smallerClusterFraction: Double?
    public var silhouette: Double?

    public init(label: Int, images: Int, flagged: Int, smallerClusterFraction: Double? = nil, silhouette: Double? = nil) {
        (self.label, self.images, self.flagged, self.smallerClusterFraction, self.silhouette) =
            (label, images, flagged, smallerClusterFraction, silhouette)
    }

    enum CodingKeys: String, CodingKey {
        case label, images, flagged, silhouette
        case smallerClusterFraction = "smaller_cluster_fraction"
    }
}

/// A detection scored against the truth. TPR is recall; precision and F1 are of the flagged set
/// (BackdoorBench's scripts rescale FN by 9 for a 9:1 test mix; these are the plain counts).
public struct DetectionMetrics: Codable, Equatable {
    public var truePositives: Int
    public var falsePositives: Int
    public var trueNegatives: Int
    public var falseNegatives: Int
    public var tpr: Double
    public var fpr: Double
    public var precision: Double
    public var recall: Double
    public var f1: Double
    /// Of the score; nil when the set holds only poisoned or only clean images.
    public var auroc: Double?

    enum CodingKeys: String, CodingKey {
        case truePositives = "tp", falsePositives = "fp", trueNegatives = "tn", falseNegatives = "fn"
        case tpr, fpr, precision, recall, f1, auroc
    }

    /// Ratios with an empty denominator are 0 (sklearn's zero_division=0).
    public init(flagged: [Bool], truth: [Bool], scores: [Double]) {
        precondition(flagged.count == truth.count && scores.count == truth.count, "one decision, score and truth per image")
        func count(_ f: Bool, _ t: Bool) -> Int { zip(flagged, truth).filter { $0 == (f, t) }.count }
        truePositives = count(true, true)
        falsePositives = count(true, false)
        trueNegatives = count(false, false)
        falseNegatives = count(false, true)
        func ratio(_ a: Int, _ b: Int) -> Double { b == 0 ? 0 : Double(a) / Double(b) }
        tpr = ratio(truePositives, truePositives + falseNegatives)
        fpr = ratio(falsePositives, falsePositives + trueNegatives)
        precision = ratio(truePositives, truePositives + falsePositives)
        recall = tpr
        f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall)
        auroc = Self.auroc(scores: scores, truth: truth)
    }

    /// The area under the ROC curve: P(score of a poisoned image > score of a clean one), ties
    /// counting one half (sklearn's roc_auc_score), from the ranks with tied groups averaged.
    public static func auroc(scores: [Double], truth: [Bool]) -> Double? {
        let positives = truth.filter { $0 }.count, negatives = truth.count - positives
        guard positives > 0, negatives > 0 else { return nil }
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var rankSum = 0.0, start = 0
        while start < order.count {
            var end = start
            while end + 1 < order.count && scores[order[end + 1]] == scores[order[start]] { end += 1 }
            let rank = Double(start + end) / 2 + 1
            for k in start...end where truth[order[k]] { rankSum += rank }
            start = end + 1
        }
        let p = Double(positives)
        return (rankSum - p * (p + 1) / 2) / (p * Double(negatives))
    }
}

/// result.json of `backdoor detect`: one schema for the writer and any reader.
public struct DetectionResult: Codable, Equatable {
    public var method: String
    public var settings: [String: Double]
    public var checkpoint: String
    public var poisonedSet: String
    public var images: Int
    public var poisoned: Int
    public var cleanImages: Int
    public var seconds: Double
    public var threshold: Double?
    public var metrics: DetectionMetrics
    public var classes: [ClassDetection]
    /// Row indices of the flagged images in the poisoned set's order, ascending.
    public var flagged: [Int]

    public static let fileName = "result.json"
    public static let summaryFileName = "summary.txt"
    public static let scoresFileName = "scores.npy"

    enum CodingKeys: String, CodingKey {
        case method, settings, checkpoint, images, poisoned, seconds, threshold, metrics, classes, flagged
        case poisonedSet = "poisoned_set", cleanImages = "clean_images"
    }

    public init(method: String, settings: [String: Double], checkpoint: String, poisonedSet: String, truth: [Bool],
                cleanImages: Int, seconds: Double, detection: Detection) {
        (self.method, self.settings, self.checkpoint, self.poisonedSet) = (method, settings, checkpoint, poisonedSet)
        images = truth.count
        poisoned = truth.filter { $0 }.count
        self.cleanImages = cleanImages
        self.seconds = seconds
        threshold = detection.threshold
        metrics = DetectionMetrics(flagged: detection.flagged, truth: truth, scores: detection.scores)
        classes = detection.classes
        flagged = detection.flaggedIndices
    }

    public static func read(path: String) throws -> DetectionResult {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read the detection result") }
        do { return try JSONDecoder().decode(DetectionResult.self, from: data) } catch {
            throw FileError(path, "is not a detection result.json: \(error)")
        }
    }

    /// The text summary: the counts and the metrics, one per line.
    public var summary: String {
        func percent(_ x: Double) -> String { String(format: "%.2f%%", 100 * x) }
        var lines = [
            "\(method) on \(poisonedSet) with \(checkpoint)",
            "images \(images), poisoned \(poisoned), flagged \(flagged.count)" + (cleanImages > 0 ? ", clean reference images \(cleanImages)" : ""),
            "TP \(metrics.truePositives)  FP \(metrics.falsePositives)  TN \(metrics.trueNegatives)  FN \(metrics.falseNegatives)",
            "TPR (recall) \(percent(metrics.tpr))  FPR \(percent(metrics.fpr))  precision \(percent(metrics.precision))  F1 \(String(format: "%.4f", metrics.f1))",
            "AUROC " + (metrics.auroc.map { String(format: "%.4f", $0) } ?? "n/a (the set is all clean or all poisoned)"),
        ]
        if let threshold { lines.append(String(format: "threshold %.6g", threshold)) }
        lines.append(String(format: "%.1f s", seconds))
        return lines.joined(separator: "\n") + "\n"
    }

    /// Runs `detector` on `inspected` through `model`, scores it against `truth` (which rows are
    /// poisoned) and writes result.json, summary.txt and scores.npy (float64, one suspicion score
    /// per row) into `directory`: `backdoor detect` and the runner's detection stages.
    /// `checkpoint` and `poisonedSet` name the inputs in the result.
    public static func run(_ detector: PoisonDetector, model: Model, inspected: ImageSet, truth: [Bool], clean: ImageSet,
                           checkpoint: String, poisonedSet: String, directory: String,
                           log: (String) throws -> Void) throws -> DetectionResult {
        let start = Date()
        let detection = try detector.detect(model, inspected: inspected, clean: clean, log: log)
        let result = DetectionResult(method: detector.name, settings: detector.settings, checkpoint: checkpoint, poisonedSet: poisonedSet,
                                     truth: truth, cleanImages: clean.count, seconds: Date().timeIntervalSince(start),
                                     detection: detection)
        try NPY.write(HostTensor(doubles: detection.scores, shape: [detection.scores.count]),
                      path: (directory as NSString).appendingPathComponent(scoresFileName))
        try result.write(to: directory)
        return result
    }

    /// result.json and summary.txt in `directory`, each written atomically.
    public func write(to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try encoder.encode(self), as: UTF8.self) + "\n",
                             to: (directory as NSString).appendingPathComponent(Self.fileName))
        try AtomicFile.write(summary, to: (directory as NSString).appendingPathComponent(Self.summaryFileName))
    }
}

/// The detectors by `--method` name, with their settings' defaults (BackdoorBench's).
public enum DetectionMethod: String, CaseIterable {
    case strip, spectral, ac

    public var usesCleanImages: Bool { self == .strip }

    /// STRIP's clean images: this share of the training set, from the defender's end of the split.
    public static let defaultCleanFraction = 0.01

    /// Every setting with its default (the papers' code's), by the config name its `settings` reports.
    public var defaults: [String: Double] {
        switch self {
        case .strip: return ["blends": 100, "alpha": 1, "frr": 0.1]
        case .spectral: return ["poison_rate": 0.1, "removal_factor": 1.5]
        case .ac: return ["dims": 10, "size_threshold": 0.35]
        }
    }

    /// The detector with `overrides` over its defaults, as `detect` flags and config files give
    /// them; an unknown or out-of-range setting is a `DefenseSettingError` naming it.
    public func detector(overrides: [String: Double] = [:], seed: UInt64 = 0) throws -> PoisonDetector {
        for key in overrides.keys.sorted() where defaults[key] == nil {
            throw DefenseSettingError("\(key) is not a setting of \(rawValue); its settings are "
                + defaults.keys.sorted().joined(separator: ", "))
        }
        let settings = defaults.merging(overrides) { $1 }
        func check(_ key: String, _ valid: (Double) -> Bool, _ expected: String) throws -> Double {
            let value = settings[key]!
            guard value.isFinite, valid(value) else { throw DefenseSettingError.outOfRange(rawValue, key, value, expected: expected) }
            return value
        }
        func count(_ key: String) throws -> Int { Int(try check(key, { $0 >= 1 && $0 == $0.rounded() }, "a whole number of at least 1")) }
        switch self {
        case .strip:
            return STRIPDetector(blends: try count("blends"), alpha: try check("alpha", { _ in true }, "a finite number"),
                                 frr: try check("frr", { (0..<1).contains($0) }, "a number in [0, 1)"), seed: seed)
        case .spectral:
            return SpectralDetector(poisonRate: try check("poison_rate", { (0...1).contains($0) }, "a number in [0, 1]"),
                                    removalFactor: try check("removal_factor", { $0 >= 0 }, "a number of at least 0"))
        case .ac:
            return ActivationClusteringDetector(dims: try count("dims"),
                                                sizeThreshold: try check("size_threshold", { (0...1).contains($0) }, "a number in [0, 1]"),
                                                seed: seed)
        }
    }
}

/// Per-class helpers shared by the feature-based detectors.
enum ClassGroups {
    /// Indices of each label's images, ascending, for the labels present.
    static func indices(of labels: [Int]) -> [(label: Int, indices: [Int])] {
        var groups: [Int: [Int]] = [:]
        for (i, label) in labels.enumerated() { groups[label, default: []].append(i) }
        return groups.keys.sorted().map { ($0, groups[$0]!) }
    }
}
