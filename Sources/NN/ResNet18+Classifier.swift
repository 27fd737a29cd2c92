extension ResNet18: ImageClassifier {
    public func logits(images: [Float], count: Int) throws -> [Float] {
        try forward(images: images, count: count, mode: .evaluation)
    }

    public func lossAndInputGradient(images: [Float], labels: [Int32]) throws
        -> (losses: [Float], logits: [Float], inputGradient: [Float]) {
        let logits = try forward(images: images, count: labels.count, mode: .evaluation)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: numClasses)
        // Gradient of the summed loss: the mean's gradient times N.
        let scale = Float(labels.count)
        let gradient = try backward(logitsGradient: ce.logitsGradient.map { $0 * scale }, weightGradients: false,
                                    wantInputGradient: true)!
        return (ce.losses, logits, gradient)
    }
}
