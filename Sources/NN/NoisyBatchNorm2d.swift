import Backend

/// ANP's BatchNorm (the reference's `NoisyBatchNorm2d`): a per-channel mask m and perturbations
/// delta of the weight and xi of the bias. Perturbed, it normalises with scale w (m + delta) and
/// shift b (1 + xi); natural, with w m and b. Swapped into a model in place of its BatchNorm2d
/// layers (`Model.insertNoisyBatchNorms`), sharing their weights and running statistics; the
/// weights stay frozen: backward writes only the mask and perturbation gradients.
public final class NoisyBatchNorm2d: BatchNorm2d {
    public let neuronMask: Parameter
    public let neuronNoise: Parameter
    public let neuronNoiseBias: Parameter
    /// Whether forward passes apply delta and xi.
    public var perturbed = false
    /// The layer this one replaced (put back by `Model.removeNoisyBatchNorms`).
    public let original: BatchNorm2d
    private let scale, shift, scaleGradient, shiftGradient, ones: Tensor

    public init(wrapping original: BatchNorm2d) throws {
        self.original = original
        let c = original.channels, backend = original.backend
        neuronMask = try Parameter("neuron_mask", plainShape: [c], values: .init(repeating: 1, count: c), on: backend)
        neuronNoise = try Parameter("neuron_noise", plainShape: [c], values: .init(repeating: 0, count: c), on: backend)
        neuronNoiseBias = try Parameter("neuron_noise_bias", plainShape: [c], values: .init(repeating: 0, count: c),
                                        on: backend)
        let layout = original.weight.value.layout
        scale = try backend.makeTensor(layout)
        shift = try backend.makeTensor(layout)
        scaleGradient = try backend.makeTensor(layout)
        shiftGradient = try backend.makeTensor(layout)
        ones = try backend.makeTensor(layout)
        try ones.fill(1)
        try super.init(sharing: original)
    }

    override func affine() throws -> (scale: Tensor, shift: Tensor) {
        if perturbed {
            try backend.add(neuronMask.value, neuronNoise.value, into: scale)
            try backend.multiply(weight.value, scale, into: scale)
            // b (1 + xi), rounded as the reference computes it.
            try backend.add(ones, neuronNoiseBias.value, into: shift)
            try backend.multiply(bias.value, shift, into: shift)
        } else {
            try backend.multiply(weight.value, neuronMask.value, into: scale)
            try backend.copy(bias.value, into: shift)
        }
        return (scale, shift)
    }

    override func affineGradients() throws -> (scale: Tensor, shift: Tensor) { (scaleGradient, shiftGradient) }

    /// d/dm = d/ddelta = dscale * w; d/dxi = dshift * b (zero when natural: xi is not used).
    override func didComputeAffineGradients() throws {
        try backend.multiply(scaleGradient, weight.value, into: neuronMask.gradient)
        if perturbed {
            try backend.copy(neuronMask.gradient, into: neuronNoise.gradient)
            try backend.multiply(shiftGradient, bias.value, into: neuronNoiseBias.gradient)
        } else {
            try neuronNoise.gradient.fill(0)
            try neuronNoiseBias.gradient.fill(0)
        }
    }
}
