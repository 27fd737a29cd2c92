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

    public static func evaluate(logits: [Float], labels: [Int32], classes: Int) -> Result {
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
            let loss = logSum - Double(logits[row + label])
            losses[i] = Float(loss)
            total += loss
            if argmax == label { correct += 1 }
            for c in 0..<classes {
                let p = exp(Double(logits[row + c]) - logSum)
                gradient[row + c] = Float((p - (c == label ? 1 : 0)) / Double(n))
            }
        }
        return Result(meanLoss: Float(total / Double(max(n, 1))), losses: losses, logitsGradient: gradient,
                      correct: correct)
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
