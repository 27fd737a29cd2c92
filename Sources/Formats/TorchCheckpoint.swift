import Foundation
import Support

/// A tensor with the dotted name of its place in a file ("layer1.0.conv1.weight", "trigger_pattern").
public struct NamedTensor: Equatable, Sendable {
    public var name: String
    public var tensor: HostTensor
    public init(name: String, tensor: HostTensor) {
        self.name = name
        self.tensor = tensor
    }
}

/// The contents of a `torch.save` file (zip format, the pre-1.6 legacy format, or a plain
/// pickle), read without executing anything: tensors and numpy arrays become `HostTensor`s.
/// Used to import backdoored models and the reference code's trigger information.
public struct TorchCheckpoint: Equatable {
    /// Every tensor and numeric value in pickle order; nested dict keys and list indices are
    /// joined with "." (a training checkpoint's weights are "state_dict.conv1.weight", ...).
    /// Python ints, floats and bools become 0-d i64/f64/bool tensors, numeric lists 1-d ones.
    public var tensors: [NamedTensor]
    /// String values by dotted name (e.g. "arch": "resnet18"; UTF-8 bytes count as strings).
    public var metadata: [String: String]

    /// The model weights: the tensors under a top-level "state_dict" key (prefix removed) when
    /// there is one, as the reference loader does, else all tensors.
    public var stateDict: [NamedTensor] { TensorFile.stateDict(of: tensors) }

    /// The tensor of a name, if present.
    public subscript(name: String) -> HostTensor? { tensors.first { $0.name == name }?.tensor }

    /// Tensor rebuild functions and storage types of torch, OrderedDict, and numpy's array
    /// globals: the whole allow-list. Anything else in a file (os.system, builtins.eval, module
    /// classes, ...) is refused by name.
    public static let allowedGlobals: Set<PickleGlobal> = {
        var set = Pickle.numpyGlobals
        set.insert(PickleGlobal("collections", "OrderedDict"))
        for function in ["_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"] {
            set.insert(PickleGlobal("torch._utils", function))
        }
        for type in storageTypes.keys { set.insert(PickleGlobal("torch", type)) }
        set.insert(PickleGlobal("torch", "UntypedStorage"))
        set.insert(PickleGlobal("torch.storage", "UntypedStorage"))
        for name in torchDTypes.keys { set.insert(PickleGlobal("torch", name)) }
        for name in ["uint16", "uint32", "uint64", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2"] {
            set.insert(PickleGlobal("torch", name)) // known, so that the error says "unsupported dtype"
        }
        return set
    }()

    static let storageTypes: [String: DType] = [
        "FloatStorage": .f32, "DoubleStorage": .f64, "HalfStorage": .f16, "BFloat16Storage": .bf16,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool,
    ]

    static let torchDTypes: [String: DType] = [
        "float32": .f32, "float64": .f64, "float16": .f16, "bfloat16": .bf16, "int64": .i64,
        "int32": .i32, "int16": .i16, "int8": .i8, "uint8": .u8, "bool": .bool,
    ]

    /// Reads a checkpoint file; every problem is a `FileError` naming the file.
    public static func read(path: String) throws -> TorchCheckpoint {
        try decode(try InputFile.map(path, what: "checkpoint"), path: path)
    }

    /// Parses checkpoint bytes; `path` only names the source in errors.
    public static func decode(_ data: Data, path: String) throws -> TorchCheckpoint {
        do {
            if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
                return try ZipReader(data: data).checkpoint()
            }
            guard data.first == 0x80 else {
                throw CheckpointError("not a PyTorch checkpoint: neither a zip archive nor a pickle")
            }
            return try LegacyReader(bytes: [UInt8](data)).checkpoint()
        } catch let error as FileError {
            throw error
        } catch let error as PickleError {
            throw FileError(path, error.description)
        } catch let error as CheckpointError {
            throw FileError(path, error.message)
        } catch let error as NumpyPickle.Unsupported {
            throw FileError(path, error.description)
        }
    }
}

/// A checkpoint-level problem before the path is attached.
struct CheckpointError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// A storage of raw bytes with the element type its persistent id declares.
private struct Storage {
    let dtype: DType
    let bytes: [UInt8]
}

/// Turns a parsed pickle into named tensors; storages come from `loadStorage(key, dtype, numel)`.
private struct Interpreter {
    let loadStorage: (String, DType, Int) throws -> [UInt8]
    var storages: [String: Storage] = [:]
    var result = TorchCheckpoint(tensors: [], metadata: [:])
    var names: Set<String> = []

    init(loadStorage: @escaping (String, DType, Int) throws -> [UInt8]) {
        self.loadStorage = loadStorage
    }

    mutating func run(_ root: PickleValue) throws -> TorchCheckpoint {
        try collect(root, name: "")
        return result
    }

    mutating func add(_ name: String, _ tensor: HostTensor) throws {
        let name = name.isEmpty ? "tensor" : name
        guard names.insert(name).inserted else { throw CheckpointError("two values are named \"\(name)\"") }
        result.tensors.append(NamedTensor(name: name, tensor: tensor))
    }

    mutating func collect(_ value: PickleValue, name: String) throws {
        func child(_ key: String) -> String { name.isEmpty ? key : name + "." + key }
        if let tensor = try tensor(value, name: name) {
            return try add(name, tensor)
        }
        if let entries = value.dictEntries {
            for entry in entries {
                let key: String
                switch entry.key {
                case .string(let text): key = text
                case .bytes: key = entry.key.stringValue ?? "?"
                case .int(let number): key = String(number)
                default: throw CheckpointError("\(name.isEmpty ? "top-level" : "\"\(name)\"") dict has a key that is not a string or integer")
                }
                try collect(entry.value, name: child(key))
            }
            return
        }
        if let items = value.elements {
            if let numbers = numericTensor(items) { return try add(name, numbers) }
            for (index, item) in items.enumerated() { try collect(item, name: child(String(index))) }
            return
        }
        switch value {
        case .none: return
        case .bool(let flag): try add(name, HostTensor(bools: [flag], shape: []))
        case .int(let number): try add(name, HostTensor(int64s: [Int64(number)], shape: []))
        case .float(let number): try add(name, HostTensor(doubles: [number], shape: []))
        case .string(let text): result.metadata[name.isEmpty ? "value" : name] = text
        case .bigInt: throw CheckpointError("\"\(name)\": integer beyond 64 bits")
        default:
            // Python 2 pickles store text as bytes; other bytes stay binary.
            if let raw = value.bytesValue {
                if let text = String(validating: raw, as: UTF8.self) {
                    result.metadata[name.isEmpty ? "value" : name] = text
                    return
                }
                return try add(name, HostTensor(uint8s: raw, shape: [raw.count]))
            }
            throw CheckpointError("\"\(name)\": unsupported value \(summary(value))")
        }
    }

    /// A list of plain numbers as one tensor (bools, ints -> i64, any float -> f64).
    func numericTensor(_ items: [PickleValue]) -> HostTensor? {
        guard !items.isEmpty else { return nil }
        var ints: [Int64] = [], doubles: [Double] = [], bools: [Bool] = []
        for item in items {
            switch item {
            case .bool(let flag): bools.append(flag)
            case .int(let number): ints.append(Int64(number)); doubles.append(Double(number))
            case .float(let number): doubles.append(number)
            default: return nil
            }
        }
        if bools.count == items.count { return HostTensor(bools: bools, shape: [items.count]) }
        if ints.count == items.count { return HostTensor(int64s: ints, shape: [items.count]) }
        if doubles.count == items.count { return HostTensor(doubles: doubles, shape: [items.count]) }
        return nil
    }

    /// A torch tensor or numpy array node as a contiguous tensor; nil for other nodes.
    mutating func tensor(_ value: PickleValue, name: String) throws -> HostTensor? {
        switch value {
        case .reduce(.global(let function), .tuple(let arguments)) where function.module == "torch._utils":
            switch function.name {
            case "_rebuild_parameter":
                guard let data = arguments.first, let tensor = try tensor(data, name: name) else {
                    throw CheckpointError("\"\(name)\": _rebuild_parameter without a tensor")
                }
                return tensor
            case "_rebuild_tensor_v2":
                guard arguments.count >= 4 else { throw CheckpointError("\"\(name)\": _rebuild_tensor_v2 with \(arguments.count) arguments") }
                let storage = try self.storage(arguments[0], name: name)
                return try view(storage, dtype: storage.dtype, arguments: arguments, name: name)
            case "_rebuild_tensor_v3":
                guard arguments.count >= 7, case .global(let dtypeGlobal) = arguments[6] else {
                    throw CheckpointError("\"\(name)\": _rebuild_tensor_v3 without a dtype")
                }
                guard let dtype = TorchCheckpoint.torchDTypes[dtypeGlobal.name] else {
                    throw CheckpointError("\"\(name)\": unsupported tensor dtype \(dtypeGlobal)")
                }
                return try view(try storage(arguments[0], name: name), dtype: dtype, arguments: arguments, name: name)
            default:
                return nil
            }
        case .build(.reduce(.global(let function), _), _) where function.name == "_reconstruct",
             .reduce(.global(let function), _) where function.name == "_frombuffer" || function.name == "scalar":
            guard function.module.hasPrefix("numpy.") else { return nil }
            do {
                return try NumpyPickle.array(value)
            } catch let error as NumpyPickle.Unsupported {
                throw CheckpointError("\"\(name)\": \(error.description)")
            }
        default:
            return nil
        }
    }

    /// Resolves a `("storage", type, key, location, numel[, view])` persistent id.
    mutating func storage(_ value: PickleValue, name: String) throws -> Storage {
        guard case .persistentID(.tuple(let fields)) = value, fields.count >= 5,
              fields[0].stringValue == "storage", case .global(let type) = fields[1],
              let key = fields[2].stringValue, let numel = fields[4].intValue, numel >= 0 else {
            throw CheckpointError("\"\(name)\": tensor storage is not a (\"storage\", type, key, location, numel) reference")
        }
        if fields.count > 5, fields[5] != .none {
            throw CheckpointError("\"\(name)\": storage views of the pre-1.0 format are not supported")
        }
        let dtype: DType
        if type.name == "UntypedStorage" {
            dtype = .u8
        } else if let typed = TorchCheckpoint.storageTypes[type.name] {
            dtype = typed
        } else {
            throw CheckpointError("\"\(name)\": unsupported storage type \(type)")
        }
        if let cached = storages[key] {
            guard cached.dtype == dtype else {
                throw CheckpointError("storage \(key) is used as both \(cached.dtype.rawValue) and \(dtype.rawValue)")
            }
            return cached
        }
        let storage = Storage(dtype: dtype, bytes: try loadStorage(key, dtype, numel))
        storages[key] = storage
        return storage
    }

    /// Copies the strided view (offset, size, stride in elements of `dtype`) into C order.
    func view(_ storage: Storage, dtype: DType, arguments: [PickleValue], name: String) throws -> HostTensor {
        guard let offset = arguments[1].intValue,
              let shape = arguments[2].elements?.map(\.intValue), let stride = arguments[3].elements?.map(\.intValue),
              !shape.contains(nil), !stride.contains(nil), shape.count == stride.count else {
            throw CheckpointError("\"\(name)\": tensor offset, size and stride are not integers of matching rank")
        }
        let sizes = shape.map { $0! }, strides = stride.map { $0! }
        guard offset >= 0, sizes.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw CheckpointError("\"\(name)\": negative offset, size or stride (offset \(offset), size \(sizes), stride \(strides))")
        }
        let elementSize = dtype.byteSize
        let available = storage.bytes.count / elementSize
        var count = 1
        var lastIndex = offset
        for (size, step) in zip(sizes, strides) {
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow, product <= 1 << 40 else { throw CheckpointError("\"\(name)\": size \(sizes) is too large") }
            count = product
            if size > 0 {
                let (reach, overflowReach) = (size - 1).multipliedReportingOverflow(by: step)
                guard !overflowReach, reach <= 1 << 40 else { throw CheckpointError("\"\(name)\": stride \(strides) is too large") }
                lastIndex += reach
            }
        }
        if count == 0 { return HostTensor(dtype: dtype, shape: sizes, data: []) }
        // Stride-0 views (expand) may be larger than their storage, but not without bound.
        guard count <= max(1 << 24, available * 4096) else {
            throw CheckpointError("\"\(name)\": tensor of size \(sizes) is implausibly large for its storage of \(available) elements")
        }
        guard lastIndex < available else {
            throw CheckpointError("\"\(name)\": tensor of size \(sizes), stride \(strides), offset \(offset) reaches element \(lastIndex), but its storage holds \(available) \(dtype.rawValue) elements")
        }
        // C-contiguous views (almost every tensor of a state_dict) are one slice of the storage.
        var contiguousStride = 1
        var isContiguous = true
        for (size, step) in zip(sizes, strides).reversed() where size > 1 {
            if step != contiguousStride { isContiguous = false }
            contiguousStride *= size
        }
        if isContiguous {
            return HostTensor(dtype: dtype, shape: sizes,
                              data: Array(storage.bytes[(offset * elementSize)..<((offset + count) * elementSize)]))
        }
        var out = [UInt8](repeating: 0, count: count * elementSize)
        storage.bytes.withUnsafeBytes { source in
            out.withUnsafeMutableBytes { destination in
                // Walk the output in C order, advancing an index into the storage.
                var index = [Int](repeating: 0, count: sizes.count)
                var position = offset
                for element in 0..<count {
                    destination.baseAddress!.advanced(by: element * elementSize)
                        .copyMemory(from: source.baseAddress!.advanced(by: position * elementSize), byteCount: elementSize)
                    var axis = sizes.count - 1
                    while axis >= 0 {
                        index[axis] += 1
                        position += strides[axis]
                        if index[axis] < sizes[axis] { break }
                        position -= strides[axis] * sizes[axis]
                        index[axis] = 0
                        axis -= 1
                    }
                }
            }
        }
        return HostTensor(dtype: dtype, shape: sizes, data: out)
    }

    func summary(_ value: PickleValue) -> String {
        switch value {
        case .reduce(.global(let function), _): return "(a call of \(function))"
        case .newObject(.global(let type), _): return "(an object of \(type))"
        case .build(let object, _): return summary(object)
        case .global(let global): return "(\(global))"
        case .persistentID: return "(a bare storage)"
        default: return "(\(String(describing: value).prefix(60)))"
        }
    }
}

/// PyTorch's zip format: `<folder>/data.pkl` with storages in `<folder>/data/<key>`.
private struct ZipReader {
    let archive: ZipArchive

    init(data: Data) throws {
        archive = try ZipArchive(bytes: data)
    }

    func checkpoint() throws -> TorchCheckpoint {
        guard let pickleName = archive.entries.keys.filter({ $0 == "data.pkl" || $0.hasSuffix("/data.pkl") })
            .min(by: { ($0.count, $0) < ($1.count, $1) }), let pickleEntry = archive.entries[pickleName] else {
            throw CheckpointError("zip archive has no data.pkl; not a torch.save file")
        }
        let folder = String(pickleName.dropLast("data.pkl".count))
        if let order = archive.entries[folder + "byteorder"] {
            let text = String(decoding: try archive.read(order), as: UTF8.self)
            guard text == "little" else { throw CheckpointError("checkpoint byte order is \"\(text)\"; only little-endian is supported") }
        }
        let root = try Pickle.parse(try archive.read(pickleEntry), allowedGlobals: TorchCheckpoint.allowedGlobals)
        var interpreter = Interpreter { key, dtype, numel in
            guard let entry = archive.entries[folder + "data/" + key] else {
                throw CheckpointError("storage \(key) is missing from the archive (no \(folder)data/\(key))")
            }
            let bytes = try archive.read(entry)
            let (needed, overflow) = numel.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, bytes.count >= needed else {
                throw CheckpointError("storage \(key) has \(bytes.count) bytes, shorter than its \(numel) \(dtype.rawValue) elements (\(needed) bytes)")
            }
            return Array(bytes[0..<needed])
        }
        return try interpreter.run(root)
    }
}

/// The pre-1.6 format: pickles of a magic number, protocol version and system info, the data
/// pickle, the list of storage keys, then each storage as an 8-byte element count and its bytes.
/// A file that is one plain pickle (no magic number) is read as such.
private struct LegacyReader {
    let bytes: [UInt8]
    static let magicNumber: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19] // 0x1950a86a20f9469cfc6c LE

    func checkpoint() throws -> TorchCheckpoint {
        let allowed = TorchCheckpoint.allowedGlobals
        let (first, afterMagic) = try Pickle.parsePrefix(bytes, from: 0, allowedGlobals: allowed)
        guard case .bigInt(let magic) = first, magic == LegacyReader.magicNumber else {
            // Not torch's legacy format: a plain pickle (e.g. pickle.dump of a trigger dict).
            var interpreter = Interpreter { key, _, _ in
                throw CheckpointError("plain pickle refers to storage \(key), which it cannot contain")
            }
            let (root, end) = (first, afterMagic)
            guard end == bytes.count else { throw CheckpointError("\(bytes.count - end) unexpected bytes after the pickle") }
            return try interpreter.run(root)
        }
        let (version, afterVersion) = try Pickle.parsePrefix(bytes, from: afterMagic, allowedGlobals: [])
        guard version == .int(1001) else { throw CheckpointError("legacy checkpoint protocol \(version), expected 1001") }
        let (systemInfo, afterInfo) = try Pickle.parsePrefix(bytes, from: afterVersion, allowedGlobals: [])
        if let little = systemInfo["little_endian"], little != .bool(true) {
            throw CheckpointError("checkpoint was written on a big-endian machine; not supported")
        }
        let (root, afterRoot) = try Pickle.parsePrefix(bytes, from: afterInfo, allowedGlobals: allowed)
        let (keyList, afterKeys) = try Pickle.parsePrefix(bytes, from: afterRoot, allowedGlobals: [])
        guard let keys = keyList.elements?.compactMap(\.stringValue), keys.count == keyList.elements?.count else {
            throw CheckpointError("legacy checkpoint storage key list is not a list of strings")
        }
        // Storages follow back to back in key order; their element sizes come from the
        // persistent ids of the data pickle.
        if keys.isEmpty {
            var interpreter = Interpreter { key, _, _ in throw CheckpointError("storage \(key) is not in the file") }
            return try interpreter.run(root)
        }
        var sizes: [String: Int] = [:]
        collectStorageSizes(root, into: &sizes)
        var spans: [String: (start: Int, count: Int)] = [:]
        var position = afterKeys
        for key in keys {
            guard bytes.count - position >= 8 else { throw CheckpointError("truncated: storage \(key) has no element count") }
            let count = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[position + $1]) << (8 * UInt64($1)) }
            guard let size = sizes[key] else { throw CheckpointError("storage \(key) is listed but never used") }
            let (length, overflow) = Int(clamping: count).multipliedReportingOverflow(by: size)
            guard !overflow, length <= bytes.count - position - 8 else {
                throw CheckpointError("truncated: storage \(key) of \(count) elements of \(size) bytes does not fit the \(bytes.count - position - 8) bytes left")
            }
            spans[key] = (position + 8, length)
            position += 8 + length
        }
        let data = bytes
        var interpreter = Interpreter { key, dtype, numel in
            guard let span = spans[key] else { throw CheckpointError("storage \(key) is not in the file") }
            let (needed, overflow) = numel.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, span.count >= needed else {
                throw CheckpointError("storage \(key) has \(span.count) bytes, shorter than its \(numel) \(dtype.rawValue) elements (\(needed) bytes)")
            }
            return Array(data[span.start..<(span.start + needed)])
        }
        return try interpreter.run(root)
    }

    /// Element sizes of every storage referenced by a persistent id in the tree.
    private func collectStorageSizes(_ value: PickleValue, into sizes: inout [String: Int]) {
        switch value {
        case .persistentID(.tuple(let fields)):
            if fields.count >= 2, case .global(let type) = fields[1], let key = fields.count > 2 ? fields[2].stringValue : nil {
                sizes[key] = type.name == "UntypedStorage" ? 1 : TorchCheckpoint.storageTypes[type.name]?.byteSize
            }
        case .list(let items), .tuple(let items), .appends(_, let items):
            for item in items { collectStorageSizes(item, into: &sizes) }
            if case .appends(let object, _) = value { collectStorageSizes(object, into: &sizes) }
        case .dict(let entries), .setItems(_, let entries):
            for entry in entries { collectStorageSizes(entry.value, into: &sizes) }
            if case .setItems(let object, _) = value { collectStorageSizes(object, into: &sizes) }
        case .reduce(let a, let b), .newObject(let a, let b), .build(let a, let b):
            collectStorageSizes(a, into: &sizes)
            collectStorageSizes(b, into: &sizes)
        case .persistentID(let inner):
            collectStorageSizes(inner, into: &sizes)
        default:
            break
        }
    }
}
