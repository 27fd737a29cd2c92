import Backend
import CDNNL

/// BatchNorm2d with separate scale and shift (optionally fused with a following ReLU).
/// With global statistics it normalises with given mean/variance (eval mode); otherwise batch
/// statistics are computed and returned. Backward always yields the scale and shift gradients
/// (cheap, and the ANP defense needs them).
final class BatchNormalization: BatchNormalizationKernel {
    struct Key: Hashable {
        var data: MemoryDesc
        var fuseReLU: Bool
        var globalStatistics: Bool
    }

    static let epsilon: Float = 1e-5
    let dataDesc: MemoryDesc
    let fuseReLU: Bool
    let globalStatistics: Bool
    private let forwardPrimitive: Primitive
    private var backwardPrimitive: Primitive?
    private let workspaceDesc: MemoryDesc?
    private(set) lazy var workspaceLayout: TensorLayout? = workspaceDesc?.layout

    init(dataDesc: MemoryDesc, fuseReLU: Bool, globalStatistics: Bool) throws {
        self.dataDesc = dataDesc
        self.fuseReLU = fuseReLU
        self.globalStatistics = globalStatistics
        var data = dataDesc.raw
        let name = "batch norm \(dataDesc)\(fuseReLU ? "+relu" : "")\(globalStatistics ? " (global stats)" : "")"
        // Training-kind forward even with global statistics: it yields the ReLU workspace that
        // the backward pass of an eval-mode gradient (PGD) needs.
        var flagged = dnnl_batch_normalization_desc_t()
        try check(dnnl_batch_normalization_forward_desc_init(&flagged, dnnl_forward_training, &data, Self.epsilon,
                                                             Self.flagBits(fuseReLU, globalStatistics)), name)
        forwardPrimitive = try Primitive(name + " forward", opDesc: flagged)
        let workspace = forwardPrimitive.desc(dnnl_query_workspace_md)
        workspaceDesc = workspace.byteCount > 0 && fuseReLU ? workspace : nil
    }

    private static func flagBits(_ fuseReLU: Bool, _ globalStatistics: Bool) -> UInt32 {
        var f = dnnl_use_scale.rawValue | dnnl_use_shift.rawValue
        if fuseReLU { f |= dnnl_fuse_norm_relu.rawValue }
        if globalStatistics { f |= dnnl_use_global_stats.rawValue }
        return UInt32(f)
    }

    func forward(input: Tensor, scale: Tensor, shift: Tensor, mean: Tensor, variance: Tensor, output y: Tensor,
                 workspace: Tensor?) throws {
        var args: [Int32: DNNLTensor] = try [
            DNNL_ARG_SRC: argument(input, dataDesc), DNNL_ARG_SCALE: DNNLTensor.cast(scale),
            DNNL_ARG_SHIFT: DNNLTensor.cast(shift), DNNL_ARG_MEAN: DNNLTensor.cast(mean),
            DNNL_ARG_VARIANCE: DNNLTensor.cast(variance), DNNL_ARG_DST: output(y, dataDesc, "batch norm forward"),
        ]
        if let workspace { args[DNNL_ARG_WORKSPACE] = try DNNLTensor.cast(workspace) }
        try forwardPrimitive.execute(args)
    }

    func backward(input: Tensor, outputGradient: Tensor, scale: Tensor, shift: Tensor, mean: Tensor,
                  variance: Tensor, workspace: Tensor?, inputGradient: Tensor, scaleGradient: Tensor,
                  shiftGradient: Tensor) throws {
        let primitive = try backward()
        // oneDNN 2.6 reads the shift argument in backward too when dnnl_use_shift is set.
        var args: [Int32: DNNLTensor] = try [
            DNNL_ARG_SRC: argument(input, dataDesc), DNNL_ARG_DIFF_DST: argument(outputGradient, dataDesc),
            DNNL_ARG_SCALE: DNNLTensor.cast(scale), DNNL_ARG_SHIFT: DNNLTensor.cast(shift),
            DNNL_ARG_MEAN: DNNLTensor.cast(mean), DNNL_ARG_VARIANCE: DNNLTensor.cast(variance),
            DNNL_ARG_DIFF_SRC: output(inputGradient, dataDesc, "batch norm backward"),
            DNNL_ARG_DIFF_SCALE: DNNLTensor.cast(scaleGradient), DNNL_ARG_DIFF_SHIFT: DNNLTensor.cast(shiftGradient),
        ]
        if let workspace { args[DNNL_ARG_WORKSPACE] = try DNNLTensor.cast(workspace) }
        try primitive.execute(args)
    }

    private func backward() throws -> Primitive {
        if let p = backwardPrimitive { return p }
        var desc = dnnl_batch_normalization_desc_t()
        var data = dataDesc.raw
        var diff = dataDesc.raw
        try check(dnnl_batch_normalization_backward_desc_init(&desc, dnnl_backward, &diff, &data, Self.epsilon,
                                                              Self.flagBits(fuseReLU, globalStatistics)),
                  "batch norm \(dataDesc) backward")
        let p = try Primitive("batch norm \(dataDesc) backward", opDesc: desc, hint: forwardPrimitive)
        backwardPrimitive = p
        return p
    }
}
