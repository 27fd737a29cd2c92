import Backend
import CDNNL

/// How convolutions are computed.
/// - `direct`: oneDNN's direct kernels.
/// - `auto`: per layer shape and pass, the fastest on this machine of oneDNN's direct kernel,
///   oneDNN's own Winograd F(4x4, 3x3) where it has one (AVX-512 CPUs, 3x3 stride 1, batches of
///   about 64 and more; about two activations of scratch), and this backend's Winograd (3x3
///   stride-1 layers, AVX2): timed once, then kept per machine (`TimedConvolution`,
///   `ConvolutionChoices`) so that reruns compute alike. Direct unless another is 5% faster.
/// - `winograd`: this backend's Winograd wherever it applies, oneDNN's direct kernels elsewhere.
/// Winograd rounds differently from direct (relative differences near 1e-5, see the tests).
public enum ConvolutionAlgorithm: String, CaseIterable, Hashable, Sendable {
    case direct, auto, winograd

    var raw: dnnl_alg_kind_t { self == .auto ? dnnl_convolution_auto : dnnl_convolution_direct }
}

/// 2-D convolution (groups, optional bias): forward, backward to the input, backward to the
/// weights. Layouts are oneDNN's choice (blocked on this CPU); callers keep tensors in them.
final class Convolution: ConvolutionKernel {
    struct Key: Hashable {
        var geometry: ConvolutionGeometry
        var algorithm: ConvolutionAlgorithm
    }

    let geometry: ConvolutionGeometry
    let algorithm: ConvolutionAlgorithm
    let srcDesc, weightsDesc, dstDesc: MemoryDesc
    let biasDesc: MemoryDesc?
    private let forwardPrimitive: Primitive
    private var backwardDataPrimitive: Primitive?
    private var backwardWeightsPrimitive: Primitive?

    private(set) lazy var inputLayout: TensorLayout = srcDesc.layout
    private(set) lazy var weightLayout: TensorLayout = weightsDesc.layout
    private(set) lazy var outputLayout: TensorLayout = dstDesc.layout

    /// oneDNN's weight shape: O x I x k x k, or G x O/G x I/G x k x k with groups (the same
    /// element order as PyTorch's O x I/G x k x k).
    static func weightShape(_ g: ConvolutionGeometry) -> [Int] {
        g.groups == 1 ? g.weightShape
            : [g.groups, g.outChannels / g.groups, g.inChannels / g.groups, g.kernel, g.kernel]
    }

    init(_ geometry: ConvolutionGeometry, algorithm: ConvolutionAlgorithm) throws {
        let g = geometry
        guard g.groups >= 1, g.inChannels % g.groups == 0, g.outChannels % g.groups == 0,
              g.outHeight >= 1, g.outWidth >= 1, g.batch >= 1 else {
            throw BackendError(operation: "oneDNN: \(g)", reason: "invalid geometry")
        }
        self.geometry = geometry
        self.algorithm = algorithm
        var desc = dnnl_convolution_desc_t()
        var src = try MemoryDesc.any(g.inputShape).raw
        var weights = try MemoryDesc.any(Self.weightShape(g)).raw
        var bias = try MemoryDesc.any([g.outChannels]).raw
        var dst = try MemoryDesc.any(g.outputShape).raw
        let status = Self.withGeometry(g) { strides, padding in
            withUnsafeMutablePointer(to: &bias) { biasPointer in
                dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, algorithm.raw, &src, &weights,
                                                   g.bias ? biasPointer : nil, &dst, strides, padding, padding)
            }
        }
        let name = "\(g) \(algorithm)"
        try check(status, "\(name) forward")
        forwardPrimitive = try Primitive("\(name) forward", opDesc: desc)
        srcDesc = forwardPrimitive.desc(dnnl_query_src_md)
        weightsDesc = forwardPrimitive.desc(dnnl_query_weights_md)
        biasDesc = g.bias ? forwardPrimitive.desc(dnnl_query_weights_md, 1) : nil
        dstDesc = forwardPrimitive.desc(dnnl_query_dst_md)
    }

    private static func withGeometry<R>(_ g: ConvolutionGeometry,
                                        _ body: (UnsafeMutablePointer<Int64>, UnsafeMutablePointer<Int64>) -> R) -> R {
        withDims([g.stride, g.stride]) { strides in
            withDims([g.padding, g.padding]) { padding in body(strides, padding) }
        }
    }

    func forward(input: Tensor, weight: Tensor, bias: Tensor?, output y: Tensor) throws {
        var args = try [DNNL_ARG_SRC: argument(input, srcDesc), DNNL_ARG_WEIGHTS: argument(weight, weightsDesc),
                        DNNL_ARG_DST: output(y, dstDesc, "\(geometry) forward")]
        if let biasDesc {
            guard let bias else { throw BackendError(operation: "oneDNN: \(geometry)", reason: "bias missing") }
            args[DNNL_ARG_BIAS] = try argument(bias, biasDesc)
        }
        try forwardPrimitive.execute(args)
    }

    func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws {
        let primitive = try backwardData()
        try primitive.execute([
            DNNL_ARG_DIFF_DST: argument(outputGradient, primitive.desc(dnnl_query_diff_dst_md)),
            DNNL_ARG_WEIGHTS: argument(weight, primitive.desc(dnnl_query_weights_md)),
            DNNL_ARG_DIFF_SRC: output(inputGradient, primitive.desc(dnnl_query_diff_src_md), "\(geometry) backward data"),
        ])
    }

    func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor?) throws {
        let primitive = try backwardWeights()
        let args = try [DNNL_ARG_SRC: argument(input, primitive.desc(dnnl_query_src_md)),
                        DNNL_ARG_DIFF_DST: argument(outputGradient, primitive.desc(dnnl_query_diff_dst_md))]
        try writing(weightGradient, in: primitive.desc(dnnl_query_diff_weights_md)) { diffWeights in
            guard geometry.bias else {
                return try primitive.execute(args.merging([DNNL_ARG_DIFF_WEIGHTS: diffWeights]) { $1 })
            }
            guard let biasGradient else {
                throw BackendError(operation: "oneDNN: \(geometry)", reason: "bias gradient missing")
            }
            try writing(biasGradient, in: primitive.desc(dnnl_query_diff_weights_md, 1)) { diffBias in
                try primitive.execute(args.merging([DNNL_ARG_DIFF_WEIGHTS: diffWeights, DNNL_ARG_DIFF_BIAS: diffBias]) { $1 })
            }
        }
    }

    func inputGradientLayout() throws -> TensorLayout {
        if let layout = cachedInputGradientLayout { return layout }
        let layout = try backwardData().desc(dnnl_query_diff_src_md).layout
        cachedInputGradientLayout = layout
        return layout
    }
    /// Layouts are compared on every call; building one costs a oneDNN descriptor comparison.
    private var cachedInputGradientLayout: TensorLayout?

    private func backwardData() throws -> Primitive {
        if let p = backwardDataPrimitive { return p }
        var desc = dnnl_convolution_desc_t()
        // Left to the primitive: with the plain 3-channel layout of the network's input, oneDNN 2.6
        // falls back to its reference backward-data kernel (seconds per batch instead of ms).
        var diffSrc = try MemoryDesc.any(geometry.inputShape).raw
        var weights = try MemoryDesc.any(Self.weightShape(geometry)).raw
        var diffDst = dstDesc.raw
        let status = Self.withGeometry(geometry) { strides, padding in
            dnnl_convolution_backward_data_desc_init(&desc, algorithm.raw, &diffSrc, &weights, &diffDst,
                                                     strides, padding, padding)
        }
        try check(status, "\(geometry) backward data")
        let p = try Primitive("\(geometry) backward data", opDesc: desc, hint: forwardPrimitive)
        backwardDataPrimitive = p
        return p
    }

    private func backwardWeights() throws -> Primitive {
        if let p = backwardWeightsPrimitive { return p }
        // With few input channels the forward keeps the input plain, and oneDNN 2.6 then offers
        // only its reference backward-weights kernel; a blocked input (reordered per call) is
        // far cheaper, so layouts are tried in order until an optimised kernel is found.
        let shape = geometry.inputShape
        let candidates: [MemoryDesc] = try [srcDesc, .any(shape), MemoryDesc(shape: shape, tag: dnnl_nChw16c),
                                             MemoryDesc(shape: shape, tag: dnnl_nChw8c)]
        var chosen: Primitive?
        for candidate in candidates {
            var desc = dnnl_convolution_desc_t()
            var src = candidate.raw
            var diffWeights = try MemoryDesc.any(Self.weightShape(geometry)).raw
            var diffBias = try MemoryDesc.any([geometry.outChannels]).raw
            var diffDst = try MemoryDesc.any(geometry.outputShape).raw
            let status = Self.withGeometry(geometry) { strides, padding in
                withUnsafeMutablePointer(to: &diffBias) { biasPointer in
                    dnnl_convolution_backward_weights_desc_init(&desc, algorithm.raw, &src, &diffWeights,
                                                                geometry.bias ? biasPointer : nil, &diffDst, strides,
                                                                padding, padding)
                }
            }
            try check(status, "\(geometry) backward weights")
            guard let p = try? Primitive("\(geometry) backward weights", opDesc: desc, hint: forwardPrimitive) else { continue }
            chosen = chosen ?? p
            if !p.isReference {
                chosen = p
                break
            }
        }
        guard let p = chosen else {
            throw BackendError(operation: "oneDNN: \(geometry) backward weights", reason: "no implementation")
        }
        backwardWeightsPrimitive = p
        return p
    }

    func implementations() throws -> [String] {
        [forwardPrimitive.implementation, try backwardData().implementation, try backwardWeights().implementation]
    }
}
