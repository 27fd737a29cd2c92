import Datasets
import Foundation
import NN

/// One training-mode epoch of SGD on the cross-entropy of a loader's batches: what NC's
/// unlearning fine-tune and RNP's unlearning (gradient ascent) share. Kept internal until the
/// shared fine-tuning loop (FineTuning.swift) replaces it.
enum CleanEpoch {
    /// Mean loss and accuracy of the training-mode forwards of the epoch.
    struct Outcome {
        var loss: Double
        var accuracy: Double
    }

    /// With `ascend`, each step follows the gradient of -CE (RNP's `(-loss).backward()`).
    static func run(_ model: Model, loader: BatchLoader, epoch: Int, sgd: SGD, ascend: Bool = false) throws -> Outcome {
        var lossSum = 0.0, correct = 0, seen = 0
        for batch in loader.epoch(epoch) {
            let logits = try model.forward(images: batch.images, count: batch.count, mode: .training)
            let ce = CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: model.numClasses)
            guard ce.meanLoss.isFinite else {
                throw DefenseError("the loss became \(ce.meanLoss) in epoch \(epoch + 1) (learning rate \(sgd.learningRate) too high?)")
            }
            let upstream = ascend ? ce.logitsGradient.map { -$0 } : ce.logitsGradient
            try model.backward(logitsGradient: upstream, weightGradients: true, wantInputGradient: false)
            try sgd.step(model.parameters)
            lossSum += Double(ce.meanLoss) * Double(batch.count)
            correct += ce.correct
            seen += batch.count
        }
        return Outcome(loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)))
    }

    /// PyTorch's CosineAnnealingLR (eta_min 0) at a 0-based epoch of `total`.
    static func cosineLearningRate(base: Float, epoch: Int, total: Int) -> Float {
        Float(Double(base) * (1 + cos(Double.pi * Double(epoch) / Double(max(total, 1)))) / 2)
    }
}

/// A defense's settings or run went wrong; the message names the flag or value.
public struct DefenseError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
