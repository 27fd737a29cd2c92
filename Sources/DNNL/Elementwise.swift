import CDNNL

/// out = a + b, optionally followed by ReLU (the residual join of a BasicBlock), and the ReLU
/// backward that uses the output.
public final class AddReLU {
    struct Key: Hashable { var desc: String; var relu: Bool }
    public let desc: MemoryDesc
    public let relu: Bool
    private let addPrimitive: Primitive
    private var reluBackwardPrimitive: Primitive?
    private static let cache = OpCache<Key, AddReLU>()

    public static func get(desc: MemoryDesc, relu: Bool) throws -> AddReLU {
        try cache.get(Key(desc: desc.layoutKey, relu: relu)) { try AddReLU(desc: desc, relu: relu) }
    }

    private init(desc: MemoryDesc, relu: Bool) throws {
        self.desc = desc
        self.relu = relu
        var op = dnnl_binary_desc_t()
        var a = desc.raw, b = desc.raw, out = desc.raw
        try check(dnnl_binary_desc_init(&op, dnnl_binary_add, &a, &b, &out), "add \(desc)")
        var attributes: dnnl_primitive_attr_t?
        var postOps: dnnl_post_ops_t?
        try check(dnnl_primitive_attr_create(&attributes), "attributes")
        defer { dnnl_primitive_attr_destroy(attributes) }
        if relu {
            try check(dnnl_post_ops_create(&postOps), "post ops")
            defer { dnnl_post_ops_destroy(postOps) }
            try check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "relu post op")
            try check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "set post ops")
        }
        addPrimitive = try Primitive("add\(relu ? "+relu" : "") \(desc)", opDesc: op, attributes: attributes)
    }

    public func forward(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        try addPrimitive.execute([DNNL_ARG_SRC_0: a.matching(desc), DNNL_ARG_SRC_1: b.matching(desc),
                                  DNNL_ARG_DST: out])
    }

    /// Gradient through the ReLU given its output `dst`.
    public func reluBackward(dst: Tensor, diffDst: Tensor, diffSrc: Tensor) throws {
        let primitive = try reluBackward()
        try primitive.execute([DNNL_ARG_DST: dst, DNNL_ARG_DIFF_DST: diffDst.matching(desc),
                               DNNL_ARG_DIFF_SRC: diffSrc])
    }

    private func reluBackward() throws -> Primitive {
        if let p = reluBackwardPrimitive { return p }
        var forwardDesc = dnnl_eltwise_desc_t()
        var data = desc.raw
        try check(dnnl_eltwise_forward_desc_init(&forwardDesc, dnnl_forward_training,
                                                 dnnl_eltwise_relu_use_dst_for_bwd, &data, 0, 0), "relu \(desc)")
        let hint = try Primitive("relu forward \(desc)", opDesc: forwardDesc)
        var backwardDesc = dnnl_eltwise_desc_t()
        var diff = desc.raw
        try check(dnnl_eltwise_backward_desc_init(&backwardDesc, dnnl_eltwise_relu_use_dst_for_bwd, &diff, &data,
                                                  0, 0), "relu backward \(desc)")
        let p = try Primitive("relu backward \(desc)", opDesc: backwardDesc, hint: hint)
        reluBackwardPrimitive = p
        return p
    }
}

/// Average pooling with a square kernel equal to its stride (the 4x4 pool before the classifier).
public final class AveragePooling {
    struct Key: Hashable { var src: String; var kernel: Int }
    public let srcDesc, dstDesc: MemoryDesc
    public let kernel: Int
    private let forwardPrimitive: Primitive
    private var backwardPrimitive: Primitive?
    private static let cache = OpCache<Key, AveragePooling>()

    public static func get(srcDesc: MemoryDesc, kernel: Int) throws -> AveragePooling {
        try cache.get(Key(src: srcDesc.layoutKey, kernel: kernel)) { try AveragePooling(srcDesc: srcDesc, kernel: kernel) }
    }

    private init(srcDesc: MemoryDesc, kernel: Int) throws {
        self.srcDesc = srcDesc
        self.kernel = kernel
        let s = srcDesc.shape
        var op = dnnl_pooling_desc_t()
        var src = srcDesc.raw
        var dst = try MemoryDesc.any([s[0], s[1], s[2] / kernel, s[3] / kernel]).raw
        let status = withDims([kernel, kernel]) { k in
            withDims([0, 0]) { pad in
                dnnl_pooling_forward_desc_init(&op, dnnl_forward_training, dnnl_pooling_avg_exclude_padding, &src,
                                               &dst, k, k, pad, pad)
            }
        }
        try check(status, "average pool \(srcDesc) k\(kernel)")
        forwardPrimitive = try Primitive("average pool \(srcDesc)", opDesc: op)
        dstDesc = forwardPrimitive.desc(dnnl_query_dst_md)
    }

    public func forward(src: Tensor, dst: Tensor) throws {
        try forwardPrimitive.execute([DNNL_ARG_SRC: src.matching(srcDesc), DNNL_ARG_DST: dst])
    }

    public func backward(diffDst: Tensor, diffSrc: Tensor) throws {
        let primitive = try backward()
        try primitive.execute([DNNL_ARG_DIFF_DST: diffDst.matching(dstDesc), DNNL_ARG_DIFF_SRC: diffSrc])
    }

    private func backward() throws -> Primitive {
        if let p = backwardPrimitive { return p }
        var op = dnnl_pooling_desc_t()
        var diffSrc = srcDesc.raw, diffDst = dstDesc.raw
        let status = withDims([kernel, kernel]) { k in
            withDims([0, 0]) { pad in
                dnnl_pooling_backward_desc_init(&op, dnnl_pooling_avg_exclude_padding, &diffSrc, &diffDst, k, k,
                                                pad, pad)
            }
        }
        try check(status, "average pool backward \(srcDesc)")
        let p = try Primitive("average pool backward \(srcDesc)", opDesc: op, hint: forwardPrimitive)
        backwardPrimitive = p
        return p
    }
}
