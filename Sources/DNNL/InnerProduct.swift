import CDNNL

/// Fully connected layer with bias. The input may be a blocked N x C x 1 x 1 activation; the
/// weights then take a matching 4-D blocked layout (O x I x 1 x 1), the output is plain N x O.
public final class InnerProduct {
    struct Key: Hashable { var src: String; var outputs: Int }
    public let srcDesc, weightsDesc, biasDesc, dstDesc: MemoryDesc
    public let outputs: Int
    private let forwardPrimitive: Primitive
    private var backwardDataPrimitive: Primitive?
    private var backwardWeightsPrimitive: Primitive?
    private static let cache = OpCache<Key, InnerProduct>()

    public static func get(srcDesc: MemoryDesc, outputs: Int) throws -> InnerProduct {
        try cache.get(Key(src: srcDesc.layoutKey, outputs: outputs)) { try InnerProduct(srcDesc: srcDesc, outputs: outputs) }
    }

    /// Plain shape of the weights as this op stores them: O x I (x 1 x 1 for 4-D input).
    public var weightsShape: [Int] { weightsDesc.shape }

    private init(srcDesc: MemoryDesc, outputs: Int) throws {
        self.srcDesc = srcDesc
        self.outputs = outputs
        let s = srcDesc.shape
        var op = dnnl_inner_product_desc_t()
        var src = srcDesc.raw
        var weights = try MemoryDesc.any([outputs] + s.dropFirst()).raw
        var bias = try MemoryDesc(shape: [outputs], layout: .x).raw
        var dst = try MemoryDesc(shape: [s[0], outputs], layout: .nc).raw
        try check(dnnl_inner_product_forward_desc_init(&op, dnnl_forward_training, &src, &weights, &bias, &dst),
                  "inner product \(srcDesc) -> \(outputs)")
        forwardPrimitive = try Primitive("inner product \(srcDesc)", opDesc: op)
        weightsDesc = forwardPrimitive.desc(dnnl_query_weights_md)
        biasDesc = forwardPrimitive.desc(dnnl_query_weights_md, 1)
        dstDesc = forwardPrimitive.desc(dnnl_query_dst_md)
    }

    public func forward(src: Tensor, weights: Tensor, bias: Tensor, dst: Tensor) throws {
        try forwardPrimitive.execute([DNNL_ARG_SRC: src.matching(srcDesc), DNNL_ARG_WEIGHTS: weights,
                                      DNNL_ARG_BIAS: bias, DNNL_ARG_DST: dst])
    }

    public func backwardData(diffDst: Tensor, weights: Tensor, diffSrc: Tensor) throws {
        let primitive = try backwardData()
        try primitive.execute([
            DNNL_ARG_DIFF_DST: diffDst.matching(primitive.desc(dnnl_query_diff_dst_md)),
            DNNL_ARG_WEIGHTS: weights.matching(primitive.desc(dnnl_query_weights_md)),
            DNNL_ARG_DIFF_SRC: diffSrc,
        ])
    }

    public func backwardWeights(src: Tensor, diffDst: Tensor, diffWeights: Tensor, diffBias: Tensor) throws {
        let primitive = try backwardWeights()
        let chosen = primitive.desc(dnnl_query_diff_weights_md)
        let output = chosen == diffWeights.desc ? diffWeights : try Tensor(desc: chosen)
        try primitive.execute([
            DNNL_ARG_SRC: src.matching(primitive.desc(dnnl_query_src_md)),
            DNNL_ARG_DIFF_DST: diffDst.matching(primitive.desc(dnnl_query_diff_dst_md)),
            DNNL_ARG_DIFF_WEIGHTS: output, DNNL_ARG_DIFF_BIAS: diffBias,
        ])
        if output !== diffWeights { try output.reorder(into: diffWeights) }
    }

    private func backwardData() throws -> Primitive {
        if let p = backwardDataPrimitive { return p }
        var op = dnnl_inner_product_desc_t()
        var diffSrc = srcDesc.raw
        var weights = try MemoryDesc.any(weightsShape).raw
        var diffDst = dstDesc.raw
        try check(dnnl_inner_product_backward_data_desc_init(&op, &diffSrc, &weights, &diffDst),
                  "inner product backward data \(srcDesc)")
        let p = try Primitive("inner product backward data", opDesc: op, hint: forwardPrimitive)
        backwardDataPrimitive = p
        return p
    }

    private func backwardWeights() throws -> Primitive {
        if let p = backwardWeightsPrimitive { return p }
        var op = dnnl_inner_product_desc_t()
        var src = srcDesc.raw
        var diffWeights = try MemoryDesc.any(weightsShape).raw
        var diffBias = biasDesc.raw
        var diffDst = dstDesc.raw
        try check(dnnl_inner_product_backward_weights_desc_init(&op, &src, &diffWeights, &diffBias, &diffDst),
                  "inner product backward weights \(srcDesc)")
        let p = try Primitive("inner product backward weights", opDesc: op, hint: forwardPrimitive)
        backwardWeightsPrimitive = p
        return p
    }
}
