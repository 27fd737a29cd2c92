import Datasets
import NN
import Support

/// Loss and accuracy of a model on a labelled image set (eval mode, test-time normalisation).
public struct EvaluationResult: Equatable {
    public var loss: Double
    public var accuracy: Double
    public var images: Int

    public init(loss: Double, accuracy: Double, images: Int) {
        self.loss = loss
        self.accuracy = accuracy
        self.images = images
    }
}

public enum Evaluation {
    /// Mean cross-entropy and accuracy over `images` (fraction in [0, 1]); empty sets give 0.
    public static func evaluate(_ model: Model, on images: ImageSet, batchSize: Int = 256,
                                progress: ProgressBar? = nil) throws -> EvaluationResult {
        guard images.count > 0 else { return EvaluationResult(loss: 0, accuracy: 0, images: 0) }
        var totalLoss = 0.0, correct = 0
        try forEachBatch(model, on: images, batchSize: batchSize) { ce in
            totalLoss += Double(ce.meanLoss) * Double(ce.losses.count)
            correct += ce.correct
            progress?.advance(by: ce.losses.count)
        }
        return EvaluationResult(loss: totalLoss / Double(images.count), accuracy: Double(correct) / Double(images.count),
                                images: images.count)
    }

    /// Each image's cross-entropy in eval mode, in the set's order (ABL isolates the lowest; in
    /// eval mode a batch gives what the reference's batches of one give).
    public static func losses(_ model: Model, on images: ImageSet, batchSize: Int = 256) throws -> [Float] {
        var losses: [Float] = []
        losses.reserveCapacity(images.count)
        try forEachBatch(model, on: images, batchSize: batchSize) { losses += $0.losses }
        return losses
    }

    /// The cross-entropy of each eval-mode batch of `images`, in order.
    private static func forEachBatch(_ model: Model, on images: ImageSet, batchSize: Int,
                                     _ body: (CrossEntropy.Result) -> Void) throws {
        for batch in BatchLoader.evaluation(images, batchSize: batchSize).epoch(0) {
            let logits = try model.forward(images: batch.images, count: batch.count, mode: .evaluation)
            body(CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: model.numClasses))
        }
    }
}

/// Clean accuracy and attack success of a model: the four numbers of every
/// evaluation of a backdoored model (eval stages, pruning rows, sweeps).
public struct BackdoorMetrics: Equatable {
    public var poisonLoss: Double
    /// Attack success rate: accuracy on the triggered non-target test images labelled with the target.
    public var poisonAccuracy: Double
    public var cleanLoss: Double
    public var cleanAccuracy: Double

    public init(poisonLoss: Double, poisonAccuracy: Double, cleanLoss: Double, cleanAccuracy: Double) {
        (self.poisonLoss, self.poisonAccuracy, self.cleanLoss, self.cleanAccuracy) =
            (poisonLoss, poisonAccuracy, cleanLoss, cleanAccuracy)
    }

    /// Evaluation-mode loss and accuracy on the clean test set and the ASR set.
    public static func evaluate(_ model: Model, clean: ImageSet, poison: ImageSet, batchSize: Int = 256,
                                progress: ProgressBar? = nil) throws -> BackdoorMetrics {
        let p = try Evaluation.evaluate(model, on: poison, batchSize: batchSize, progress: progress)
        let c = try Evaluation.evaluate(model, on: clean, batchSize: batchSize, progress: progress)
        return BackdoorMetrics(poisonLoss: p.loss, poisonAccuracy: p.accuracy, cleanLoss: c.loss, cleanAccuracy: c.accuracy)
    }
}
