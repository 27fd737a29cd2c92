import Datasets
import Foundation
import NN

/// Activation Clustering (Chen et al., 2018) as BackdoorBench's detection_pretrain/ac.py: per
/// label, the penultimate features are centred, reduced to `dims` dimensions and split by 2-means;
/// the smaller cluster is flagged when it holds less than `size_threshold` of the class (the
/// reference's relative-size rule, 0.35). The silhouette of each split is reported. Reduction is
/// PCA (the reference's commented-out alternative), not the reference's FastICA: PCA is
/// deterministic and needs no iterative whitening. The score is how much nearer an image lies to
/// the smaller cluster's centre than to the larger one's (d_large - d_small, in the reduced space).
public struct ActivationClusteringDetector: PoisonDetector {
    public var dims: Int
    public var sizeThreshold: Double
    public var restarts: Int
    public var seed: UInt64

    public static let defaults: [String: Double] = ["dims": 10, "size_threshold": 0.35]

    public init(dims: Int = 10, sizeThreshold: Double = 0.35, restarts: Int = 10, seed: UInt64 = 0) {
        (self.dims, self.sizeThreshold, self.restarts, self.seed) = (dims, sizeThreshold, restarts, seed)
    }

    public var name: String { DetectionMethod.ac.rawValue }
    public var settings: [String: Double] { ["dims": Double(dims), "size_threshold": sizeThreshold] }

    public func detect(_ model: Model, inspected: ImageSet, clean: ImageSet, log: (String) throws -> Void) throws -> Detection {
        guard dims >= 1 else { throw DefenseError("ac: dims \(dims) is out of range: expected at least 1") }
        guard (0...1).contains(sizeThreshold) else { throw DefenseError("ac: size_threshold \(sizeThreshold) is out of range: expected a number in [0, 1]") }
        let features = try PenultimateFeatures.of(model, on: inspected, log: log)
        var scores = [Double](repeating: 0, count: inspected.count)
        var flagged = [Bool](repeating: false, count: inspected.count)
        var classes: [ClassDetection] = []
        for group in ClassGroups.indices(of: inspected.labels) {
            // As the reference: nothing to cluster in a class of one image.
            guard group.indices.count > 1 else {
                classes.append(ClassDetection(label: group.label, images: group.indices.count, flagged: 0))
                continue
            }
            let split = clusters(features.selecting(group.indices), seed: seed &+ UInt64(group.label))
            for (k, i) in group.indices.enumerated() { scores[i] = split.scores[k] }
            let fraction = Double(split.smaller.count) / Double(group.indices.count)
            let suspicious = fraction < sizeThreshold
            if suspicious { for k in split.smaller { flagged[group.indices[k]] = true } }
            classes.append(ClassDetection(label: group.label, images: group.indices.count, flagged: suspicious ? split.smaller.count : 0,
                                          smallerClusterFraction: fraction, silhouette: split.silhouette))
            try log(String(format: "ac: class %d: %d images, smaller cluster %.1f%%, silhouette %.3f%@", group.label,
                           group.indices.count, 100 * fraction, split.silhouette, suspicious ? ", flagged" : ""))
        }
        return Detection(scores: scores, flagged: flagged, classes: classes)
    }

    /// The 2-means split of one class in its top `dims` principal components: the smaller
    /// cluster's rows, the silhouette and each row's d_large - d_small.
    public func clusters(_ features: FeatureMatrix, seed: UInt64) -> (smaller: [Int], silhouette: Double, scores: [Double]) {
        let centred = features.centred()
        let reduced = centred.projected(onto: centred.topRightSingularVectors(dims))
        let fit = KMeans.fit(reduced, k: 2, restarts: restarts, seed: seed)
        let sizes = [0, 1].map { c in fit.labels.filter { $0 == c }.count }
        // The reference: cluster 1 is clean when it holds at least half.
        let small = sizes[1] >= sizes[0] ? 0 : 1
        let scores = (0..<reduced.rows).map { i in
            KMeans.squaredDistance(reduced.row(i), fit.centroids[1 - small]).squareRoot()
                - KMeans.squaredDistance(reduced.row(i), fit.centroids[small]).squareRoot()
        }
        return (fit.labels.indices.filter { fit.labels[$0] == small },
                ClusterQuality.silhouette(reduced, labels: fit.labels), scores)
    }
}
