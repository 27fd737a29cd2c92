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
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw FileError(path, "cannot read: \(error.localizedDescription)")
        }
        let bytes = [UInt8](data.prefix(16))
        if bytes.starts(with: [0x93] + Array("NUMPY".utf8)) {
            let tensor = try NPY.decode([UInt8](data), path: path)
            return TensorFile(format: .npy, tensors: [NamedTensor(name: "array", tensor: tensor)], metadata: [:])
        }
        if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) || bytes.first == 0x80 {
            let checkpoint = try TorchCheckpoint.decode(data, path: path)
            return TensorFile(format: .torch, tensors: checkpoint.tensors, metadata: checkpoint.metadata)
        }
        if bytes.count > 8, bytes[8] == UInt8(ascii: "{") {
            let file = try SafeTensors.decode([UInt8](data), path: path)
            return TensorFile(format: .safetensors,
                              tensors: file.names.map { NamedTensor(name: $0, tensor: file.tensors[$0]!) },
                              metadata: file.metadata)
        }
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            throw FileError(path, "is a PNG image; expected a tensor file (.safetensors, PyTorch .pt/.pth/.th, .npy)")
        }
        throw FileError(path, "not a tensor file: expected safetensors, a PyTorch checkpoint (torch.save) or .npy")
    }
}
