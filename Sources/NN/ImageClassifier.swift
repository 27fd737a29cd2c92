/// What attacks and evaluation need from a trained model, independent of how it computes.
/// Inputs are normalised Float32 images in plain NCHW (N x 3 x 32 x 32); the model is in eval
/// mode (running BatchNorm statistics) for all of these.
public protocol ImageClassifier: AnyObject {
    var numClasses: Int { get }

    /// Logits, N x numClasses, row-major.
    func logits(images: [Float], count: Int) throws -> [Float]

    /// Per-example cross-entropy losses, logits, and the gradient of the summed loss with
    /// respect to the input images (NCHW). Computes no weight gradients.
    func lossAndInputGradient(images: [Float], labels: [Int32]) throws
        -> (losses: [Float], logits: [Float], inputGradient: [Float])
}
