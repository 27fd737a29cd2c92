import Datasets
import Foundation
import NN

/// Spectral Signatures (Tran et al., NeurIPS 2018): per label, the top right singular vector of the
/// centred penultimate features (the classifier's pooled input); the score is the magnitude of the
/// features' projection on it, and the `removal_factor` x `poison_rate` x (images of
/// the class) highest-scoring images of each class are flagged: 1.5 times the poison count the
/// defender expects, the paper's rule (with rate 0.1 it is BackdoorBench's percentile 85).
public struct SpectralDetector: PoisonDetector {
    /// The share of each class the defender expects to be poisoned (the paper's epsilon).
    public var poisonRate: Double
    public var removalFactor: Double

    public static let defaults: [String: Double] = ["poison_rate": 0.1, "removal_factor": 1.5]

    public init(poisonRate: Double = 0.1, removalFactor: Double = 1.5) {
        (self.poisonRate, self.removalFactor) = (poisonRate, removalFactor)
    }

    public var name: String { DetectionMethod.spectral.rawValue }
    public var settings: [String: Double] { ["poison_rate": poisonRate, "removal_factor": removalFactor] }

    public func detect(_ model: Model, inspected: ImageSet, clean: ImageSet, log: (String) throws -> Void) throws -> Detection {
        guard (0...1).contains(poisonRate) else { throw DefenseError("spectral: poison_rate \(poisonRate) is out of range: expected a number in [0, 1]") }
        guard removalFactor >= 0 else { throw DefenseError("spectral: removal_factor \(removalFactor) is out of range: expected at least 0") }
        let features = try PenultimateFeatures.of(model, on: inspected, log: log)
        var scores = [Double](repeating: 0, count: inspected.count)
        var flagged = [Bool](repeating: false, count: inspected.count)
        var classes: [ClassDetection] = []
        for group in ClassGroups.indices(of: inspected.labels) {
            let classScores = Self.scores(features.selecting(group.indices))
            for (k, i) in group.indices.enumerated() { scores[i] = classScores[k] }
            let removed = min(group.indices.count, Int(removalFactor * poisonRate * Double(group.indices.count)))
            let ranked = classScores.indices.sorted { (classScores[$0], $1) > (classScores[$1], $0) }
            for k in ranked.prefix(removed) { flagged[group.indices[k]] = true }
            classes.append(ClassDetection(label: group.label, images: group.indices.count, flagged: removed))
            try log("spectral: class \(group.label): \(group.indices.count) images, flagged the top \(removed) scores")
        }
        return Detection(scores: scores, flagged: flagged, classes: classes)
    }

    /// |x . v| with v the top right singular vector of the centred rows. As the authors' code
    /// (MadryLab's, BackdoorBench's) the uncentred features are projected: the paper's
    /// |(x - mean) . v| folds the two sides of the mean together, which, where the poisoned images
    /// are near half the class, ranks them with the clean ones (target-class AUROC 0.63 against
    /// 1.0 on the quick BadNets set at rate 0.1; docs/defenses.md).
    public static func scores(_ features: FeatureMatrix) -> [Double] {
        guard let top = features.centred().topRightSingularVectors(1).first else {
            return [Double](repeating: 0, count: features.rows)
        }
        return features.projected(onto: [top]).values.map(abs)
    }
}

/// The penultimate features of the feature-based detectors: the classifier's input as the model's
/// feature tap gives it (`DefenseLayers.pooled`, Fine-Pruning's), evaluation mode, no augmentation.
enum PenultimateFeatures {
    static func of(_ model: Model, on images: ImageSet, log: (String) throws -> Void) throws -> FeatureMatrix {
        let layers = try DefenseLayers.of(model)
        let started = Date()
        let (features, _) = try FinePruning.pooledFeatures(model, on: images, layers: layers)
        let columns = features.count / max(images.count, 1)
        try log(String(format: "features: %@ output of %d images, %d dimensions (%.1f s)", layers.pooled, images.count,
                       columns, Date().timeIntervalSince(started)))
        return FeatureMatrix(floats: features, columns: columns)
    }
}
