import Foundation

/// Turns the pickled form of numpy arrays, dtypes and scalars into `HostTensor`s, for pickles
/// such as CIFAR-10's python batches and the numpy arrays inside torch checkpoints.
public enum NumpyPickle {
    /// Why a pickle node is not a numpy array this reader understands.
    public struct Unsupported: Error, CustomStringConvertible {
        public let message: String
        public var description: String { "numpy pickle: \(message)" }
    }

    /// Accepts `_reconstruct` + BUILD state (protocols 2-4, numpy 1 and 2), `_frombuffer`
    /// (protocol 5, in-band buffer) and `scalar(dtype, bytes)` (0-d values such as `np.int64(3)`).
    public static func array(_ value: PickleValue) throws -> HostTensor {
        switch value {
        case .build(.reduce(.global(let function), _), .tuple(let state))
            where function.name == "_reconstruct" && isNumpyModule(function.module, "multiarray"):
            // State: (version, shape, dtype, is_fortran, raw data); version is absent in old pickles.
            let fields = state.count == 5 ? Array(state.dropFirst()) : state
            guard fields.count == 4 else { throw Unsupported(message: "ndarray state has \(state.count) fields, expected 5") }
            guard let shape = fields[0].elements?.compactMap(\.intValue), shape.count == fields[0].elements?.count else {
                throw Unsupported(message: "ndarray shape is not a tuple of integers")
            }
            if fields[2].intValue == 1 { throw Unsupported(message: "Fortran-ordered arrays are not supported") }
            guard let raw = fields[3].bytesValue else {
                throw Unsupported(message: "ndarray data is not raw bytes (object arrays are not supported)")
            }
            return try tensor(dtype: try dtype(fields[1]), shape: shape, raw: raw)

        case .reduce(.global(let function), .tuple(let arguments))
            where function.name == "_frombuffer" && isNumpyModule(function.module, "numeric"):
            // Arguments: (buffer, dtype, shape, order).
            guard arguments.count == 4, let raw = arguments[0].bytesValue else {
                throw Unsupported(message: "_frombuffer arguments are not (buffer, dtype, shape, order)")
            }
            guard let shape = arguments[2].elements?.compactMap(\.intValue), shape.count == arguments[2].elements?.count else {
                throw Unsupported(message: "_frombuffer shape is not a tuple of integers")
            }
            if arguments[3].stringValue == "F", shape.count > 1 {
                throw Unsupported(message: "Fortran-ordered arrays are not supported")
            }
            return try tensor(dtype: try dtype(arguments[1]), shape: shape, raw: raw)

        case .reduce(.global(let function), .tuple(let arguments))
            where function.name == "scalar" && isNumpyModule(function.module, "multiarray"):
            guard arguments.count == 2, let raw = arguments[1].bytesValue else {
                throw Unsupported(message: "scalar arguments are not (dtype, bytes)")
            }
            return try tensor(dtype: try dtype(arguments[0]), shape: [], raw: raw)

        default:
            throw Unsupported(message: "value is not a pickled numpy array")
        }
    }

    /// A pickled `numpy.dtype`: `dtype("f4", False, True)` with BUILD state `(3, "<", ...)`.
    public static func dtype(_ value: PickleValue) throws -> DType {
        var byteOrder = "|"
        var call = value
        if case .build(let object, .tuple(let state)) = value {
            call = object
            if state.count > 1, let order = state[1].stringValue { byteOrder = order }
        }
        guard case .reduce(.global(PickleGlobal("numpy", "dtype")), .tuple(let arguments)) = call,
              let code = arguments.first?.stringValue else {
            throw Unsupported(message: "value is not a pickled numpy dtype")
        }
        guard let dtype = DType(numpyCode: code) else { throw Unsupported(message: "unsupported numpy dtype \(code)") }
        guard byteOrder != ">" || dtype.byteSize == 1 else {
            throw Unsupported(message: "big-endian numpy dtype >\(code) is not supported")
        }
        return dtype
    }

    private static func isNumpyModule(_ module: String, _ leaf: String) -> Bool {
        module == "numpy.core.\(leaf)" || module == "numpy._core.\(leaf)"
    }

    private static func tensor(dtype: DType, shape: [Int], raw: [UInt8]) throws -> HostTensor {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw Unsupported(message: "negative dimension in shape \(shape)") }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw Unsupported(message: "shape \(shape) overflows") }
            count = product
        }
        guard count.multipliedReportingOverflow(by: dtype.byteSize) == (raw.count, false) else {
            throw Unsupported(message: "array of shape \(shape) and dtype \(dtype.rawValue) needs \(count) x \(dtype.byteSize) bytes, found \(raw.count)")
        }
        return HostTensor(dtype: dtype, shape: shape, data: raw)
    }
}
