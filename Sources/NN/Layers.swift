import DNNL
import Support

/// Whether BatchNorm uses batch statistics (and updates its running ones) or running statistics.
public enum Mode {
    case training
    case evaluation
}

/// Holds a layer's output tensor, reallocated only when the layout changes (new batch size).
struct OutputSlot {
    private(set) var tensor: Tensor?
    mutating func get(_ desc: MemoryDesc) throws -> Tensor {
        if let tensor, tensor.desc == desc { return tensor }
        let t = try Tensor(desc: desc)
        tensor = t
        return t
    }
}

/// 2-D convolution without bias (kaiming-uniform init with a = sqrt(5), as PyTorch).
final class Conv2d {
    let weight: Parameter
    let inChannels, outChannels, kernel, stride, padding: Int
    var algorithm = Convolution.Algorithm.auto
    private var input: Tensor?
    private var op: Convolution?
    private var output = OutputSlot()

    init(name: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int,
         generator: inout SeededGenerator) throws {
        (self.inChannels, self.outChannels, self.kernel, self.stride, self.padding) =
            (inChannels, outChannels, kernel, stride, padding)
        let fanIn = inChannels * kernel * kernel
        let bound = 1 / Float(fanIn).squareRoot()
        let count = outChannels * fanIn
        let values = (0..<count).map { _ in (generator.nextFloat() * 2 - 1) * bound }
        weight = try Parameter(name: name + ".weight", plainShape: [outChannels, inChannels, kernel, kernel],
                               values: values)
    }

    func forward(_ x: Tensor) throws -> Tensor {
        let s = x.shape
        let op = try Convolution.get(.init(batch: s[0], inChannels: inChannels, outChannels: outChannels,
                                           height: s[2], width: s[3], kernel: kernel, stride: stride,
                                           padding: padding, algorithm: algorithm))
        self.op = op
        try weight.adopt(op.weightsDesc)
        let src = try x.reordered(to: op.srcDesc)
        input = src
        let y = try output.get(op.dstDesc)
        try op.forward(src: src, weights: weight.value, dst: y)
        return y
    }

    /// Writes (not accumulates) the weight gradient when `weightGradients`; returns the input
    /// gradient, in a buffer taken from `pool`, when `wantInputGradient`.
    func backward(_ gy: Tensor, weightGradients: Bool, wantInputGradient: Bool, pool: TensorPool) throws -> Tensor? {
        guard let op, let input else { throw ShapeError("conv backward before forward") }
        if weightGradients {
            try op.backwardWeights(src: input, diffDst: gy, diffWeights: weight.gradient)
        }
        guard wantInputGradient else { return nil }
        let gx = try pool.take(op.diffSrcDesc)
        try op.backwardData(diffDst: gy, weights: weight.value, diffSrc: gx)
        return gx
    }
}

/// BatchNorm2d (eps 1e-5, momentum 0.1, unbiased running variance as PyTorch), optionally with
/// the following ReLU fused. `scaleOverride`/`shiftOverride` replace weight and bias in the
/// computation (the ANP defense's masked and perturbed parameters); the gradients written to
/// `weight.gradient`/`bias.gradient` are then those of the effective scale and shift.
public final class BatchNorm2d {
    public let name: String
    public let channels: Int
    public let weight, bias: Parameter
    public let runningMean, runningVar: Tensor
    public internal(set) var batchesTracked: Int64 = 0
    let fuseReLU: Bool
    public var momentum: Float = 0.1
    public var scaleOverride: Tensor?
    public var shiftOverride: Tensor?

    private var op: BatchNormalization?
    private var input: Tensor?
    private var mean: Tensor, variance: Tensor
    private var workspace = OutputSlot()
    private var output = OutputSlot()

    init(name: String, channels: Int, fuseReLU: Bool) throws {
        self.name = name
        self.channels = channels
        self.fuseReLU = fuseReLU
        weight = try Parameter(name: name + ".weight", plainShape: [channels], values: .init(repeating: 1, count: channels))
        bias = try Parameter(name: name + ".bias", plainShape: [channels], values: .init(repeating: 0, count: channels))
        runningMean = try Tensor(shape: [channels], values: .init(repeating: 0, count: channels))
        runningVar = try Tensor(shape: [channels], values: .init(repeating: 1, count: channels))
        mean = try Tensor(shape: [channels], values: .init(repeating: 0, count: channels))
        variance = try Tensor(shape: [channels], values: .init(repeating: 1, count: channels))
    }

    /// With `transientPool`, the output is a buffer from that pool which the caller gives back
    /// once consumed (BN backward needs the input, never the output).
    func forward(_ x: Tensor, mode: Mode, transientPool: TensorPool? = nil) throws -> Tensor {
        let op = try BatchNormalization.get(dataDesc: x.desc, fuseReLU: fuseReLU, useGlobalStats: mode == .evaluation)
        self.op = op
        input = x
        let y = try transientPool?.take(x.desc) ?? output.get(x.desc)
        let ws = try op.workspaceDesc.map { try workspace.get($0) }
        let statsMean = mode == .evaluation ? runningMean : mean
        let statsVar = mode == .evaluation ? runningVar : variance
        try op.forward(src: x, scale: scaleOverride ?? weight.value, shift: shiftOverride ?? bias.value,
                       mean: statsMean, variance: statsVar, dst: y, workspace: ws)
        if mode == .training { updateRunningStatistics(count: x.shape[0] * x.shape[2] * x.shape[3]) }
        return y
    }

    private func updateRunningStatistics(count: Int) {
        batchesTracked += 1
        let unbias = count > 1 ? Float(count) / Float(count - 1) : 1
        let m = momentum
        mean.withStorage { batchMean in
            runningMean.withStorage { running in
                for c in 0..<channels { running[c] = (1 - m) * running[c] + m * batchMean[c] }
            }
        }
        variance.withStorage { batchVar in
            runningVar.withStorage { running in
                for c in 0..<channels { running[c] = (1 - m) * running[c] + m * batchVar[c] * unbias }
            }
        }
    }

    /// Writes the scale and shift gradients and returns the input gradient: in `gy` itself when
    /// `inPlace` (oneDNN allows it), else in a buffer taken from `pool`.
    func backward(_ gy: Tensor, inPlace: Bool, pool: TensorPool) throws -> Tensor {
        guard let op, let input else { throw ShapeError("\(name): backward before forward") }
        let gx = inPlace && gy.desc == input.desc ? gy : try pool.take(input.desc)
        let statsMean = op.useGlobalStats ? runningMean : mean
        let statsVar = op.useGlobalStats ? runningVar : variance
        try op.backward(src: input, diffDst: gy, scale: scaleOverride ?? weight.value,
                        shift: shiftOverride ?? bias.value, mean: statsMean, variance: statsVar,
                        workspace: workspace.tensor, diffSrc: gx, diffScale: weight.gradient,
                        diffShift: bias.gradient)
        return gx
    }
}

/// Linear layer with bias on the pooled N x C x 1 x 1 activation (PyTorch's default init).
final class Linear {
    let weight, bias: Parameter
    let inFeatures, outFeatures: Int
    private var op: InnerProduct?
    private var input: Tensor?
    private var output = OutputSlot()

    init(name: String, inFeatures: Int, outFeatures: Int, generator: inout SeededGenerator) throws {
        (self.inFeatures, self.outFeatures) = (inFeatures, outFeatures)
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = (0..<(inFeatures * outFeatures)).map { _ in (generator.nextFloat() * 2 - 1) * bound }
        let b = (0..<outFeatures).map { _ in (generator.nextFloat() * 2 - 1) * bound }
        weight = try Parameter(name: name + ".weight", plainShape: [outFeatures, inFeatures],
                               storageShape: [outFeatures, inFeatures, 1, 1], values: w)
        bias = try Parameter(name: name + ".bias", plainShape: [outFeatures], values: b)
    }

    func forward(_ x: Tensor) throws -> Tensor {
        let op = try InnerProduct.get(srcDesc: x.desc, outputs: outFeatures)
        self.op = op
        try weight.adopt(op.weightsDesc)
        input = x
        let y = try output.get(op.dstDesc)
        try op.forward(src: x, weights: weight.value.reordered(to: op.weightsDesc), bias: bias.value, dst: y)
        return y
    }

    func backward(_ gy: Tensor, weightGradients: Bool, pool: TensorPool) throws -> Tensor {
        guard let op, let input else { throw ShapeError("linear backward before forward") }
        if weightGradients {
            try op.backwardWeights(src: input, diffDst: gy, diffWeights: weight.gradient, diffBias: bias.gradient)
        }
        let gx = try pool.take(input.desc)
        try op.backwardData(diffDst: gy, weights: weight.value, diffSrc: gx)
        return gx
    }
}
