import DNNL
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

/// The Adversarial Neuron Pruning mask optimisation (Wu & Wang 2021) on a ResNet-18, as the
/// reference's `mask_train`: every BatchNorm channel gets a mask m, and perturbations delta (of
/// the BN weight) and xi (of the BN bias). The model's weights are never changed: the effective
/// BN scale and shift go through the layers' overrides, and only activation gradients are
/// computed (no convolution weight gradients).
///
/// Training-mode forwards update the BN running statistics, as in the reference (they only
/// affect the evaluation-mode numbers logged along the way).
public final class MaskOptimizer {
    public let model: ResNet18
    public let config: ANPConfig
    public let layers: [BatchNorm2d]
    let gamma: NeuronValues
    let beta: NeuronValues
    public internal(set) var masks: NeuronValues
    /// The mask SGD momentum buffer; nil before the first step (PyTorch starts it at the first gradient).
    public internal(set) var maskMomentum: NeuronValues?
    public internal(set) var perturbation: NeuronPerturbation
    private let scales: [Tensor]
    private let shifts: [Tensor]

    public init(model: ResNet18, config: ANPConfig) throws {
        try config.validate()
        self.model = model
        self.config = config
        layers = model.batchNorms
        gamma = try layers.map { try $0.weight.plainValues() }
        beta = try layers.map { try $0.bias.plainValues() }
        masks = layers.map { [Float](repeating: 1, count: $0.channels) }
        let zeros = layers.map { [Float](repeating: 0, count: $0.channels) }
        perturbation = NeuronPerturbation(delta: zeros, xi: zeros)
        scales = try gamma.map { try Tensor(shape: [$0.count], values: $0) }
        shifts = try beta.map { try Tensor(shape: [$0.count], values: $0) }
        for (i, layer) in layers.enumerated() {
            layer.scaleOverride = scales[i]
            layer.shiftOverride = shifts[i]
        }
    }

    /// Gives the BN layers their own weight and bias back (call when done with the optimiser).
    public func detach() {
        for layer in layers {
            layer.scaleOverride = nil
            layer.shiftOverride = nil
        }
    }

    /// Restores masks and momentum (resuming a run).
    public func restore(masks: NeuronValues, momentum: NeuronValues?) throws {
        try checkShape(masks, "masks")
        if let momentum { try checkShape(momentum, "mask momentum") }
        self.masks = masks
        maskMomentum = momentum
    }

    func checkShape(_ values: NeuronValues, _ what: String) throws {
        guard values.map(\.count) == layers.map(\.channels) else {
            throw ANPError("\(what): per-layer channel counts \(values.map(\.count)) do not match the model's BatchNorm layers \(layers.map(\.channels))")
        }
    }

    /// Sets the effective BN scale and shift: perturbed `w (m + delta)`, `b (1 + xi)`; natural `w m`, `b`.
    public func setForward(perturbed: Bool) {
        for i in layers.indices {
            let (g, b, m, d, x) = (gamma[i], beta[i], masks[i], perturbation.delta[i], perturbation.xi[i])
            scales[i].withStorage { s in
                for c in g.indices { s[c] = g[c] * (perturbed ? m[c] + d[c] : m[c]) }
            }
            shifts[i].withStorage { s in
                for c in b.indices { s[c] = perturbed ? b[c] * (1 + x[c]) : b[c] }
            }
        }
    }

    /// One training-mode forward and backward of the mean cross-entropy.
    public struct Gradients {
        public var loss: Float
        public var logits: [Float]
        public var correct: Int
        /// dCE/dm, equal to dCE/ddelta (both enter the scale as `w * (m + delta)`).
        public var mask: NeuronValues
        /// dCE/dxi (only meaningful for a perturbed forward).
        public var xi: NeuronValues
    }

    /// Forward (perturbed or natural) on a normalised NCHW batch, cross-entropy, and its
    /// gradient with respect to masks / perturbations, scaled by `weight` (the loss is not).
    public func gradients(images: [Float], labels: [Int32], perturbed: Bool, weight: Float = 1) throws -> Gradients {
        setForward(perturbed: perturbed)
        let logits = try model.forward(images: images, count: labels.count, mode: .training)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: model.numClasses)
        let upstream = weight == 1 ? ce.logitsGradient : ce.logitsGradient.map { $0 * weight }
        try model.backward(logitsGradient: upstream, weightGradients: false, wantInputGradient: false)
        var gMask = NeuronValues(), gXi = NeuronValues()
        for (i, layer) in layers.enumerated() {
            let dScale = try layer.weight.plainGradient()
            gMask.append(zip(dScale, gamma[i]).map { $0 * $1 })
            if perturbed {
                let dShift = try layer.bias.plainGradient()
                gXi.append(zip(dShift, beta[i]).map { $0 * $1 })
            } else {
                gXi.append([Float](repeating: 0, count: layer.channels))
            }
        }
        return Gradients(loss: ce.meanLoss, logits: logits, correct: ce.correct, mask: gMask, xi: gXi)
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
        if eps > 0 {
            let start = initialPerturbation ?? drawPerturbation(using: &generator)
            try checkShape(start.delta, "delta")
            try checkShape(start.xi, "xi")
            perturbation = start
            // The reference minimises -CE with plain SGD on the gradient's sign: each coordinate
            // moves by eps/steps towards larger CE. No projection back into [-eps, eps].
            let stepSize = eps / Float(config.steps)
            for _ in 0..<config.steps {
                let g = try gradients(images: images, labels: labels, perturbed: true)
                noiseLosses.append(g.loss)
                for i in layers.indices {
                    for c in 0..<layers[i].channels {
                        perturbation.delta[i][c] += stepSize * sign(g.mask[i][c])
                        perturbation.xi[i][c] += stepSize * sign(g.xi[i][c])
                    }
                }
            }
        }
        var gMask = NeuronValues()
        var robustLoss: Float = 0
        if eps > 0 {
            let robust = try gradients(images: images, labels: labels, perturbed: true, weight: 1 - alpha)
            robustLoss = robust.loss
            gMask = robust.mask
        }
        let natural = try gradients(images: images, labels: labels, perturbed: false, weight: alpha)
        if gMask.isEmpty {
            gMask = natural.mask
        } else {
            for i in gMask.indices { for c in gMask[i].indices { gMask[i][c] += natural.mask[i][c] } }
        }
        applyMaskStep(gMask)
        return StepResult(noiseLosses: noiseLosses, robustLoss: robustLoss, naturalLoss: natural.loss,
                          loss: alpha * natural.loss + (1 - alpha) * robustLoss, correct: natural.correct)
    }

    /// SGD with momentum (PyTorch's: buf = g first, then buf = mu buf + g; m -= lr buf), then
    /// masks clamped to [0, 1] (the buffer is not).
    func applyMaskStep(_ gradient: NeuronValues) {
        var buffer = gradient
        if let previous = maskMomentum {
            for i in buffer.indices {
                for c in buffer[i].indices { buffer[i][c] = config.momentum * previous[i][c] + gradient[i][c] }
            }
        }
        maskMomentum = buffer
        for i in masks.indices {
            for c in masks[i].indices {
                masks[i][c] = min(max(masks[i][c] - config.learningRate * buffer[i][c], 0), 1)
            }
        }
    }
}

/// torch.sign: -1, 0 or 1.
@inline(__always)
func sign(_ x: Float) -> Float { x > 0 ? 1 : (x < 0 ? -1 : 0) }
