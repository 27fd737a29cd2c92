import Foundation

/// Softmax cross-entropy on plain N x C logits, as PyTorch's `CrossEntropyLoss` (mean over
/// the batch). Also returns per-example losses (PGD keeps the attempt with the largest one).
public enum CrossEntropy {
    public struct Result {
        public var meanLoss: Float
        public var losses: [Float]
        /// d(mean loss)/d(logits).
        public var logitsGradient: [Float]
        public var correct: Int
    }

    /// With `smoothing` s, the target puts 1 - s on the label and s / (C - 1) on every other class
    /// and the loss is KL(target || softmax) (BackdoorBench's `smooth_crossentropy`, FT-SAM's loss);
    /// at s = 0 that is the cross-entropy.
    public static func evaluate(logits: [Float], labels: [Int32], classes: Int, smoothing: Float = 0) -> Result {
        let n = labels.count
        var losses = [Float](repeating: 0, count: n)
        var gradient = [Float](repeating: 0, count: n * classes)
        var correct = 0
        var total = 0.0
        for i in 0..<n {
            let row = i * classes
            var maxValue = logits[row], argmax = 0
            for c in 1..<classes where logits[row + c] > maxValue {
                maxValue = logits[row + c]
                argmax = c
            }
            var sum = 0.0
            for c in 0..<classes { sum += exp(Double(logits[row + c] - maxValue)) }
            let label = Int(labels[i])
            let logSum = log(sum) + Double(maxValue)
            var loss = logSum - Double(logits[row + label])
            if smoothing != 0 {
                // sum_c t_c (log t_c - log p_c), with log p_c = z_c - logSum.
                let on = 1 - Double(smoothing), off = Double(smoothing) / Double(classes - 1)
                loss = on * (on > 0 ? log(on) : 0) - on * (Double(logits[row + label]) - logSum)
                for c in 0..<classes where c != label {
                    loss += off * (off > 0 ? log(off) : 0) - off * (Double(logits[row + c]) - logSum)
                }
            }
            losses[i] = Float(loss)
            total += loss
            if argmax == label { correct += 1 }
            for c in 0..<classes {
                let p = exp(Double(logits[row + c]) - logSum)
                let target = c == label ? 1 - Double(smoothing) : Double(smoothing) / Double(classes - 1)
                gradient[row + c] = Float((p - target) / Double(n))
            }
        }
        return Result(meanLoss: Float(total / Double(max(n, 1))), losses: losses, logitsGradient: gradient,
                      correct: correct)
    }

    /// Softmax of each row of N x C logits, in Double.
    public static func probabilities(logits: [Float], classes: Int) -> [Double] {
        var out = [Double](repeating: 0, count: logits.count)
        for row in stride(from: 0, to: logits.count, by: classes) {
            let top = logits[row..<(row + classes)].max()!
            var total = 0.0
            for c in 0..<classes {
                out[row + c] = exp(Double(logits[row + c] - top))
                total += out[row + c]
            }
            for c in 0..<classes { out[row + c] /= total }
        }
        return out
    }

    /// Index of the largest logit of each row.
    public static func predictions(logits: [Float], classes: Int) -> [Int] {
        (0..<(logits.count / classes)).map { i in
            var best = 0
            for c in 1..<classes where logits[i * classes + c] > logits[i * classes + best] { best = c }
            return best
        }
    }
}
