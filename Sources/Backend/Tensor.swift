/// The shape of a tensor and the memory layout a backend keeps it in. Layers never look inside
/// `detail`: they only compare layouts and ask the backend for tensors in them, so blocked
/// layouts (oneDNN's nChw16c, ...) stay between layers without anyone but the backend knowing.
public struct TensorLayout: Hashable, CustomStringConvertible {
    public let shape: [Int]
    /// True for the plain row-major layout of the shape (what the host reads and writes).
    public let isPlain: Bool
    /// The backend's own descriptor; equal layouts have equal details.
    public let detail: AnyHashable

    public init(shape: [Int], isPlain: Bool, detail: AnyHashable) {
        self.shape = shape
        self.isPlain = isPlain
        self.detail = detail
    }

    public var elementCount: Int { shape.reduce(1, *) }
    public var description: String { "\(shape)\(isPlain ? "" : " blocked")" }
}

/// Float32 memory owned by a backend, in one layout. Values reach the host only through
/// `plainValues()` (row-major in `shape`).
public protocol DeviceTensor: AnyObject {
    var layout: TensorLayout { get }
    var backend: any Backend { get }
}

public typealias Tensor = any DeviceTensor

extension DeviceTensor {
    public var shape: [Int] { layout.shape }
    public var elementCount: Int { layout.elementCount }

    /// The values in plain row-major order.
    public func plainValues() throws -> [Float] { try backend.download(self) }

    /// Overwrites the values from plain row-major order.
    public func setPlainValues(_ values: [Float]) throws { try backend.upload(values, into: self) }

    /// This tensor in `layout` (itself when it already is).
    public func relayout(to layout: TensorLayout) throws -> Tensor {
        layout == self.layout ? self : try backend.copy(self, to: layout)
    }

    public func fill(_ value: Float) throws { try backend.fill(self, with: value) }

    /// A new tensor with the same layout and values.
    public func copy() throws -> Tensor {
        let out = try backend.makeTensor(layout)
        try backend.copy(self, into: out)
        return out
    }
}

/// A failed backend call: the operation, the shapes involved and the backend's reason.
public struct BackendError: Error, CustomStringConvertible {
    public let operation: String
    public let reason: String
    public init(operation: String, reason: String) {
        self.operation = operation
        self.reason = reason
    }
    public var description: String { "\(operation) failed: \(reason)" }
}
