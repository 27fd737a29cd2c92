import Foundation
import Support

/// Any file of named tensors this project accepts, recognised by its content: safetensors,
/// `torch.save` files (zip, legacy, plain pickle) and `.npy`. Lets `--checkpoint`,
/// `--trigger-info`, `convert` and `inspect` take PyTorch files beside our own.
public struct TensorFile: Equatable {
    /// Which format a file turned out to be.
    public enum Format: String, Sendable {
        case safetensors
        case torch
        case npy
    }

    public var format: Format
    /// safetensors: sorted by name; torch: pickle order with dotted names; npy: one tensor "array".
    public var tensors: [NamedTensor]
    public var metadata: [String: String]

    public init(format: Format, tensors: [NamedTensor], metadata: [String: String]) {
        self.format = format
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The tensors by name.
    public var dictionary: [String: HostTensor] {
        Dictionary(tensors.map { ($0.name, $0.tensor) }, uniquingKeysWith: { first, _ in first })
    }

    /// Model weights: the tensors under a top-level "state_dict" key (prefix removed) when there
    /// is one, as the reference loader accepts, else all tensors.
    public var stateDict: [NamedTensor] { TensorFile.stateDict(of: tensors) }

    static func stateDict(of tensors: [NamedTensor]) -> [NamedTensor] {
        let prefix = "state_dict."
        let nested = tensors.filter { $0.name.hasPrefix(prefix) }
        guard !nested.isEmpty else { return tensors }
        return nested.map { NamedTensor(name: String($0.name.dropFirst(prefix.count)), tensor: $0.tensor) }
    }

    /// Reads a file of any supported format; errors name the file and what was expected.
    public static func read(path: String) throws -> TensorFile {
        let data = try InputFile.map(path, what: "tensor file")
        switch try format(of: [UInt8](data.prefix(16)), size: data.count, path: path) {
        case .npy:
            let tensor = try NPY.decode([UInt8](data), path: path)
            return TensorFile(format: .npy, tensors: [NamedTensor(name: "array", tensor: tensor)], metadata: [:])
        case .torch:
            let checkpoint = try TorchCheckpoint.decode(data, path: path)
            return TensorFile(format: .torch, tensors: checkpoint.tensors, metadata: checkpoint.metadata)
        case .safetensors:
            let file = try data.withUnsafeBytes { try SafeTensors.decode($0, path: path) }
            return TensorFile(format: .safetensors,
                              tensors: file.names.map { NamedTensor(name: $0, tensor: file.tensors[$0]!) },
                              metadata: file.metadata)
        }
    }

    /// The format a file's first 16 bytes announce.
    static func format(of prefix: [UInt8], size: Int, path: String) throws -> Format {
        if prefix.starts(with: [0x93] + Array("NUMPY".utf8)) { return .npy }
        // Before the pickle test: a header length whose low byte is 0x80 (128, 384, ...) starts
        // like a pickle's PROTO; a pickle's bytes 2-7 are opcodes, never a length that fits.
        if prefix.count > 8, prefix[8] == UInt8(ascii: "{"), SafeTensors.Header.lengthPrefix(prefix) <= UInt64(size - 8) {
            return .safetensors
        }
        if prefix.starts(with: [0x50, 0x4B, 0x03, 0x04]) || prefix.first == 0x80 { return .torch }
        if prefix.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            throw FileError(path, "is a PNG image; expected a tensor file (.safetensors, PyTorch .pt/.pth/.th, .npy)")
        }
        throw FileError(path, "not a tensor file: expected safetensors, a PyTorch checkpoint (torch.save) or .npy")
    }

    /// One tensor of a listing: everything but its values.
    public struct Summary: Equatable, Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var byteCount: Int
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// What a file holds without its values, for `inspect`: a safetensors file is listed from
    /// its header alone (a multi-gigabyte file in milliseconds), other formats are read whole.
    public static func list(path: String) throws -> (format: Format, tensors: [Summary], metadata: [String: String]) {
        let handle = try InputFile.open(path, what: "tensor file")
        let size = try InputFile.size(of: handle, path: path)
        let prefix = try InputFile.read(handle, count: min(16, size), path: path)
        try? handle.close()
        if try format(of: prefix, size: size, path: path) == .safetensors {
            let header = try SafeTensors.Header.read(path: path)
            let tensors = header.entries.map { Summary(name: $0.name, dtype: $0.dtype, shape: $0.shape, byteCount: $0.byteCount) }
            return (.safetensors, tensors, header.metadata)
        }
        let file = try read(path: path)
        let tensors = file.tensors.map {
            Summary(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape, byteCount: $0.tensor.data.count)
        }
        return (file.format, tensors, file.metadata)
    }
}
