import Backend
import CDNNL

/// out = a + b, optionally followed by ReLU (the residual join of a BasicBlock), and the ReLU
/// backward that uses the output.
final class AddReLU: AdditionKernel {
    struct Key: Hashable { var desc: MemoryDesc; var relu: Bool }
    let desc: MemoryDesc
    let relu: Bool
    private let addPrimitive: Primitive
    private var reluBackwardPrimitive: Primitive?
    private(set) lazy var layout: TensorLayout = desc.layout

    /// The ReLU as a separate in-place pass after a plain addition, where oneDNN's fused post-op
    /// would write out of bounds (`fusedReLUOverflows`); nil where the ReLU is fused.
    private let separateReLU: Primitive?

    /// oneDNN 2.6's AVX-512 binary kernel (`jit:uni`), given an eltwise post-op on a layout blocked
    /// by 8 channels (nChw8c: the layout of BackdoorLab's Winograd, see `WinogradConvolution`) with
    /// an odd number of 8-channel blocks (8, 24, 40, ... channels), writes (H W - 1) x 32 bytes past
    /// the end of its destination (measured on a Zen 5: 32,736 bytes at 32x32; no overflow with
    /// 16-channel blocks, an even block count, without the post-op, or capped at AVX2). That was
    /// issue 19's heap corruption when training a width-8 ResNet with our Winograd on AVX-512.
    static func fusedReLUOverflows(_ desc: MemoryDesc) -> Bool {
        guard OneDNN.hasAVX512, desc.raw.ndims >= 2, desc.raw.format_kind == dnnl_blocked else { return false }
        var blocking = desc.raw.format_desc.blocking
        let count = Int(blocking.inner_nblks)
        let (blocks, indices) = withUnsafeBytes(of: &blocking.inner_blks) { b in
            withUnsafeBytes(of: &blocking.inner_idxs) { i in
                (Array(b.bindMemory(to: Int64.self).prefix(count)), Array(i.bindMemory(to: Int64.self).prefix(count)))
            }
        }
        guard blocks.count == 1, blocks[0] == 8, indices[0] == 1 else { return false }
        let channels = desc.shape[1]
        return ((channels + 7) / 8) % 2 == 1
    }

    init(desc: MemoryDesc, relu: Bool) throws {
        self.desc = desc
        self.relu = relu
        let separate = relu && Self.fusedReLUOverflows(desc)
        if separate {
            var op = dnnl_eltwise_desc_t()
            var data = desc.raw
            try check(dnnl_eltwise_forward_desc_init(&op, dnnl_forward_training, dnnl_eltwise_relu, &data, 0, 0),
                      "relu \(desc)")
            separateReLU = try Primitive("relu \(desc)", opDesc: op)
        } else {
            separateReLU = nil
        }
        var op = dnnl_binary_desc_t()
        var a = desc.raw, b = desc.raw, out = desc.raw
        try check(dnnl_binary_desc_init(&op, dnnl_binary_add, &a, &b, &out), "add \(desc)")
        var attributes: dnnl_primitive_attr_t?
        var postOps: dnnl_post_ops_t?
        try check(dnnl_primitive_attr_create(&attributes), "attributes")
        defer { dnnl_primitive_attr_destroy(attributes) }
        if relu && !separate {
            try check(dnnl_post_ops_create(&postOps), "post ops")
            defer { dnnl_post_ops_destroy(postOps) }
            try check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "relu post op")
            try check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "set post ops")
        }
        addPrimitive = try Primitive("add\(relu ? "+relu" : "") \(desc)", opDesc: op, attributes: attributes)
    }

    func forward(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        let y = try output(out, desc, "add")
        try addPrimitive.execute([DNNL_ARG_SRC_0: argument(a, desc), DNNL_ARG_SRC_1: argument(b, desc), DNNL_ARG_DST: y])
        try separateReLU?.execute([DNNL_ARG_SRC: y, DNNL_ARG_DST: y])
    }

    /// The gradient may come in another layout than the output's (on AVX-512, a block whose main
    /// path ran our Winograd (nChw8c) gets its gradient from oneDNN's nChw16c kernels): it is
    /// computed in the output's layout and converted back.
    func reluBackward(output y: Tensor, outputGradient: Tensor, inputGradient: Tensor) throws {
        let primitive = try reluBackward()
        let dy = try argument(outputGradient, desc)
        try writing(inputGradient, in: desc) { dx in
            try primitive.execute([DNNL_ARG_DST: argument(y, desc), DNNL_ARG_DIFF_DST: dy, DNNL_ARG_DIFF_SRC: dx])
        }
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

/// Average pooling (padding excluded from the average, as PyTorch's avg_pool2d without padding)
/// and max pooling, square kernels.
final class Pooling: PoolingKernel {
    struct Key: Hashable { var src: MemoryDesc; var geometry: PoolingGeometry }
    let srcDesc, dstDesc: MemoryDesc
    let geometry: PoolingGeometry
    private let workspaceDesc: MemoryDesc?
    private let forwardPrimitive: Primitive
    private var backwardPrimitive: Primitive?

    private(set) lazy var inputLayout: TensorLayout = srcDesc.layout
    private(set) lazy var outputLayout: TensorLayout = dstDesc.layout
    private(set) lazy var workspaceLayout: TensorLayout? = workspaceDesc?.layout

    private var algorithm: dnnl_alg_kind_t {
        geometry.kind == .max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding
    }

    init(srcDesc: MemoryDesc, geometry: PoolingGeometry) throws {
        self.srcDesc = srcDesc
        self.geometry = geometry
        let s = srcDesc.shape
        let g = geometry
        let out = [s[0], s[1], (s[2] + 2 * g.padding - g.kernel) / g.stride + 1,
                   (s[3] + 2 * g.padding - g.kernel) / g.stride + 1]
        guard s.count == 4, out[2] >= 1, out[3] >= 1 else {
            throw BackendError(operation: "oneDNN: pool \(srcDesc) k\(g.kernel) s\(g.stride)", reason: "invalid geometry")
        }
        var op = dnnl_pooling_desc_t()
        var src = srcDesc.raw
        var dst = try MemoryDesc.any(out).raw
        let kind = g.kind == .max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding
        let status = Self.withGeometry(g) { k, stride, pad in
            dnnl_pooling_forward_desc_init(&op, dnnl_forward_training, kind, &src, &dst, stride, k, pad, pad)
        }
        let name = "\(g.kind) pool \(srcDesc) k\(g.kernel) s\(g.stride)"
        try check(status, name)
        forwardPrimitive = try Primitive(name, opDesc: op)
        dstDesc = forwardPrimitive.desc(dnnl_query_dst_md)
        let workspace = forwardPrimitive.desc(dnnl_query_workspace_md)
        workspaceDesc = workspace.byteCount > 0 ? workspace : nil
    }

    private static func withGeometry<R>(_ g: PoolingGeometry, _ body: (UnsafeMutablePointer<Int64>,
                                        UnsafeMutablePointer<Int64>, UnsafeMutablePointer<Int64>) -> R) -> R {
        withDims([g.kernel, g.kernel]) { k in
            withDims([g.stride, g.stride]) { stride in
                withDims([g.padding, g.padding]) { pad in body(k, stride, pad) }
            }
        }
    }

    func forward(input: Tensor, output y: Tensor, workspace: Tensor?) throws {
        var args = try [DNNL_ARG_SRC: argument(input, srcDesc), DNNL_ARG_DST: output(y, dstDesc, "pool forward")]
        if let workspace { args[DNNL_ARG_WORKSPACE] = try DNNLTensor.cast(workspace) }
        try forwardPrimitive.execute(args)
    }

    func backward(outputGradient: Tensor, inputGradient: Tensor, workspace: Tensor?) throws {
        let primitive = try backward()
        var args = try [DNNL_ARG_DIFF_DST: argument(outputGradient, dstDesc),
                        DNNL_ARG_DIFF_SRC: output(inputGradient, srcDesc, "pool backward")]
        if let workspace { args[DNNL_ARG_WORKSPACE] = try DNNLTensor.cast(workspace) }
        try primitive.execute(args)
    }

    private func backward() throws -> Primitive {
        if let p = backwardPrimitive { return p }
        var op = dnnl_pooling_desc_t()
        var diffSrc = srcDesc.raw, diffDst = dstDesc.raw
        let kind = algorithm
        let status = Self.withGeometry(geometry) { k, stride, pad in
            dnnl_pooling_backward_desc_init(&op, kind, &diffSrc, &diffDst, stride, k, pad, pad)
        }
        try check(status, "pool backward \(srcDesc)")
        let p = try Primitive("pool backward \(srcDesc)", opDesc: op, hint: forwardPrimitive)
        backwardPrimitive = p
        return p
    }
}
