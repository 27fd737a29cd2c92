import Backend
import Formats
import NN
import Support

/// The architectures a checkpoint can name, and how to rebuild each from its settings or from
/// the tensors of a PyTorch state_dict (which carry no metadata).
public enum ModelZoo {
    public static let architectures = [ResNet18.architecture]

    /// Builds the model a state_dict was saved from.
    public static func model(for tensors: [String: HostTensor], metadata: [String: String], source: String,
                             seed: UInt64 = 0, on backend: Backend) throws -> Model {
        let architecture = metadata["architecture"] ?? ResNet18.architecture
        guard architecture == ResNet18.architecture else {
            throw FileError(source, "architecture \"\(architecture)\" is not one of \(architectures.joined(separator: ", "))")
        }
        guard let width = metadata["width"].flatMap(Int.init) ?? resNetWidth(tensors) else {
            throw FileError(source, "not a ResNet-18 checkpoint: no conv1.weight of shape [width, 3, 3, 3]")
        }
        let classes = metadata["num_classes"].flatMap(Int.init) ?? tensors["linear.bias"]?.shape.first ?? 10
        return try ResNet18.model(width: width, numClasses: classes, seed: seed, on: backend)
    }

    /// The base width a ResNet state_dict was saved with (from `conv1.weight`), if it has one.
    public static func resNetWidth(_ tensors: [String: HostTensor]) -> Int? {
        guard let shape = tensors["conv1.weight"]?.shape, shape.count == 4, shape[0] > 0 else { return nil }
        return shape[0]
    }
}

/// Model checkpoints as safetensors with PyTorch's names: `load_state_dict(load_file(path))`
/// works in PyTorch. Metadata records the architecture and the settings that rebuild it.
public enum Checkpoint {
    public static func save(_ model: Model, to path: String, extraMetadata: [String: String] = [:]) throws {
        var metadata = extraMetadata
        for (key, value) in model.settings { metadata[key] = value }
        metadata["architecture"] = model.architecture
        metadata["num_classes"] = String(model.numClasses)
        metadata["format"] = "pt"
        try SafeTensors(tensors: model.stateDict(), metadata: metadata).write(path: path)
    }

    /// Reads a checkpoint into a new model of the architecture it was saved with: our
    /// safetensors files, or PyTorch's `torch.save(model.state_dict())` files (read without
    /// executing pickle code).
    public static func load(_ path: String, strict: Bool = true, on backend: Backend) throws
        -> (model: Model, warnings: [String]) {
        let file = try TensorFile.read(path: path)
        var tensors: [String: HostTensor] = [:]
        for entry in file.stateDict { tensors[entry.name] = entry.tensor }
        let metadata = file.format == .safetensors ? file.metadata : [:]
        return try model(from: tensors, metadata: metadata, source: path, strict: strict, on: backend)
    }

    /// A model from named tensors (safetensors or an imported PyTorch state_dict).
    public static func model(from tensors: [String: HostTensor], metadata: [String: String] = [:], source: String,
                             strict: Bool = true, on backend: Backend) throws -> (model: Model, warnings: [String]) {
        let model = try ModelZoo.model(for: tensors, metadata: metadata, source: source, on: backend)
        let warnings = try model.load(stateDict: tensors, strict: strict, source: source)
        return (model, warnings)
    }
}
