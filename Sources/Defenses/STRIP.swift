import Datasets
import Foundation
import NN
import Support

/// STRIP (Gao et al., ACSAC 2019) as BackdoorBench's detection_pretrain/strip.py: each inspected
/// image is superimposed with `blends` clean images (`x + alpha * c` on the normalised inputs) and
/// the mean entropy of the model's predictions kept; a trigger that dominates the prediction keeps
/// that entropy low. The threshold is the `frr`-quantile of the same entropy on the defender's
/// clean images (the share of clean images it would reject); images below it are flagged. The
/// score is the negated entropy (higher is more suspicious).
public struct STRIPDetector: PoisonDetector {
    /// BackdoorBench's N.
    public var blends: Int
    /// Weight of the clean image in the superimposition (BackdoorBench's strip_alpha).
    public var alpha: Double
    /// False rejection rate on clean images that sets the threshold (BackdoorBench's defense_fpr).
    public var frr: Double
    public var batchSize: Int
    public var seed: UInt64

    public static let defaults: [String: Double] = ["blends": 100, "alpha": 1, "frr": 0.1]

    public init(blends: Int = 100, alpha: Double = 1, frr: Double = 0.1, batchSize: Int = 128, seed: UInt64 = 0) {
        (self.blends, self.alpha, self.frr, self.batchSize, self.seed) = (blends, alpha, frr, batchSize, seed)
    }

    public var name: String { DetectionMethod.strip.rawValue }
    public var settings: [String: Double] { ["blends": Double(blends), "alpha": alpha, "frr": frr] }

    public func detect(_ model: Model, inspected: ImageSet, clean: ImageSet, log: (String) throws -> Void) throws -> Detection {
        guard clean.count > 0 else { throw DefenseError("strip needs the defender's clean images to blend with; none were given") }
        guard blends > 0 else { throw DefenseError("strip: blends \(blends) is out of range: expected at least 1") }
        guard (0..<1).contains(frr) else { throw DefenseError("strip: frr \(frr) is out of range: expected a number in [0, 1)") }
        try log("strip: entropy under \(blends) blends of \(clean.count) clean images (threshold at FRR \(frr))")
        let cleanEntropy = try entropies(model, of: clean, blendingWith: clean, stream: "clean", log: log)
        let sorted = cleanEntropy.sorted()
        let threshold = sorted[min(Int(frr * Double(sorted.count)), sorted.count - 1)]
        let entropy = try entropies(model, of: inspected, blendingWith: clean, stream: "inspected", log: log)
        let flagged = entropy.map { $0 < threshold }
        try log(String(format: "strip: threshold %.4f (clean entropy %.4f..%.4f); flagged %d of %d", threshold,
                       sorted.first!, sorted.last!, flagged.filter { $0 }.count, inspected.count))
        return Detection(scores: entropy.map { -$0 }, flagged: flagged, threshold: threshold)
    }

    /// Each image's mean entropy over `blends` superimpositions. As the reference, every image of a
    /// batch is blended with the same draw of clean images (a seeded draw per batch).
    public func entropies(_ model: Model, of images: ImageSet, blendingWith clean: ImageSet, stream: String,
                          log: (String) throws -> Void) throws -> [Double] {
        var result: [Double] = []
        result.reserveCapacity(images.count)
        let loader = BatchLoader.evaluation(images, batchSize: batchSize)
        let pixels = Batch.channels * Batch.height * Batch.width
        let started = Date()
        for (number, batch) in loader.epoch(0).enumerated() {
            var generator = SeededGenerator(seed: seed, stream: "strip \(stream) batch \(number)")
            var pool = Array(0..<clean.count)
            Datasets.shuffle(&pool, using: &generator)
            let drawn = (0..<blends).map { pool[$0 % pool.count] }
            let overlays = Augmentation.testBatch(clean, indices: drawn).images
            var sums = [Double](repeating: 0, count: batch.count)
            var blended = batch.images
            for b in 0..<blends {
                let overlay = overlays[(b * pixels)..<((b + 1) * pixels)]
                for i in 0..<batch.count {
                    var j = overlay.startIndex
                    for p in (i * pixels)..<((i + 1) * pixels) {
                        blended[p] = batch.images[p] + Float(alpha) * overlay[j]
                        j += 1
                    }
                }
                let logits = try model.forward(images: blended, count: batch.count, mode: .evaluation)
                for (i, h) in Self.entropy(logits: logits, classes: model.numClasses).enumerated() { sums[i] += h }
            }
            result += sums.map { $0 / Double(blends) }
            if number % 10 == 9 || number == loader.batchesPerEpoch - 1 {
                try log(String(format: "strip: %@ %d/%d images (%.0f s)", stream, result.count, images.count,
                               Date().timeIntervalSince(started)))
            }
        }
        return result
    }

    /// The reference's entropy of a prediction: p = softmax(logits) + 1e-8, -sum p log p.
    public static func entropy(logits: [Float], classes: Int) -> [Double] {
        (0..<(logits.count / classes)).map { i in
            let row = logits[(i * classes)..<((i + 1) * classes)].map(Double.init)
            let top = row.max()!
            let exps = row.map { exp($0 - top) }
            let total = exps.reduce(0, +)
            return -exps.reduce(0) { h, e in let p = e / total + 1e-8; return h + p * log(p) }
        }
    }
}
