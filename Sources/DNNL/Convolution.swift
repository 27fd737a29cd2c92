import CDNNL

/// 2-D convolution without bias: forward, backward to the input, backward to the weights.
/// Layouts are oneDNN's choice (blocked on this CPU); callers keep tensors in them.
public final class Convolution {
    /// How oneDNN computes the convolution. `auto` lets oneDNN 2.6 pick Winograd F(4x4, 3x3)
    /// where it has a kernel and judges it faster (AVX-512 CPUs, 3x3 stride 1, batches of about
    /// 64 and more: about twice the direct kernels' speed, forward and backward) and the direct
    /// kernels elsewhere (always on AVX2 CPUs). Winograd needs scratch memory of about two
    /// activations of the largest layer and rounds differently (relative differences near 1e-5).
    public enum Algorithm: String, CaseIterable, Hashable, Sendable {
        case direct, auto

        var raw: dnnl_alg_kind_t { self == .direct ? dnnl_convolution_direct : dnnl_convolution_auto }
    }

    public struct Config: Hashable, CustomStringConvertible {
        public var batch, inChannels, outChannels, height, width, kernel, stride, padding: Int
        public var algorithm: Algorithm
        public init(batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int,
                    kernel: Int, stride: Int, padding: Int, algorithm: Algorithm = .direct) {
            (self.batch, self.inChannels, self.outChannels) = (batch, inChannels, outChannels)
            (self.height, self.width, self.kernel, self.stride, self.padding) = (height, width, kernel, stride, padding)
            self.algorithm = algorithm
        }
        public var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
        public var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
        public var srcShape: [Int] { [batch, inChannels, height, width] }
        public var weightsShape: [Int] { [outChannels, inChannels, kernel, kernel] }
        public var dstShape: [Int] { [batch, outChannels, outHeight, outWidth] }
        public var description: String {
            "conv \(srcShape) -> \(dstShape) k\(kernel) s\(stride) p\(padding) \(algorithm)"
        }
    }

    public let config: Config
    public let srcDesc, weightsDesc, dstDesc: MemoryDesc
    private let forwardPrimitive: Primitive
    private var backwardDataPrimitive: Primitive?
    private var backwardWeightsPrimitive: Primitive?

    private static let cache = OpCache<Config, Convolution>()

    public static func get(_ config: Config) throws -> Convolution {
        try cache.get(config) { try Convolution(config) }
    }

    private init(_ config: Config) throws {
        self.config = config
        var desc = dnnl_convolution_desc_t()
        var src = try MemoryDesc.any(config.srcShape).raw
        var weights = try MemoryDesc.any(config.weightsShape).raw
        var dst = try MemoryDesc.any(config.dstShape).raw
        let status = Self.withGeometry(config) { strides, padding in
            dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, config.algorithm.raw,
                                               &src, &weights, nil, &dst, strides, padding, padding)
        }
        try check(status, "\(config) forward")
        forwardPrimitive = try Primitive("\(config) forward", opDesc: desc)
        srcDesc = forwardPrimitive.desc(dnnl_query_src_md)
        weightsDesc = forwardPrimitive.desc(dnnl_query_weights_md)
        dstDesc = forwardPrimitive.desc(dnnl_query_dst_md)
    }

    private func withGeometry<R>(_ body: (UnsafeMutablePointer<Int64>, UnsafeMutablePointer<Int64>) -> R) -> R {
        Self.withGeometry(config, body)
    }

    private static func withGeometry<R>(_ config: Config,
                                        _ body: (UnsafeMutablePointer<Int64>, UnsafeMutablePointer<Int64>) -> R) -> R {
        withDims([config.stride, config.stride]) { strides in
            withDims([config.padding, config.padding]) { padding in body(strides, padding) }
        }
    }

    public func forward(src: Tensor, weights: Tensor, dst: Tensor) throws {
        try forwardPrimitive.execute([
            DNNL_ARG_SRC: src.matching(srcDesc), DNNL_ARG_WEIGHTS: weights.matching(weightsDesc),
            DNNL_ARG_DST: dst,
        ])
    }

    /// Gradient with respect to the input.
    public func backwardData(diffDst: Tensor, weights: Tensor, diffSrc: Tensor) throws {
        let primitive = try backwardData()
        try primitive.execute([
            DNNL_ARG_DIFF_DST: diffDst.matching(primitive.desc(dnnl_query_diff_dst_md)),
            DNNL_ARG_WEIGHTS: weights.matching(primitive.desc(dnnl_query_weights_md)),
            DNNL_ARG_DIFF_SRC: diffSrc,
        ])
    }

    /// Gradient with respect to the weights, written in `weightsDesc`'s layout.
    public func backwardWeights(src: Tensor, diffDst: Tensor, diffWeights: Tensor) throws {
        let primitive = try backwardWeights()
        let chosen = primitive.desc(dnnl_query_diff_weights_md)
        let output = chosen == diffWeights.desc ? diffWeights : try Tensor(desc: chosen)
        try primitive.execute([
            DNNL_ARG_SRC: src.matching(primitive.desc(dnnl_query_src_md)),
            DNNL_ARG_DIFF_DST: diffDst.matching(primitive.desc(dnnl_query_diff_dst_md)),
            DNNL_ARG_DIFF_WEIGHTS: output,
        ])
        if output !== diffWeights { try output.reorder(into: diffWeights) }
    }

    /// The layout backward-data writes the input gradient in.
    public var diffSrcDesc: MemoryDesc {
        get throws { try backwardData().desc(dnnl_query_diff_src_md) }
    }

    private func backwardData() throws -> Primitive {
        if let p = backwardDataPrimitive { return p }
        var desc = dnnl_convolution_desc_t()
        // Left to the primitive: with the plain 3-channel layout of the network's input, oneDNN 2.6
        // falls back to its reference backward-data kernel (seconds per batch instead of ms).
        var diffSrc = try MemoryDesc.any(config.srcShape).raw
        var weights = try MemoryDesc.any(config.weightsShape).raw
        var diffDst = dstDesc.raw
        let status = withGeometry { strides, padding in
            dnnl_convolution_backward_data_desc_init(&desc, config.algorithm.raw, &diffSrc, &weights, &diffDst,
                                                     strides, padding, padding)
        }
        try check(status, "\(config) backward data")
        let p = try Primitive("\(config) backward data", opDesc: desc, hint: forwardPrimitive)
        backwardDataPrimitive = p
        return p
    }

    private func backwardWeights() throws -> Primitive {
        if let p = backwardWeightsPrimitive { return p }
        // With few input channels the forward keeps the input plain, and oneDNN 2.6 then offers
        // only its reference backward-weights kernel; a blocked input (reordered per call) is
        // far cheaper, so layouts are tried in order until an optimised kernel is found.
        let candidates: [MemoryDesc] = try [srcDesc, .any(config.srcShape),
                                             MemoryDesc(shape: config.srcShape, tag: dnnl_nChw16c),
                                             MemoryDesc(shape: config.srcShape, tag: dnnl_nChw8c)]
        var chosen: Primitive?
        for candidate in candidates {
            var desc = dnnl_convolution_desc_t()
            var src = candidate.raw
            var diffWeights = try MemoryDesc.any(config.weightsShape).raw
            var diffDst = try MemoryDesc.any(config.dstShape).raw
            let status = withGeometry { strides, padding in
                dnnl_convolution_backward_weights_desc_init(&desc, config.algorithm.raw, &src, &diffWeights, nil,
                                                            &diffDst, strides, padding, padding)
            }
            try check(status, "\(config) backward weights")
            guard let p = try? Primitive("\(config) backward weights", opDesc: desc, hint: forwardPrimitive) else { continue }
            chosen = chosen ?? p
            if !p.isReference {
                chosen = p
                break
            }
        }
        guard let p = chosen else { throw DNNLError(operation: "\(config) backward weights", status: "no implementation") }
        backwardWeightsPrimitive = p
        return p
    }

    /// Implementation names of the forward, backward-data and backward-weights kernels.
    public func implementations() throws -> [String] {
        [forwardPrimitive.implementation, try backwardData().implementation, try backwardWeights().implementation]
    }
}
