import Datasets
import Foundation
import NN
import Support

/// L-inf projected gradient ascent on the classifier's loss for each image's own label, as the
/// label-consistent (clean-label) attack uses it: the perturbed images still show their class,
/// but are hard enough that the model leans on the trigger added afterwards.
///
/// Works in [0, 1] pixel space before normalisation; the classifier sees normalised NCHW input,
/// so its input gradient is divided by the channel's std (chain rule) before taking the sign.
public struct CleanLabelPGD {
    public var epsilon: Float
    public var stepSize: Float
    public var iterations: Int
    /// Extra random starts: `restarts + 1` attempts in all.
    public var restarts: Int
    public var batchSize: Int
    public var normalization: Normalization

    public init(epsilon: Float = 16 / 255, stepSize: Float = 2 / 255, iterations: Int = 100, restarts: Int = 1,
                batchSize: Int = 128, normalization: Normalization = .cifar10) {
        self.epsilon = epsilon
        self.stepSize = stepSize
        self.iterations = iterations
        self.restarts = restarts
        self.batchSize = batchSize
        self.normalization = normalization
    }

    public func validate() throws {
        guard epsilon > 0 && epsilon <= 1 else {
            throw AttackError.invalidValue(name: "PGD epsilon", value: "\(epsilon)", allowed: "a number in (0, 1] (pixel scale; 16/255 = 0.0627)")
        }
        guard stepSize > 0 && stepSize <= 1 else {
            throw AttackError.invalidValue(name: "PGD step size", value: "\(stepSize)", allowed: "a number in (0, 1]")
        }
        guard iterations >= 1 else {
            throw AttackError.invalidValue(name: "PGD iterations", value: "\(iterations)", allowed: "an integer >= 1")
        }
        guard restarts >= 0 else {
            throw AttackError.invalidValue(name: "PGD restarts", value: "\(restarts)", allowed: "an integer >= 0")
        }
        guard batchSize >= 1 else {
            throw AttackError.invalidValue(name: "PGD batch size", value: "\(batchSize)", allowed: "an integer >= 1")
        }
    }

    /// Model calls of one whole run: `iterations` gradient steps per attempt (fewer once every
    /// image of a batch is misclassified), for progress bars.
    public func stepCount(images: Int) -> Int {
        (images + batchSize - 1) / batchSize * (restarts + 1) * iterations
    }

    /// Perturbs every image of `images` against its own label, in batches, and quantises the
    /// result to bytes by round-half-up of x * 255. Labels are unchanged. Returns the perturbed
    /// set and each image's loss under its kept perturbation (before quantisation).
    public func perturb(_ images: ImageSet, classifier: ImageClassifier, seed: UInt64,
                        progress: ProgressBar? = nil) throws -> (images: ImageSet, losses: [Float]) {
        try validate()
        var generator = SeededGenerator(seed: seed, stream: "clean-label PGD start")
        var pixels = images.pixels
        var losses = [Float]()
        losses.reserveCapacity(images.count)
        for start in stride(from: 0, to: images.count, by: batchSize) {
            let indices = Array(start..<min(start + batchSize, images.count))
            let clean = Self.pixelsNCHW(images, indices: indices)
            let labels = indices.map { Int32(images.labels[$0]) }
            let outcome = try attack(clean: clean, labels: labels, classifier: classifier,
                                     generator: &generator, progress: progress)
            Self.quantise(outcome.best, into: &pixels, at: indices)
            losses += outcome.bestLoss
        }
        return (ImageSet(pixels: pixels, labels: images.labels), losses)
    }

    /// What one batch's attack produced, per image: the kept perturbed image ([0, 1], NCHW),
    /// its loss, which attempt it came from, and the loss every attempt ended with.
    struct BatchOutcome {
        var best: [Float]
        var bestLoss: [Float]
        var bestAttempt: [Int]
        var attemptLosses: [[Float]]
    }

    func attack(clean: [Float], labels: [Int32], classifier: ImageClassifier,
                generator: inout SeededGenerator, progress: ProgressBar?) throws -> BatchOutcome {
        let count = labels.count
        let size = 3 * Batch.height * Batch.width
        var outcome = BatchOutcome(best: clean, bestLoss: [Float](repeating: -.infinity, count: count),
                                   bestAttempt: [Int](repeating: -1, count: count), attemptLosses: [])
        for attempt in 0...restarts {
            // Uniform random start in the epsilon ball, kept inside [0, 1].
            var current = clean
            for i in current.indices {
                let offset = (2 * generator.nextFloat() - 1) * epsilon
                current[i] = min(max(clean[i] + offset, 0), 1)
            }
            var active = Array(0..<count)
            var stepsDone = 0
            for _ in 0..<iterations {
                // Only images still classified correctly are sent and moved.
                let input = Self.normalised(current, images: active, normalization: normalization)
                let result = try classifier.lossAndInputGradient(images: input, labels: active.map { labels[$0] })
                let classes = classifier.numClasses
                var stillCorrect = [Int]()
                for (row, image) in active.enumerated() {
                    let logits = result.logits[row * classes..<(row + 1) * classes]
                    guard Self.argmax(logits) == Int(labels[image]) else { continue }
                    stillCorrect.append(image)
                    Self.signStep(&current, clean: clean, image: image, gradient: result.inputGradient, row: row,
                                  stepSize: stepSize, epsilon: epsilon, normalization: normalization)
                }
                active = stillCorrect
                stepsDone += 1
                progress?.advance()
                if active.isEmpty { break }
            }
            progress?.advance(by: iterations - stepsDone)

            let finalLosses = try Self.losses(classifier.logits(images: Self.normalised(current, images: Array(0..<count), normalization: normalization), count: count),
                                              labels: labels, classes: classifier.numClasses)
            outcome.attemptLosses.append(finalLosses)
            for image in 0..<count where finalLosses[image] > outcome.bestLoss[image] {
                outcome.bestLoss[image] = finalLosses[image]
                outcome.bestAttempt[image] = attempt
                outcome.best.replaceSubrange(image * size..<(image + 1) * size, with: current[image * size..<(image + 1) * size])
            }
        }
        return outcome
    }

    /// x <- clip(project_eps(x + step * sign(dL/dx)), 0, 1) for one image, where
    /// dL/dx = dL/d(normalised) / std (TrojanNN's pattern steps the same way).
    static func signStep(_ current: inout [Float], clean: [Float], image: Int, gradient: [Float], row: Int,
                         stepSize: Float, epsilon: Float, normalization: Normalization) {
        let plane = Batch.height * Batch.width
        for channel in 0..<3 {
            let inverseStd = 1 / normalization.std[channel]
            let base = (image * 3 + channel) * plane
            let gradientBase = (row * 3 + channel) * plane
            for p in 0..<plane {
                let g = gradient[gradientBase + p] * inverseStd
                let direction: Float = g > 0 ? 1 : (g < 0 ? -1 : 0)
                let x0 = clean[base + p]
                let moved = current[base + p] + stepSize * direction
                current[base + p] = min(max(min(max(moved, x0 - epsilon), x0 + epsilon), 0), 1)
            }
        }
    }

    /// Normalised NCHW input of the listed images of `pixels` ([0, 1], NCHW).
    static func normalised(_ pixels: [Float], images: [Int], normalization: Normalization) -> [Float] {
        let plane = Batch.height * Batch.width
        var out = [Float](repeating: 0, count: images.count * 3 * plane)
        for (row, image) in images.enumerated() {
            for channel in 0..<3 {
                let mean = normalization.mean[channel], std = normalization.std[channel]
                let source = (image * 3 + channel) * plane, target = (row * 3 + channel) * plane
                for p in 0..<plane { out[target + p] = (pixels[source + p] - mean) / std }
            }
        }
        return out
    }

    /// [0, 1] NCHW floats of the listed images (x / 255, as ToTensor does).
    static func pixelsNCHW(_ images: ImageSet, indices: [Int]) -> [Float] {
        let plane = Batch.height * Batch.width
        var out = [Float](repeating: 0, count: indices.count * 3 * plane)
        for (row, index) in indices.enumerated() {
            let image = images.image(index)
            let start = image.startIndex
            for p in 0..<plane {
                for channel in 0..<3 {
                    out[(row * 3 + channel) * plane + p] = Float(image[start + p * 3 + channel]) / 255
                }
            }
        }
        return out
    }

    /// Writes [0, 1] NCHW images back as HWC bytes, round-half-up of x * 255.
    static func quantise(_ images: [Float], into pixels: inout [UInt8], at indices: [Int]) {
        let plane = Batch.height * Batch.width
        for (row, index) in indices.enumerated() {
            let base = index * ImageSet.pixelsPerImage
            for p in 0..<plane {
                for channel in 0..<3 {
                    pixels[base + p * 3 + channel] = quantise(images[(row * 3 + channel) * plane + p])
                }
            }
        }
    }

    @inline(__always)
    static func quantise(_ x: Float) -> UInt8 {
        UInt8(min(max((x * 255 + 0.5).rounded(.down), 0), 255))
    }

    /// Cross-entropy of each row of `logits` for its label (log-sum-exp in Double).
    static func losses(_ logits: [Float], labels: [Int32], classes: Int) -> [Float] {
        labels.indices.map { row in
            let values = logits[row * classes..<(row + 1) * classes].map(Double.init)
            let peak = values.max()!
            let logSum = peak + log(values.reduce(0) { $0 + exp($1 - peak) })
            return Float(logSum - values[Int(labels[row])])
        }
    }

    static func argmax(_ values: ArraySlice<Float>) -> Int {
        var best = values.startIndex
        for i in values.indices where values[i] > values[best] { best = i }
        return best - values.startIndex
    }
}
