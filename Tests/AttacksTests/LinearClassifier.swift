import Foundation
import NN
import Support

/// A tiny ImageClassifier for testing PGD: logits = W x + b on the normalised NCHW pixels, with
/// the analytic input gradient W^T (softmax - onehot). It records every call so tests can
/// follow each image through the attack.
final class LinearClassifier: ImageClassifier {
    let numClasses = 10
    static let inputSize = 3 * 32 * 32
    var weights: [Float]  // numClasses x inputSize
    var bias: [Float]

    struct GradientCall { let images: [Float]; let labels: [Int32]; let logits: [Float] }
    private(set) var gradientCalls: [GradientCall] = []
    private(set) var logitsCalls: [[Float]] = []

    init(seed: UInt64, scale: Float) {
        var generator = SeededGenerator(seed: seed, stream: "linear classifier")
        weights = (0..<numClasses * Self.inputSize).map { _ in generator.nextGaussian() * scale }
        bias = [Float](repeating: 0, count: numClasses)
    }

    func forward(_ images: [Float], count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count * numClasses)
        for n in 0..<count {
            for k in 0..<numClasses {
                var sum: Float = bias[k]
                for i in 0..<Self.inputSize { sum += weights[k * Self.inputSize + i] * images[n * Self.inputSize + i] }
                out[n * numClasses + k] = sum
            }
        }
        return out
    }

    func logits(images: [Float], count: Int) throws -> [Float] {
        logitsCalls.append(images)
        return forward(images, count: count)
    }

    func lossAndInputGradient(images: [Float], labels: [Int32]) throws
        -> (losses: [Float], logits: [Float], inputGradient: [Float]) {
        let count = labels.count
        let logits = forward(images, count: count)
        gradientCalls.append(GradientCall(images: images, labels: labels, logits: logits))
        var losses = [Float](repeating: 0, count: count)
        var gradient = [Float](repeating: 0, count: images.count)
        for n in 0..<count {
            let row = logits[n * numClasses..<(n + 1) * numClasses].map(Double.init)
            let peak = row.max()!
            let exps = row.map { exp($0 - peak) }
            let total = exps.reduce(0, +)
            losses[n] = Float(peak + log(total) - row[Int(labels[n])])
            for k in 0..<numClasses {
                let coefficient = Float(exps[k] / total) - (k == Int(labels[n]) ? 1 : 0)
                for i in 0..<Self.inputSize {
                    gradient[n * Self.inputSize + i] += coefficient * weights[k * Self.inputSize + i]
                }
            }
        }
        return (losses, logits, gradient)
    }

    func predictions(_ images: [Float], count: Int) -> [Int] {
        let logits = forward(images, count: count)
        return (0..<count).map { n in
            let row = logits[n * numClasses..<(n + 1) * numClasses]
            return row.indices.max { row[$0] < row[$1] }! - row.startIndex
        }
    }
}
