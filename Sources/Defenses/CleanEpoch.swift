import Datasets
import Foundation
import NN

/// One training-mode epoch of SGD on the cross-entropy of a loader's batches, optionally ascending
/// (RNP's unlearning; FineTuning.run descends and is what NC's unlearning uses).
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
}
