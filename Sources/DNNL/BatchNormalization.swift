import CDNNL

/// BatchNorm2d with separate scale and shift (optionally fused with a following ReLU).
/// `useGlobalStats` normalises with given mean/variance (eval mode); otherwise batch statistics
/// are computed and returned. Backward always yields the scale and shift gradients (cheap, and
/// the ANP defense needs them).
public final class BatchNormalization {
    public struct Config: Hashable {
        public var dataKey: String
        public var fuseReLU: Bool
        public var useGlobalStats: Bool
    }

    public static let epsilon: Float = 1e-5
    public let dataDesc: MemoryDesc
    public let fuseReLU: Bool
    public let useGlobalStats: Bool
    private let forwardPrimitive: Primitive
    private var backwardPrimitive: Primitive?
    public let workspaceDesc: MemoryDesc?

    private static let cache = OpCache<Config, BatchNormalization>()

    /// `dataDesc` is the layout of the input (the output uses the same).
    public static func get(dataDesc: MemoryDesc, fuseReLU: Bool, useGlobalStats: Bool) throws -> BatchNormalization {
        try cache.get(Config(dataKey: dataDesc.layoutKey, fuseReLU: fuseReLU, useGlobalStats: useGlobalStats)) {
            try BatchNormalization(dataDesc: dataDesc, fuseReLU: fuseReLU, useGlobalStats: useGlobalStats)
        }
    }

    private init(dataDesc: MemoryDesc, fuseReLU: Bool, useGlobalStats: Bool) throws {
        self.dataDesc = dataDesc
        self.fuseReLU = fuseReLU
        self.useGlobalStats = useGlobalStats
        var data = dataDesc.raw
        let name = "batch norm \(dataDesc)\(fuseReLU ? "+relu" : "")\(useGlobalStats ? " (global stats)" : "")"
        // Training-kind forward even with global statistics: it yields the ReLU workspace that
        // the backward pass of an eval-mode gradient (PGD) needs.
        var flagged = dnnl_batch_normalization_desc_t()
        try check(dnnl_batch_normalization_forward_desc_init(&flagged, dnnl_forward_training, &data, Self.epsilon,
                                                             Self.flagBits(fuseReLU, useGlobalStats)), name)
        forwardPrimitive = try Primitive(name + " forward", opDesc: flagged)
        let workspace = forwardPrimitive.desc(dnnl_query_workspace_md)
        workspaceDesc = workspace.byteCount > 0 && fuseReLU ? workspace : nil
    }

    private static func flagBits(_ fuseReLU: Bool, _ useGlobalStats: Bool) -> UInt32 {
        var f = dnnl_use_scale.rawValue | dnnl_use_shift.rawValue
        if fuseReLU { f |= dnnl_fuse_norm_relu.rawValue }
        if useGlobalStats { f |= dnnl_use_global_stats.rawValue }
        return UInt32(f)
    }

    /// Normalises `src` into `dst`. With batch statistics, `mean` and `variance` (biased) are
    /// outputs; with global statistics, inputs. `workspace` is required when ReLU is fused.
    public func forward(src: Tensor, scale: Tensor, shift: Tensor, mean: Tensor, variance: Tensor,
                        dst: Tensor, workspace: Tensor?) throws {
        var args: [Int32: Tensor] = [
            DNNL_ARG_SRC: src, DNNL_ARG_SCALE: scale, DNNL_ARG_SHIFT: shift,
            DNNL_ARG_MEAN: mean, DNNL_ARG_VARIANCE: variance, DNNL_ARG_DST: dst,
        ]
        if let workspace { args[DNNL_ARG_WORKSPACE] = workspace }
        try forwardPrimitive.execute(args)
    }

    /// Gradients with respect to the input, the scale and the shift.
    public func backward(src: Tensor, diffDst: Tensor, scale: Tensor, shift: Tensor, mean: Tensor,
                         variance: Tensor, workspace: Tensor?, diffSrc: Tensor, diffScale: Tensor,
                         diffShift: Tensor) throws {
        let primitive = try backward()
        // oneDNN 2.6 reads the shift argument in backward too when dnnl_use_shift is set.
        var args: [Int32: Tensor] = try [
            DNNL_ARG_SRC: src, DNNL_ARG_DIFF_DST: diffDst.matching(dataDesc), DNNL_ARG_SCALE: scale,
            DNNL_ARG_SHIFT: shift, DNNL_ARG_MEAN: mean, DNNL_ARG_VARIANCE: variance,
            DNNL_ARG_DIFF_SRC: diffSrc, DNNL_ARG_DIFF_SCALE: diffScale, DNNL_ARG_DIFF_SHIFT: diffShift,
        ]
        if let workspace { args[DNNL_ARG_WORKSPACE] = workspace }
        try primitive.execute(args)
    }

    private func backward() throws -> Primitive {
        if let p = backwardPrimitive { return p }
        var desc = dnnl_batch_normalization_desc_t()
        var data = dataDesc.raw
        var diff = dataDesc.raw
        try check(dnnl_batch_normalization_backward_desc_init(&desc, dnnl_backward, &diff, &data, Self.epsilon,
                                                              Self.flagBits(fuseReLU, useGlobalStats)),
                  "batch norm \(dataDesc) backward")
        let p = try Primitive("batch norm \(dataDesc) backward", opDesc: desc, hint: forwardPrimitive)
        backwardPrimitive = p
        return p
    }
}
