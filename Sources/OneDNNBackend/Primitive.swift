import Backend
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

    func execute(_ arguments: [Int32: DNNLTensor]) throws {
        var args = arguments.map { dnnl_exec_arg_t(arg: $0.key, memory: $0.value.memory) }
        try check(dnnl_primitive_execute(primitive, Runtime.stream, Int32(args.count), &args), "\(name): execute")
        try check(dnnl_stream_wait(Runtime.stream), "\(name): wait")
    }
}

/// A primitive argument from a seam tensor: this backend's tensor, in `desc` (reordered when not).
func argument(_ tensor: Tensor, _ desc: MemoryDesc) throws -> DNNLTensor {
    try DNNLTensor.cast(tensor).reordered(to: desc)
}

/// A primitive output: must already be in the primitive's layout (outputs are never reordered).
func output(_ tensor: Tensor, _ desc: MemoryDesc, _ what: String) throws -> DNNLTensor {
    let t = try DNNLTensor.cast(tensor)
    guard t.desc == desc else {
        throw BackendError(operation: "oneDNN: \(what)", reason: "output is in layout \(t.desc), expected \(desc)")
    }
    return t
}

/// Runs `body` with an output in the layout a primitive chose: `target` itself when it has that
/// layout, else a scratch tensor that is then copied into `target` (e.g. weight gradients kept
/// in the weights' own layout).
func writing(_ target: Tensor, in chosen: MemoryDesc, _ body: (DNNLTensor) throws -> Void) throws {
    let t = try DNNLTensor.cast(target)
    let out = chosen == t.desc ? t : try DNNLTensor(desc: chosen, owner: t.owner)
    try body(out)
    if out !== t { try out.reorder(into: t) }
}
