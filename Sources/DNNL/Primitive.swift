import CDNNL

/// A oneDNN primitive and its descriptor, owned together.
final class Primitive {
    let descriptor: dnnl_primitive_desc_t
    let primitive: dnnl_primitive_t
    let name: String

    /// Creates the primitive from an operation descriptor (a dnnl_*_desc_t value).
    convenience init<OpDesc>(_ name: String, opDesc: OpDesc, attributes: dnnl_primitive_attr_t? = nil,
                 hint: Primitive? = nil) throws {
        var op = opDesc
        var pd: dnnl_primitive_desc_t?
        try withUnsafePointer(to: &op) { pointer in
            try check(dnnl_primitive_desc_create(&pd, UnsafeRawPointer(pointer), attributes, Runtime.engine,
                                                 hint?.descriptor), "\(name): primitive descriptor")
        }
        try self.init(name, descriptor: pd!)
    }

    init(_ name: String, descriptor: dnnl_primitive_desc_t) throws {
        self.name = name
        self.descriptor = descriptor
        var primitive: dnnl_primitive_t?
        let status = dnnl_primitive_create(&primitive, descriptor)
        if status != dnnl_success {
            dnnl_primitive_desc_destroy(descriptor)
            try check(status, "\(name): primitive")
        }
        self.primitive = primitive!
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        dnnl_primitive_desc_destroy(descriptor)
    }

    /// oneDNN's name of the chosen implementation (e.g. "jit:avx2", "ref:any").
    var implementation: String {
        var name: UnsafePointer<CChar>?
        guard dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name) == dnnl_success, let name else {
            return "unknown"
        }
        return String(cString: name)
    }

    /// True for oneDNN's reference kernels: correct, but tens to hundreds of times slower.
    var isReference: Bool { implementation.hasPrefix("ref") }

    /// The layout the primitive chose for one of its arguments.
    func desc(_ query: dnnl_query_t, _ index: Int32 = 0) -> MemoryDesc {
        MemoryDesc(raw: dnnl_primitive_desc_query_md(descriptor, query, index).pointee)
    }

    func execute(_ arguments: [Int32: Tensor]) throws {
        var args = arguments.map { dnnl_exec_arg_t(arg: $0.key, memory: $0.value.memory) }
        try check(dnnl_primitive_execute(primitive, Runtime.stream, Int32(args.count), &args), "\(name): execute")
        try check(dnnl_stream_wait(Runtime.stream), "\(name): wait")
    }
}

/// Reorders between layouts, cached by the pair of layouts.
enum ReorderCache {
    private static var cache: [String: Primitive] = [:]
    private static let lock = NSLockShim()

    static func primitive(from source: MemoryDesc, to destination: MemoryDesc) throws -> Primitive {
        let key = "\(source.layoutKey)->\(destination.layoutKey)"
        return try lock.withLock {
            if let cached = cache[key] { return cached }
            var src = source.raw, dst = destination.raw
            var pd: dnnl_primitive_desc_t?
            try check(dnnl_reorder_primitive_desc_create(&pd, &src, Runtime.engine, &dst, Runtime.engine, nil),
                      "reorder \(source) -> \(destination)")
            let primitive = try Primitive("reorder \(source.shape)", descriptor: pd!)
            cache[key] = primitive
            return primitive
        }
    }
}

extension MemoryDesc {
    /// A cache key: the descriptor's bytes (shape, type, layout).
    public var layoutKey: String {
        var copy = raw
        return withUnsafeBytes(of: &copy) { bytes in
            var hasher = Hasher()
            hasher.combine(bytes: bytes)
            return "\(shape)#\(hasher.finalize())"
        }
    }
}
