import Backend
import CDNNL

/// Fully connected layer with bias. The input may be a blocked N x C x 1 x 1 activation; the
/// weights then take a matching 4-D blocked layout (O x I x 1 x 1), the output is plain N x O.
final class InnerProduct: LinearKernel {
    struct Key: Hashable { var src: MemoryDesc; var outputs: Int }
    let srcDesc, weightsDesc, biasDesc, dstDesc: MemoryDesc
    let outputs: Int
    private let forwardPrimitive: Primitive
    private var backwardDataPrimitive: Primitive?
    private var backwardWeightsPrimitive: Primitive?

    private(set) lazy var inputLayout: TensorLayout = srcDesc.layout
    private(set) lazy var weightLayout: TensorLayout = weightsDesc.layout
    private(set) lazy var outputLayout: TensorLayout = dstDesc.layout
    private var weightsShape: [Int] { weightsDesc.shape }

    init(srcDesc: MemoryDesc, outputs: Int) throws {
        self.srcDesc = srcDesc
        self.outputs = outputs
        let s = srcDesc.shape
        var op = dnnl_inner_product_desc_t()
        var src = srcDesc.raw
        var weights = try MemoryDesc.any([outputs] + s.dropFirst()).raw
        var bias = try MemoryDesc.plain([outputs]).raw
        var dst = try MemoryDesc.plain([s[0], outputs]).raw
        try check(dnnl_inner_product_forward_desc_init(&op, dnnl_forward_training, &src, &weights, &bias, &dst),
                  "inner product \(srcDesc) -> \(outputs)")
        forwardPrimitive = try Primitive("inner product \(srcDesc)", opDesc: op)
        weightsDesc = forwardPrimitive.desc(dnnl_query_weights_md)
        biasDesc = forwardPrimitive.desc(dnnl_query_weights_md, 1)
        dstDesc = forwardPrimitive.desc(dnnl_query_dst_md)
    }

    func forward(input: Tensor, weight: Tensor, bias: Tensor, output y: Tensor) throws {
        try forwardPrimitive.execute([DNNL_ARG_SRC: argument(input, srcDesc), DNNL_ARG_WEIGHTS: argument(weight, weightsDesc),
                                      DNNL_ARG_BIAS: argument(bias, biasDesc),
                                      DNNL_ARG_DST: output(y, dstDesc, "inner product forward")])
    }

    func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws {
        let primitive = try backwardData()
        try primitive.execute([
            DNNL_ARG_DIFF_DST: argument(outputGradient, primitive.desc(dnnl_query_diff_dst_md)),
            DNNL_ARG_WEIGHTS: argument(weight, primitive.desc(dnnl_query_weights_md)),
            DNNL_ARG_DIFF_SRC: output(inputGradient, primitive.desc(dnnl_query_diff_src_md), "inner product backward data"),
        ])
    }

    func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor) throws {
        let primitive = try backwardWeights()
        try writing(weightGradient, in: primitive.desc(dnnl_query_diff_weights_md)) { diffWeights in
            try primitive.execute([
                DNNL_ARG_SRC: argument(input, primitive.desc(dnnl_query_src_md)),
                DNNL_ARG_DIFF_DST: argument(outputGradient, primitive.desc(dnnl_query_diff_dst_md)),
                DNNL_ARG_DIFF_WEIGHTS: diffWeights, DNNL_ARG_DIFF_BIAS: DNNLTensor.cast(biasGradient),
            ])
        }
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
