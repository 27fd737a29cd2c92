import Backend
import NN
import Support

/// Settings of the ANP mask optimisation, named and defaulted as the reference's
/// `optimize_mask_cifar.py` flags.
public struct ANPConfig: Equatable {
    /// Perturbation budget: delta and xi start uniform in [-eps, eps] (0 disables the adversary).
    public var eps: Float = 0.4
    /// Adversarial steps per iteration, each of size eps / steps along the gradient's sign.
    public var steps: Int = 1
    /// Weight of the natural loss (1 - alpha weighs the perturbed loss).
    public var alpha: Float = 0.2
    /// Mask SGD learning rate (momentum 0.9).
    public var learningRate: Float = 0.2
    public var momentum: Float = 0.9
    public var iterations: Int = 2000
    public var printEvery: Int = 500
    public var batchSize: Int = 128
    public var seed: UInt64 = 0

    public init() {}

    /// Rejects values the algorithm cannot run with, naming the flag.
    public func validate() throws {
        func fail(_ flag: String, _ value: Any, _ expected: String) -> ANPError {
            ANPError("\(flag) \(value) is invalid: expected \(expected)")
        }
        guard eps >= 0, eps.isFinite else { throw fail("--anp-eps", eps, "a finite number >= 0") }
        guard steps >= 1 else { throw fail("--anp-steps", steps, "an integer >= 1") }
        guard alpha >= 0 && alpha <= 1 else { throw fail("--anp-alpha", alpha, "a number in [0, 1]") }
        guard learningRate > 0, learningRate.isFinite else { throw fail("--lr", learningRate, "a number > 0") }
        guard iterations >= 1 else { throw fail("--nb-iter", iterations, "an integer >= 1") }
        guard printEvery >= 1 else { throw fail("--print-every", printEvery, "an integer >= 1") }
        guard batchSize >= 1 else { throw fail("--batch-size", batchSize, "an integer >= 1") }
    }
}

public struct ANPError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Per-BatchNorm-channel values in model order: one array of `channels` floats per BN layer.
public typealias NeuronValues = [[Float]]

/// The neuron perturbations of a perturbed forward: BN weight `w * (m + delta)`, bias `b * (1 + xi)`.
public struct NeuronPerturbation: Equatable {
    public var delta: NeuronValues
    public var xi: NeuronValues
    public init(delta: NeuronValues, xi: NeuronValues) {
        self.delta = delta
        self.xi = xi
    }
}

/// The Adversarial Neuron Pruning mask optimisation (Wu & Wang 2021), as the reference's
/// `mask_train`, on any model with BatchNorm: every BatchNorm layer is swapped for a
/// NoisyBatchNorm2d (a mask m per channel, perturbations delta of the weight and xi of the
/// bias). The model's weights are never changed, and only activation gradients are computed
/// (no convolution weight gradients).
///
/// Training-mode forwards update the BN running statistics, as in the reference (they only
/// affect the evaluation-mode numbers logged along the way).
public final class MaskOptimizer {
    public let model: Model
    public let config: ANPConfig
    public let layers: [NoisyBatchNorm2d]
    /// The mask SGD (momentum 0.9, no weight decay), the same SGD that trains models.
    let maskSGD: SGD
    private let robustMaskGradients: [Tensor]

    public init(model: Model, config: ANPConfig) throws {
        try config.validate()
        self.model = model
        self.config = config
        layers = try model.insertNoisyBatchNorms()
        guard !layers.isEmpty else { throw ANPError("\(model.description) has no BatchNorm layer to mask") }
        maskSGD = SGD(learningRate: config.learningRate, momentum: config.momentum, weightDecay: 0)
        robustMaskGradients = try layers.map { try $0.neuronMask.gradient.copy() }
    }

    /// Puts the model's own BatchNorm layers back (call when done with the optimiser).
    public func detach() { model.removeNoisyBatchNorms() }

    /// The masks, per layer in model order.
    public var masks: NeuronValues {
        get throws { try layers.map { try $0.neuronMask.plainValues() } }
    }

    /// The mask SGD momentum buffer; nil before the first step (PyTorch starts it at the first gradient).
    public var maskMomentum: NeuronValues? {
        get throws {
            let values = try layers.map { try maskSGD.momentumValues($0.neuronMask) }
            return values.contains { $0 == nil } ? nil : values.map { $0! }
        }
    }

    /// The current delta and xi.
    public var perturbation: NeuronPerturbation {
        get throws {
            NeuronPerturbation(delta: try layers.map { try $0.neuronNoise.plainValues() },
                               xi: try layers.map { try $0.neuronNoiseBias.plainValues() })
        }
    }

    public func setPerturbation(_ perturbation: NeuronPerturbation) throws {
        try checkShape(perturbation.delta, "delta")
        try checkShape(perturbation.xi, "xi")
        for (i, layer) in layers.enumerated() {
            try layer.neuronNoise.setPlainValues(perturbation.delta[i])
            try layer.neuronNoiseBias.setPlainValues(perturbation.xi[i])
        }
    }

    /// Restores masks and momentum (resuming a run).
    public func restore(masks: NeuronValues, momentum: NeuronValues?) throws {
        try checkShape(masks, "masks")
        if let momentum { try checkShape(momentum, "mask momentum") }
        maskSGD.reset()
        for (i, layer) in layers.enumerated() {
            try layer.neuronMask.setPlainValues(masks[i])
            if let momentum { try maskSGD.setMomentum(layer.neuronMask, momentum[i]) }
        }
    }

    func checkShape(_ values: NeuronValues, _ what: String) throws {
        guard values.map(\.count) == layers.map(\.channels) else {
            throw ANPError("\(what): per-layer channel counts \(values.map(\.count)) do not match the model's BatchNorm layers \(layers.map(\.channels))")
        }
    }

    /// Perturbed forwards use `w (m + delta)`, `b (1 + xi)`; natural ones `w m`, `b`.
    public func setForward(perturbed: Bool) {
        for layer in layers { layer.perturbed = perturbed }
    }

    /// One training-mode forward and backward of the mean cross-entropy.
    public struct Gradients {
        public var loss: Float
        public var logits: [Float]
        public var correct: Int
        /// dCE/dm, equal to dCE/ddelta (both enter the scale as `w * (m + delta)`).
        public var mask: NeuronValues
        /// dCE/dxi (zero for a natural forward).
        public var xi: NeuronValues
    }

    /// Forward (perturbed or natural) and backward; the layers' mask and noise gradients then
    /// hold the gradient of the cross-entropy scaled by `weight` (the returned loss is not).
    func pass(images: [Float], labels: [Int32], perturbed: Bool, weight: Float = 1) throws
        -> (meanLoss: Float, logits: [Float], correct: Int) {
        setForward(perturbed: perturbed)
        let logits = try model.forward(images: images, count: labels.count, mode: .training)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: model.numClasses)
        let upstream = weight == 1 ? ce.logitsGradient : ce.logitsGradient.map { $0 * weight }
        try model.backward(logitsGradient: upstream, weightGradients: false, wantInputGradient: false)
        return (ce.meanLoss, logits, ce.correct)
    }

    /// `pass` with the gradients read back to the host.
    public func gradients(images: [Float], labels: [Int32], perturbed: Bool, weight: Float = 1) throws -> Gradients {
        let ce = try pass(images: images, labels: labels, perturbed: perturbed, weight: weight)
        return Gradients(loss: ce.meanLoss, logits: ce.logits, correct: ce.correct,
                         mask: try layers.map { try $0.neuronMask.plainGradient() },
                         xi: try layers.map { try $0.neuronNoiseBias.plainGradient() })
    }

    /// Uniform draws in [-eps, eps] for every delta, then every xi, layer by layer.
    public func drawPerturbation(using generator: inout SeededGenerator) -> NeuronPerturbation {
        let eps = config.eps
        var delta = NeuronValues(), xi = NeuronValues()
        for layer in layers {
            delta.append((0..<layer.channels).map { _ in (generator.nextFloat() * 2 - 1) * eps })
            xi.append((0..<layer.channels).map { _ in (generator.nextFloat() * 2 - 1) * eps })
        }
        return NeuronPerturbation(delta: delta, xi: xi)
    }

    public struct StepResult {
        /// CE of the perturbed forward of each adversarial step (before that step).
        public var noiseLosses: [Float]
        /// CE of the perturbed forward with the adversarial perturbation (0 when eps is 0).
        public var robustLoss: Float
        public var naturalLoss: Float
        /// alpha * natural + (1 - alpha) * robust: the mask objective.
        public var loss: Float
        /// Correct predictions of the natural forward.
        public var correct: Int
    }

    /// One iteration of the reference's `mask_train` on a batch. `initialPerturbation` replaces
    /// the uniform draw (the golden tests inject PyTorch's draws); otherwise it comes from `generator`.
    @discardableResult
    public func step(images: [Float], labels: [Int32], initialPerturbation: NeuronPerturbation? = nil,
                     generator: inout SeededGenerator) throws -> StepResult {
        let eps = config.eps, alpha = config.alpha
        var noiseLosses: [Float] = []
        var robustLoss: Float = 0
        if eps > 0 {
            try setPerturbation(initialPerturbation ?? drawPerturbation(using: &generator))
            // The reference minimises -CE with plain SGD on the gradient's sign: each coordinate
            // moves by eps/steps towards larger CE. No projection back into [-eps, eps].
            let stepSize = eps / Float(config.steps)
            for _ in 0..<config.steps {
                noiseLosses.append(try pass(images: images, labels: labels, perturbed: true).meanLoss)
                for layer in layers {
                    try model.backend.addSignStep(layer.neuronNoise.value, direction: layer.neuronNoise.gradient,
                                                  step: stepSize)
                    try model.backend.addSignStep(layer.neuronNoiseBias.value, direction: layer.neuronNoiseBias.gradient,
                                                  step: stepSize)
                }
            }
            robustLoss = try pass(images: images, labels: labels, perturbed: true, weight: 1 - alpha).meanLoss
            for (layer, saved) in zip(layers, robustMaskGradients) {
                try model.backend.copy(layer.neuronMask.gradient, into: saved)
            }
        }
        let natural = try pass(images: images, labels: labels, perturbed: false, weight: alpha)
        if eps > 0 {
            for (layer, saved) in zip(layers, robustMaskGradients) {
                try model.backend.add(layer.neuronMask.gradient, saved, into: layer.neuronMask.gradient)
            }
        }
        try applyMaskStep()
        return StepResult(noiseLosses: noiseLosses, robustLoss: robustLoss, naturalLoss: natural.meanLoss,
                          loss: alpha * natural.meanLoss + (1 - alpha) * robustLoss, correct: natural.correct)
    }

    /// SGD with momentum on the masks' gradients, then masks clamped to [0, 1] (the buffer is not).
    func applyMaskStep() throws {
        let masks = layers.map(\.neuronMask)
        try maskSGD.step(masks)
        for mask in masks { try model.backend.clamp(mask.value, low: 0, high: 1) }
    }
}
