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
    public static func evaluate(_ model: ResNet18, on images: ImageSet, batchSize: Int = 256,
                                progress: ProgressBar? = nil) throws -> EvaluationResult {
        guard images.count > 0 else { return EvaluationResult(loss: 0, accuracy: 0, images: 0) }
        let loader = BatchLoader.evaluation(images, batchSize: batchSize)
        var totalLoss = 0.0, correct = 0
        for batch in loader.epoch(0) {
            let logits = try model.forward(images: batch.images, count: batch.count, mode: .evaluation)
            let ce = CrossEntropy.evaluate(logits: logits, labels: batch.labels, classes: model.numClasses)
            totalLoss += Double(ce.meanLoss) * Double(batch.count)
            correct += ce.correct
            progress?.advance(by: batch.count)
        }
        return EvaluationResult(loss: totalLoss / Double(images.count), accuracy: Double(correct) / Double(images.count),
                                images: images.count)
    }
}
