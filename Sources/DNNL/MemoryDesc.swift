import CDNNL

/// The plain layouts tensors take at the edges (input batches, logits, checkpoints).
public enum PlainLayout {
    /// 1-D vector (BatchNorm parameters, biases).
    case x
    /// N x C matrices (logits, linear weights).
    case nc
    /// N x C x H x W activations or O x I x H x W convolution weights.
    case nchw

    var tag: dnnl_format_tag_t {
        switch self {
        case .x: return dnnl_x
        case .nc: return dnnl_nc
        case .nchw: return dnnl_nchw
        }
    }

    static func forRank(_ rank: Int) -> PlainLayout {
        switch rank {
        case 1: return .x
        case 2: return .nc
        default: return .nchw
        }
    }
}

/// A oneDNN memory descriptor: shape, data type and (possibly blocked) layout.
public struct MemoryDesc: CustomStringConvertible, Equatable {
    var raw: dnnl_memory_desc_t

    init(raw: dnnl_memory_desc_t) { self.raw = raw }

    /// A float32 descriptor with a plain layout.
    public init(shape: [Int], layout: PlainLayout) throws {
        try self.init(shape: shape, tag: layout.tag)
    }

    /// A float32 descriptor that lets the primitive choose the layout.
    static func any(_ shape: [Int]) throws -> MemoryDesc {
        try MemoryDesc(shape: shape, tag: dnnl_format_tag_any)
    }

    init(shape: [Int], tag: dnnl_format_tag_t) throws {
        var raw = dnnl_memory_desc_t()
        let status = withDims(shape) { dims in
            dnnl_memory_desc_init_by_tag(&raw, Int32(shape.count), dims, dnnl_f32, tag)
        }
        try check(status, "memory descriptor \(shape)")
        self.raw = raw
    }

    public var shape: [Int] {
        var copy = raw
        return withUnsafeBytes(of: &copy.dims) { buffer in
            let p = buffer.bindMemory(to: Int64.self)
            return (0..<Int(raw.ndims)).map { Int(p[$0]) }
        }
    }

    /// Bytes the layout occupies, including padding of blocked layouts.
    public var byteCount: Int {
        var copy = raw
        return dnnl_memory_desc_get_size(&copy)
    }

    public var elementCount: Int { shape.reduce(1, *) }

    /// True when the layout is the plain row-major one for its rank.
    public var isPlain: Bool {
        guard let plain = try? MemoryDesc(shape: shape, layout: .forRank(shape.count)) else { return false }
        return self == plain
    }

    public var description: String { "\(shape)\(isPlain ? "" : " blocked")" }

    public static func == (a: MemoryDesc, b: MemoryDesc) -> Bool {
        var x = a.raw, y = b.raw
        return dnnl_memory_desc_equal(&x, &y) != 0
    }
}

/// Calls `body` with a dnnl_dims_t holding `values`.
func withDims<R>(_ values: [Int], _ body: (UnsafeMutablePointer<Int64>) throws -> R) rethrows -> R {
    var dims: dnnl_dims_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return try withUnsafeMutablePointer(to: &dims) { tuple in
        try tuple.withMemoryRebound(to: Int64.self, capacity: 12) { p in
            for (i, v) in values.enumerated() { p[i] = Int64(v) }
            return try body(p)
        }
    }
}
