import Backend
import CDNNL
import Foundation

/// Float32 data in a oneDNN layout (plain or blocked). Owns its buffer and the oneDNN memory
/// object over it.
final class DNNLTensor: DeviceTensor {
    let desc: MemoryDesc
    let layout: TensorLayout
    let memory: dnnl_memory_t
    let buffer: UnsafeMutableRawPointer
    let byteCount: Int
    let owner: OneDNN
    var backend: any Backend { owner }

    /// Memory this tensor views but does not own (nil: it owns `buffer`); kept alive with it.
    private let base: AnyObject?

    /// A zero-filled tensor with the given descriptor.
    convenience init(desc: MemoryDesc, owner: OneDNN) throws {
        Self.allocatorPolicy
        let byteCount = max(desc.byteCount, 4)
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, 64, byteCount) == 0, let pointer else {
            throw BackendError(operation: "oneDNN: allocate \(byteCount) bytes for \(desc)", reason: "out of memory")
        }
        memset(pointer, 0, byteCount)
        do {
            try self.init(desc: desc, buffer: pointer, base: nil as AnyObject?, owner: owner)
        } catch {
            free(pointer)
            throw error
        }
    }

    /// A tensor over `buffer`, which `base` owns (scratch memory seen in a primitive's layout).
    convenience init(desc: MemoryDesc, viewing buffer: UnsafeMutableRawPointer, base: AnyObject, owner: OneDNN) throws {
        try self.init(desc: desc, buffer: buffer, base: base as AnyObject?, owner: owner)
    }

    private init(desc: MemoryDesc, buffer: UnsafeMutableRawPointer, base: AnyObject?, owner: OneDNN) throws {
        self.desc = desc
        self.owner = owner
        self.base = base
        layout = desc.layout
        byteCount = max(desc.byteCount, 4)
        self.buffer = buffer
        var raw = desc.raw
        var memory: dnnl_memory_t?
        let status = dnnl_memory_create(&memory, &raw, Runtime.engine, buffer)
        try check(status, "memory for \(desc)")
        guard let memory else { throw BackendError(operation: "oneDNN: memory for \(desc)", reason: "no handle") }
        self.memory = memory
    }

    /// Every training step frees and allocates the same activation-sized buffers again (the
    /// transient and gradient pools give back what they no longer need, to keep the peak low).
    /// With glibc's defaults, freed memory above 16-64 MiB goes back to the kernel, and each new
    /// buffer then costs page faults and zeroing of fresh pages: 350,000 faults and about 11% of
    /// the CPU time of a width-16 training run. Here buffers under 16 MiB come from the heap, and
    /// the heap keeps freed memory for the next step. Larger buffers (width 64's first-stage
    /// activations) stay mmap-backed, so training's peak memory does not grow.
    private static let allocatorPolicy: Void = {
        mallopt(M_MMAP_THRESHOLD, 16 << 20)
        mallopt(M_TRIM_THRESHOLD, 1 << 30)
    }()

    deinit {
        dnnl_memory_destroy(memory)
        if base == nil { free(buffer) }
    }

    static func cast(_ tensor: Tensor) throws -> DNNLTensor {
        guard let t = tensor as? DNNLTensor else {
            throw BackendError(operation: "oneDNN: tensor \(tensor.layout)", reason: "it belongs to another backend")
        }
        return t
    }

    var floats: UnsafeMutablePointer<Float> { buffer.assumingMemoryBound(to: Float.self) }

    /// Floats in the buffer, padding of blocked layouts included.
    var storageCount: Int { byteCount / 4 }

    /// Raw access to the stored floats (layout-specific order, padding included).
    func withStorage<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeMutableBufferPointer(start: buffer.assumingMemoryBound(to: Float.self), count: storageCount))
    }

    /// This tensor in layout `target` (itself when it already is).
    func reordered(to target: MemoryDesc) throws -> DNNLTensor {
        if desc == target { return self }
        let out = try DNNLTensor(desc: target, owner: owner)
        try reorder(into: out)
        return out
    }

    /// Copies the values into `destination`, converting layouts.
    func reorder(into destination: DNNLTensor) throws {
        if desc == destination.desc {
            destination.buffer.copyMemory(from: buffer, byteCount: byteCount)
            return
        }
        let primitive = try owner.reorder(from: desc, to: destination.desc)
        try primitive.execute([DNNL_ARG_FROM: self, DNNL_ARG_TO: destination])
    }
}

extension OneDNN {
    /// Gives the memory of released tensors back to the system (the heap keeps it otherwise, see
    /// `DNNLTensor.allocatorPolicy`): to measure one phase's memory apart from an earlier one's.
    public static func returnFreedMemory() { malloc_trim(0) }
}
