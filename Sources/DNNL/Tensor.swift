import CDNNL
import Foundation

/// Float32 data in a oneDNN layout (plain or blocked) that it remembers. Owns its buffer and the
/// oneDNN memory object over it. Activations stay in the blocked layout the primitives choose;
/// reorders happen only at the edges (`init(plain:)`, `plainValues()`).
public final class Tensor {
    public let desc: MemoryDesc
    let memory: dnnl_memory_t
    let buffer: UnsafeMutableRawPointer
    public let byteCount: Int

    /// A zero-filled tensor with the given descriptor.
    public init(desc: MemoryDesc) throws {
        Self.allocatorPolicy
        self.desc = desc
        byteCount = max(desc.byteCount, 4)
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, 64, byteCount) == 0, let pointer else {
            throw DNNLError(operation: "allocate \(byteCount) bytes for \(desc)", status: "out of memory")
        }
        memset(pointer, 0, byteCount)
        buffer = pointer
        var raw = desc.raw
        var memory: dnnl_memory_t?
        let status = dnnl_memory_create(&memory, &raw, Runtime.engine, pointer)
        guard status == dnnl_success, let memory else {
            free(pointer)
            try check(status, "memory for \(desc)")
            throw DNNLError(operation: "memory for \(desc)", status: "no handle")
        }
        self.memory = memory
    }

    /// Every training step frees and allocates the same activation-sized buffers again. With
    /// glibc's defaults, freed memory above 16-64 MiB goes back to the kernel, and each new buffer
    /// then costs page faults and zeroing of fresh pages: 350,000 faults and about 11% of the CPU
    /// time of a width-16 training run. Here buffers under 16 MiB come from the heap, and the heap
    /// keeps freed memory for the next step. Larger buffers (width 64's first-stage activations)
    /// stay mmap-backed, so training's peak memory does not grow.
    private static let allocatorPolicy: Void = {
        mallopt(M_MMAP_THRESHOLD, 16 << 20)
        mallopt(M_TRIM_THRESHOLD, 1 << 30)
    }()

    /// A plain-layout tensor holding `values` (row-major in `shape`).
    public convenience init(shape: [Int], values: [Float]) throws {
        precondition(values.count == shape.reduce(1, *), "values do not fill shape \(shape)")
        try self.init(desc: MemoryDesc(shape: shape, layout: .forRank(shape.count)))
        values.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    deinit {
        dnnl_memory_destroy(memory)
        free(buffer)
    }

    public var shape: [Int] { desc.shape }
    public var elementCount: Int { desc.elementCount }
    /// Floats in the buffer, padding of blocked layouts included.
    public var storageCount: Int { byteCount / 4 }

    /// Raw access to the stored floats (layout-specific order, padding included). Elementwise
    /// updates such as SGD are valid on any layout when every operand shares it.
    public func withStorage<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeMutableBufferPointer(start: buffer.assumingMemoryBound(to: Float.self), count: storageCount))
    }

    /// The values in plain row-major order.
    public func plainValues() throws -> [Float] {
        let plain = try reordered(to: MemoryDesc(shape: shape, layout: .forRank(shape.count)))
        return plain.withStorage { Array($0.prefix(elementCount)) }
    }

    /// Overwrites the values from plain row-major order.
    public func setPlainValues(_ values: [Float]) throws {
        let plain = try Tensor(shape: shape, values: values)
        try plain.reorder(into: self)
    }

    /// This tensor in layout `target` (itself when it already is).
    public func reordered(to target: MemoryDesc) throws -> Tensor {
        if desc == target { return self }
        let out = try Tensor(desc: target)
        try reorder(into: out)
        return out
    }

    /// Copies the values into `destination`, converting layouts.
    public func reorder(into destination: Tensor) throws {
        if desc == destination.desc {
            destination.buffer.copyMemory(from: buffer, byteCount: byteCount)
            return
        }
        let primitive = try ReorderCache.primitive(from: desc, to: destination.desc)
        try primitive.execute([DNNL_ARG_FROM: self, DNNL_ARG_TO: destination])
    }

    public func fill(_ value: Float) {
        withStorage { storage in
            if value == 0 {
                memset(buffer, 0, byteCount)
            } else {
                storage.update(repeating: value)
            }
        }
    }

    /// A new tensor with the same layout and values.
    public func copy() throws -> Tensor {
        let out = try Tensor(desc: desc)
        out.buffer.copyMemory(from: buffer, byteCount: byteCount)
        return out
    }
}
