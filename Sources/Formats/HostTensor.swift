import Foundation

/// Element type of a tensor read from or written to a file (safetensors, npy, torch checkpoints).
public enum DType: String, CaseIterable, Sendable {
    case f64, f32, f16, bf16, i64, i32, i16, i8, u8, bool

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// The dtype string of the safetensors header ("F32", "I64", "BOOL", ...).
    public var safetensorsName: String {
        switch self {
        case .f64: return "F64"
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .i64: return "I64"
        case .i32: return "I32"
        case .i16: return "I16"
        case .i8: return "I8"
        case .u8: return "U8"
        case .bool: return "BOOL"
        }
    }

    /// numpy's kind and size code without byte order ("f4", "i8", "u1", "b1", ...); nil for
    /// bfloat16, which numpy lacks.
    public var numpyCode: String? {
        switch self {
        case .f64: return "f8"
        case .f32: return "f4"
        case .f16: return "f2"
        case .bf16: return nil
        case .i64: return "i8"
        case .i32: return "i4"
        case .i16: return "i2"
        case .i8: return "i1"
        case .u8: return "u1"
        case .bool: return "b1"
        }
    }

    public init?(numpyCode: String) {
        guard let match = DType.allCases.first(where: { $0.numpyCode == numpyCode }) else { return nil }
        self = match
    }

    public init?(safetensorsName: String) {
        guard let match = DType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = match
    }
}

/// Asking a tensor for values of another dtype (e.g. `floats()` on an I64 tensor).
public struct DTypeMismatch: Error, CustomStringConvertible {
    public let found: DType
    public let expected: DType
    public var description: String { "tensor has dtype \(found.rawValue), expected \(expected.rawValue)" }
}

/// A dense, C-ordered tensor in host memory as raw little-endian bytes: the one exchange type of
/// the Formats module (safetensors, npy, torch checkpoints all read into and write from it).
public struct HostTensor: Equatable, Sendable {
    public var dtype: DType
    public var shape: [Int]
    /// Little-endian element bytes, C order; count == elementCount * dtype.byteSize.
    public var data: [UInt8]

    /// Wraps raw bytes; the byte count must match the shape (a programming error otherwise).
    public init(dtype: DType, shape: [Int], data: [UInt8]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        precondition(data.count == shape.reduce(1, *) * dtype.byteSize,
                     "\(data.count) bytes do not fit shape \(shape) of \(dtype.rawValue)")
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }

    public init(floats: [Float], shape: [Int]) { self.init(dtype: .f32, shape: shape, data: HostTensor.bytes(of: floats)) }
    public init(doubles: [Double], shape: [Int]) { self.init(dtype: .f64, shape: shape, data: HostTensor.bytes(of: doubles)) }
    public init(int64s: [Int64], shape: [Int]) { self.init(dtype: .i64, shape: shape, data: HostTensor.bytes(of: int64s)) }
    public init(int32s: [Int32], shape: [Int]) { self.init(dtype: .i32, shape: shape, data: HostTensor.bytes(of: int32s)) }
    public init(uint8s: [UInt8], shape: [Int]) { self.init(dtype: .u8, shape: shape, data: uint8s) }
    public init(bools: [Bool], shape: [Int]) { self.init(dtype: .bool, shape: shape, data: bools.map { $0 ? 1 : 0 }) }

    /// Number of elements (product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }

    public func floats() throws -> [Float] { try values(.f32) }
    public func doubles() throws -> [Double] { try values(.f64) }
    public func int64s() throws -> [Int64] { try values(.i64) }
    public func int32s() throws -> [Int32] { try values(.i32) }
    public func uint8s() throws -> [UInt8] {
        guard dtype == .u8 else { throw DTypeMismatch(found: dtype, expected: .u8) }
        return data
    }
    public func bools() throws -> [Bool] {
        guard dtype == .bool else { throw DTypeMismatch(found: dtype, expected: .bool) }
        return data.map { $0 != 0 }
    }

    private func values<T>(_ expected: DType) throws -> [T] {
        guard dtype == expected else { throw DTypeMismatch(found: dtype, expected: expected) }
        let count = data.count / MemoryLayout<T>.stride
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            data.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: source)
            }
            initialized = count
        }
    }

    /// Raw bytes of numeric values (every supported host is little-endian, as the formats are).
    static func bytes<T>(of values: [T]) -> [UInt8] {
        values.withUnsafeBytes { [UInt8]($0) }
    }
}

extension Dictionary where Key == String, Value == HostTensor {
    /// The tensors named `prefix` + something, under that something (one network's part of a
    /// file holding several).
    public func under(_ prefix: String) -> [String: HostTensor] {
        Dictionary(uniqueKeysWithValues: filter { $0.key.hasPrefix(prefix) }.map { (String($0.key.dropFirst(prefix.count)), $0.value) })
    }

    /// These tensors with `prefix` put before every name (the inverse of `under`).
    public func prefixed(_ prefix: String) -> [String: HostTensor] {
        Dictionary(uniqueKeysWithValues: map { (prefix + $0.key, $0.value) })
    }
}
