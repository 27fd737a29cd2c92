import Backend
import Support

/// 2-D convolution (PyTorch's Conv2d: kaiming-uniform init with a = sqrt(5), groups, optional bias).
public final class Conv2d: Module, Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let inChannels, outChannels, kernel, stride, padding, groups: Int
    private let backend: Backend
    private var input: Tensor?
    private var kernelOp: ConvolutionKernel?
    private var output = OutputSlot()

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                groups: Int = 1, bias: Bool = false, generator: inout SeededGenerator, on backend: Backend) throws {
        guard groups >= 1, inChannels % groups == 0, outChannels % groups == 0 else {
            throw ShapeError("Conv2d(\(inChannels), \(outChannels), groups: \(groups)): channels must divide by groups")
        }
        (self.inChannels, self.outChannels, self.kernel, self.stride, self.padding, self.groups) =
            (inChannels, outChannels, kernel, stride, padding, groups)
        self.backend = backend
        let fanIn = inChannels / groups * kernel * kernel
        let bound = 1 / Float(fanIn).squareRoot()
        let shape = [outChannels, inChannels / groups, kernel, kernel]
        let values = (0..<shape.reduce(1, *)).map { _ in (generator.nextFloat() * 2 - 1) * bound }
        // oneDNN-style grouped weights are G x O/G x I/G x k x k: the same element order.
        let storage = groups == 1 ? nil : [groups, outChannels / groups, inChannels / groups, kernel, kernel]
        weight = try Parameter("weight", plainShape: shape, storageShape: storage, values: values, on: backend)
        self.bias = bias ? try Parameter("bias", plainShape: [outChannels],
                                         values: (0..<outChannels).map { _ in (generator.nextFloat() * 2 - 1) * bound },
                                         on: backend) : nil
    }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        let s = x.shape
        let op = try backend.convolution(.init(batch: s[0], inChannels: inChannels, outChannels: outChannels,
                                               height: s[2], width: s[3], kernel: kernel, stride: stride,
                                               padding: padding, groups: groups, bias: bias != nil))
        kernelOp = op
        try weight.adopt(op.weightLayout)
        let src = try x.relayout(to: op.inputLayout)
        input = src
        let y = try output.get(op.outputLayout, on: backend)
        try op.forward(input: src, weight: weight.value, bias: bias?.value, output: y)
        return y
    }

    /// Writes (not accumulates) the weight gradient when the pass wants parameter gradients.
    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        guard let op = kernelOp, let input else { throw ShapeError("\(name): backward before forward") }
        defer { pass.pool.give(gradient) }
        if pass.weightGradients {
            try op.backwardWeights(input: input, outputGradient: gradient, weightGradient: weight.gradient,
                                   biasGradient: bias?.gradient)
        }
        guard needsInputGradient else { return nil }
        let gx = try pass.pool.take(op.inputGradientLayout())
        try op.backwardData(outputGradient: gradient, weight: weight.value, inputGradient: gx)
        return gx
    }
}

/// BatchNorm2d (eps 1e-5, momentum 0.1, unbiased running variance as PyTorch), optionally with
/// the following ReLU fused (PyTorch's `F.relu(bn(x))`: the ReLU has no state). Subclasses
/// change the scale and shift the normalisation uses (ANP's NoisyBatchNorm2d).
public class BatchNorm2d: Module, Layer {
    public let weight, bias: Parameter
    public let runningMean, runningVar: Buffer
    public let numBatchesTracked: Counter
    public let channels: Int
    public let fuseReLU: Bool
    public var momentum: Float = 0.1
    let backend: Backend

    private var op: BatchNormalizationKernel?
    private var input: Tensor?
    private var usedRunningStatistics = false
    private let batchMean, batchVariance: Tensor
    private var workspace = OutputSlot()
    private var output = OutputSlot()

    public init(_ channels: Int, fuseReLU: Bool = false, on backend: Backend) throws {
        self.channels = channels
        self.fuseReLU = fuseReLU
        self.backend = backend
        weight = try Parameter("weight", plainShape: [channels], values: .init(repeating: 1, count: channels), on: backend)
        bias = try Parameter("bias", plainShape: [channels], values: .init(repeating: 0, count: channels), on: backend)
        runningMean = try Buffer("running_mean", values: .init(repeating: 0, count: channels), on: backend)
        runningVar = try Buffer("running_var", values: .init(repeating: 1, count: channels), on: backend)
        numBatchesTracked = Counter("num_batches_tracked")
        batchMean = try backend.upload(.init(repeating: 0, count: channels), shape: [channels])
        batchVariance = try backend.upload(.init(repeating: 1, count: channels), shape: [channels])
    }

    /// Shares the state of `other` (a module transform keeps the parameters it wraps).
    init(sharing other: BatchNorm2d) throws {
        (channels, fuseReLU, backend, momentum) = (other.channels, other.fuseReLU, other.backend, other.momentum)
        (weight, bias, runningMean, runningVar) = (other.weight, other.bias, other.runningMean, other.runningVar)
        numBatchesTracked = other.numBatchesTracked
        batchMean = try backend.makeTensor(other.batchMean.layout)
        batchVariance = try backend.makeTensor(other.batchVariance.layout)
    }

    /// The per-channel scale and shift the normalisation applies.
    func affine() throws -> (scale: Tensor, shift: Tensor) { (weight.value, bias.value) }
    /// Where the kernel writes the gradients of that scale and shift.
    func affineGradients() throws -> (scale: Tensor, shift: Tensor) { (weight.gradient, bias.gradient) }
    /// Called after they are written.
    func didComputeAffineGradients() throws {}

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        try forward(x, pass, transient: false)
    }

    /// With `transient`, the output is a buffer of the pass's transient pool, for a caller that
    /// consumes it at once and gives it back (BN backward needs the input, never the output).
    public func forward(_ x: Tensor, _ pass: ForwardPass, transient: Bool) throws -> Tensor {
        let training = pass.mode == .training
        let op = try backend.batchNormalization(x.layout, fuseReLU: fuseReLU, globalStatistics: !training)
        self.op = op
        input = x
        usedRunningStatistics = !training
        let y = try transient ? pass.transients.take(x.layout) : output.get(x.layout, on: backend)
        let ws = try op.workspaceLayout.map { try workspace.get($0, on: backend) }
        let (scale, shift) = try affine()
        try op.forward(input: x, scale: scale, shift: shift, mean: training ? batchMean : runningMean.tensor,
                       variance: training ? batchVariance : runningVar.tensor, output: y, workspace: ws)
        if training {
            numBatchesTracked.value += 1
            let count = x.shape[0] * x.shape[2] * x.shape[3]
            try backend.updateRunningStatistics(mean: runningMean.tensor, variance: runningVar.tensor,
                                                batchMean: batchMean, batchVariance: batchVariance, momentum: momentum,
                                                varianceCorrection: count > 1 ? Float(count) / Float(count - 1) : 1)
        }
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        try backward(gradient, pass, inPlace: true)
    }

    /// Writes the scale and shift gradients and returns the input gradient: in `gradient` itself
    /// when `inPlace` (which then hands it over), else in a new pool buffer (the caller keeps
    /// `gradient`).
    public func backward(_ gradient: Tensor, _ pass: BackwardPass, inPlace: Bool) throws -> Tensor {
        guard let op, let input else { throw ShapeError("\(name): backward before forward") }
        let reuse = inPlace && gradient.layout == input.layout
        let gx = reuse ? gradient : try pass.pool.take(input.layout)
        let global = usedRunningStatistics
        let (scale, shift) = try affine()
        let (dScale, dShift) = try affineGradients()
        try op.backward(input: input, outputGradient: gradient, scale: scale, shift: shift,
                        mean: global ? runningMean.tensor : batchMean, variance: global ? runningVar.tensor : batchVariance,
                        workspace: workspace.tensor, inputGradient: gx, scaleGradient: dScale, shiftGradient: dShift)
        if inPlace && !reuse { pass.pool.give(gradient) }
        try didComputeAffineGradients()
        return gx
    }
}

/// Fully connected layer with bias on an N x C (x 1 x 1) activation (PyTorch's Linear and init).
public final class Linear: Module, Layer {
    public let weight, bias: Parameter
    public let inFeatures, outFeatures: Int
    private let backend: Backend
    private var op: LinearKernel?
    private var input: Tensor?
    private var output = OutputSlot()

    public init(_ inFeatures: Int, _ outFeatures: Int, generator: inout SeededGenerator, on backend: Backend) throws {
        (self.inFeatures, self.outFeatures, self.backend) = (inFeatures, outFeatures, backend)
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = (0..<(inFeatures * outFeatures)).map { _ in (generator.nextFloat() * 2 - 1) * bound }
        let b = (0..<outFeatures).map { _ in (generator.nextFloat() * 2 - 1) * bound }
        // Stored 4-D so the weights can take the blocked layout of a pooled N x C x 1 x 1 input.
        weight = try Parameter("weight", plainShape: [outFeatures, inFeatures],
                               storageShape: [outFeatures, inFeatures, 1, 1], values: w, on: backend)
        bias = try Parameter("bias", plainShape: [outFeatures], values: b, on: backend)
    }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        var x = x
        if x.shape.count == 2 { x = try x.relayout(to: backend.plainLayout(x.shape + [1, 1])) }
        let op = try backend.linear(input: x.layout, outputs: outFeatures)
        self.op = op
        try weight.adopt(op.weightLayout)
        input = x
        let y = try output.get(op.outputLayout, on: backend)
        try op.forward(input: x, weight: weight.value, bias: bias.value, output: y)
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        guard let op, let input else { throw ShapeError("\(name): backward before forward") }
        defer { pass.pool.give(gradient) }
        if pass.weightGradients {
            try op.backwardWeights(input: input, outputGradient: gradient, weightGradient: weight.gradient,
                                   biasGradient: bias.gradient)
        }
        guard needsInputGradient else { return nil }
        let gx = try pass.pool.take(input.layout)
        try op.backwardData(outputGradient: gradient, weight: weight.value, inputGradient: gx)
        return gx
    }
}

/// Average or max pooling with a square window (ResNet's 4x4 average pool, VGG's 2x2 max pool).
public final class Pool2d: Module, Layer {
    public let geometry: PoolingGeometry
    private let backend: Backend
    private var op: PoolingKernel?
    private var output = OutputSlot()
    private var workspace = OutputSlot()

    public init(_ geometry: PoolingGeometry, on backend: Backend) {
        self.geometry = geometry
        self.backend = backend
    }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        let op = try backend.pooling(geometry, input: x.layout)
        self.op = op
        let y = try output.get(op.outputLayout, on: backend)
        try op.forward(input: x, output: y, workspace: op.workspaceLayout.map { try workspace.get($0, on: backend) })
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        guard let op else { throw ShapeError("\(name): backward before forward") }
        defer { pass.pool.give(gradient) }
        guard needsInputGradient else { return nil }
        let gx = try pass.pool.take(op.inputLayout)
        try op.backward(outputGradient: gradient, inputGradient: gx, workspace: workspace.tensor)
        return gx
    }
}
