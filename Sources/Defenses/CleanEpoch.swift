import Datasets
import Foundation
import NN

/// One training-mode epoch of SGD on the cross-entropy of a loader's batches, optionally ascending
/// (RNP's and ABL's unlearning) or held at a flood level (ABL's isolation); FineTuning.run descends
/// and is what NC's unlearning uses.
enum CleanEpoch {
    /// Mean loss and accuracy of the training-mode forwards of the epoch.
    struct Outcome {
        var loss: Double
        var accuracy: Double
    }

    /// With `ascend`, each step follows the gradient of -CE (RNP's `(-loss).backward()`). With a
    /// `flood` level g, the gradient of ABL's local gradient ascent sign(L - g) L, L the batch's mean
    /// CE (the flooding loss |L - g| + g has the same gradient): a batch below g is ascended.
    /// The outcome's loss is the plain CE either way.
    static func run(_ model: Model, loader: BatchLoader, epoch: Int, sgd: SGD, ascend: Bool = false,
                    flood: Float? = nil) throws -> Outcome {
        var lossSum = 0.0, correct = 0, seen = 0
        for batch in loader.epoch(epoch) {
            let logits = try model.forward(images: batch.images, count: batch.count, mode: .training)
            let ce = CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: model.numClasses)
            guard ce.meanLoss.isFinite else {
                throw DefenseError("the loss became \(ce.meanLoss) in epoch \(epoch + 1) (learning rate \(sgd.learningRate) too high?)")
            }
            let scale = (ascend ? -1 : 1) * (flood.map { Self.floodingSign(loss: ce.meanLoss, gamma: $0) } ?? 1)
            let upstream = scale == 1 ? ce.logitsGradient : ce.logitsGradient.map { scale * $0 }
            try model.backward(logitsGradient: upstream, weightGradients: true, wantInputGradient: false)
            try sgd.step(model.parameters)
            lossSum += Double(ce.meanLoss) * Double(batch.count)
            correct += ce.correct
            seen += batch.count
        }
        return Outcome(loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)))
    }

    /// torch.sign(loss - gamma): 0 at the flood level itself (no step there).
    static func floodingSign(loss: Float, gamma: Float) -> Float {
        loss > gamma ? 1 : (loss < gamma ? -1 : 0)
    }
}
