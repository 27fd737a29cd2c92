import Backend
import CDNNL

/// A oneDNN memory descriptor: shape, data type and (possibly blocked) layout. Equality is
/// oneDNN's; the hash covers only what equal descriptors share (shape and data type).
struct MemoryDesc: CustomStringConvertible, Hashable {
    var raw: dnnl_memory_desc_t

    init(raw: dnnl_memory_desc_t) { self.raw = raw }

    /// A float32 descriptor with the plain row-major layout of its rank.
    static func plain(_ shape: [Int]) throws -> MemoryDesc {
        let tag: dnnl_format_tag_t
        switch shape.count {
        case 1: tag = dnnl_a
        case 2: tag = dnnl_ab
        case 3: tag = dnnl_abc
        case 4: tag = dnnl_abcd
        case 5: tag = dnnl_abcde
        default: throw BackendError(operation: "oneDNN: memory descriptor \(shape)", reason: "rank 1 to 5 expected")
        }
        return try MemoryDesc(shape: shape, tag: tag)
    }

    /// A float32 N x C x H x W descriptor blocked by 8 or 16 channels (nChw8c, nChw16c), or plain (block 1).
    static func channelBlocked(_ shape: [Int], block: Int) throws -> MemoryDesc {
        try MemoryDesc(shape: shape, tag: block == 8 ? dnnl_nChw8c : block == 16 ? dnnl_nChw16c : dnnl_nchw)
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

    /// A float32 descriptor with explicit strides (in elements), e.g. a transposed matrix.
    init(shape: [Int], strides: [Int]) throws {
        var raw = dnnl_memory_desc_t()
        let status = withDims(shape) { dims in
            withDims(strides) { steps in dnnl_memory_desc_init_by_strides(&raw, Int32(shape.count), dims, dnnl_f32, steps) }
        }
        try check(status, "memory descriptor \(shape) strides \(strides)")
        self.raw = raw
    }

    var shape: [Int] {
        var copy = raw
        return withUnsafeBytes(of: &copy.dims) { buffer in
            let p = buffer.bindMemory(to: Int64.self)
            return (0..<Int(raw.ndims)).map { Int(p[$0]) }
        }
    }

    /// Bytes the layout occupies, including padding of blocked layouts.
    var byteCount: Int {
        var copy = raw
        return dnnl_memory_desc_get_size(&copy)
    }

    var isPlain: Bool {
        guard let plain = try? MemoryDesc.plain(shape) else { return false }
        return self == plain
    }

    var layout: TensorLayout { TensorLayout(shape: shape, isPlain: isPlain, detail: self) }

    var description: String { "\(shape)\(isPlain ? "" : " blocked")" }

    static func == (a: MemoryDesc, b: MemoryDesc) -> Bool {
        var x = a.raw, y = b.raw
        return dnnl_memory_desc_equal(&x, &y) != 0
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(shape)
        hasher.combine(raw.data_type.rawValue)
    }
}

extension TensorLayout {
    /// The oneDNN descriptor behind a layout this backend made.
    var desc: MemoryDesc {
        get throws {
            guard let desc = detail.base as? MemoryDesc else {
                throw BackendError(operation: "oneDNN: layout \(self)", reason: "made by another backend")
            }
            return desc
        }
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
