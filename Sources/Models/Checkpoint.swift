import Backend
import Formats
import NN
import Support

/// The models this toolkit builds: the name a checkpoint's `architecture` metadata records and
/// the `--model` flag's name.
public enum Architecture: String, CaseIterable, Sendable {
    case resnet18 = "resnet18-cifar"
    case preactResNet18 = "preact-resnet18"
    case vgg16 = "vgg16-bn"
    case vgg19 = "vgg19-bn"
    case mobileNetV2 = "mobilenetv2"

    /// The `--model` value: the architecture name, except plain `resnet18` for ResNet-18.
    public var flagName: String { self == .resnet18 ? "resnet18" : rawValue }

    /// From a `--model` value (the checkpoint name `resnet18-cifar` is accepted too).
    public init?(flagName: String) {
        guard let match = Self.allCases.first(where: { $0.flagName == flagName || $0.rawValue == flagName }) else {
            return nil
        }
        self = match
    }

    /// The ResNet family has CPU-sized narrow variants on the CLI (`--width`); the others are
    /// built at the reference width there (narrow ones exist for tests and load from files).
    public var takesWidthFlag: Bool { self == .resnet18 || self == .preactResNet18 }

    /// The reference model's width: the stem's channel count.
    public var referenceWidth: Int { self == .mobileNetV2 ? 32 : 64 }

    /// A new model (the reference width when `width` is nil).
    public func model(width: Int? = nil, numClasses: Int = 10, seed: UInt64 = 0, on backend: Backend) throws -> Model {
        let width = width ?? referenceWidth
        let root: Layer
        switch self {
        case .resnet18: return try ResNet18.model(width: width, numClasses: numClasses, seed: seed, on: backend)
        case .preactResNet18: root = try PreActResNet18(width: width, numClasses: numClasses, seed: seed, on: backend)
        case .vgg16: root = try VGG(.vgg16, width: width, numClasses: numClasses, seed: seed, on: backend)
        case .vgg19: root = try VGG(.vgg19, width: width, numClasses: numClasses, seed: seed, on: backend)
        case .mobileNetV2: root = try MobileNetV2(width: width, numClasses: numClasses, seed: seed, on: backend)
        }
        return Model(root: root, architecture: rawValue, settings: ["width": String(width)], numClasses: numClasses,
                     on: backend)
    }
}

/// How to rebuild a model from a checkpoint's metadata, or from the tensors of a PyTorch
/// state_dict (which carry no metadata).
public enum ModelZoo {
    public static let architectures = Architecture.allCases.map(\.rawValue)

    /// Builds the model a state_dict was saved from. With `expected` (the user's `--model`), a
    /// checkpoint of another architecture is an error naming both.
    public static func model(for tensors: [String: HostTensor], metadata: [String: String], source: String,
                             expected: Architecture? = nil, seed: UInt64 = 0, on backend: Backend) throws -> Model {
        let architecture: Architecture
        if let named = metadata["architecture"] {
            guard let known = Architecture(rawValue: named) else {
                throw FileError(source, "architecture \"\(named)\" is not one of \(architectures.joined(separator: ", "))")
            }
            architecture = known
        } else if let inferred = self.architecture(of: tensors) {
            architecture = inferred
        } else {
            throw FileError(source, "its keys match none of \(architectures.joined(separator: ", ")) (no metadata "
                + "names the architecture; keys begin " + tensors.keys.sorted().prefix(4).joined(separator: ", ") + ")")
        }
        if let expected, expected != architecture {
            throw FileError(source, "holds a \(architecture.flagName) model, but --model asks for \(expected.flagName)")
        }
        guard let width = metadata["width"].flatMap(Int.init) ?? stemWidth(tensors, architecture) else {
            throw FileError(source, "not a \(architecture.rawValue) checkpoint: no \(stemKey(architecture)) of shape "
                + "[width, 3, 3, 3]")
        }
        let classes = metadata["num_classes"].flatMap(Int.init)
            ?? tensors[architecture.isVGG ? "classifier.bias" : "linear.bias"]?.shape.first ?? 10
        return try architecture.model(width: width, numClasses: classes, seed: seed, on: backend)
    }

    /// The architecture whose state_dict has these keys, where the keys tell (nil otherwise).
    public static func architecture(of tensors: [String: HostTensor]) -> Architecture? {
        let has = { (key: String) in tensors[key] != nil }
        if has("features.0.weight") && has("classifier.weight") {
            // The depths differ only in how many convolutions `features` holds.
            let convolutions = tensors.filter { $0.key.hasPrefix("features.") && $0.key.hasSuffix(".weight")
                && $0.value.shape.count == 4 }.count
            return VGG.Depth.allCases.first { $0.convolutions == convolutions }?.architecture
        }
        if has("layers.0.conv1.weight") && has("conv2.weight") { return .mobileNetV2 }
        guard has("conv1.weight") && has("layer1.0.conv1.weight") else { return nil }
        // ResNet-18 normalises after its stem; PreAct-ResNet18 normalises inside each block first.
        if has("bn1.weight") { return .resnet18 }
        return has("layer1.0.bn1.weight") ? .preactResNet18 : nil
    }

    /// The stem's channel count: every model's width.
    public static func stemWidth(_ tensors: [String: HostTensor], _ architecture: Architecture) -> Int? {
        guard let shape = tensors[stemKey(architecture)]?.shape, shape.count == 4, shape[0] > 0 else { return nil }
        return shape[0]
    }

    private static func stemKey(_ architecture: Architecture) -> String {
        architecture.isVGG ? "features.0.weight" : "conv1.weight"
    }

    /// The base width a ResNet state_dict was saved with (from `conv1.weight`), if it has one.
    public static func resNetWidth(_ tensors: [String: HostTensor]) -> Int? { stemWidth(tensors, .resnet18) }

    /// Checks a model's settings, naming the architecture.
    static func validate(_ architecture: Architecture, width: Int, allowed: ClosedRange<Int>, numClasses: Int) throws {
        guard allowed.contains(width) else {
            throw ShapeError("\(architecture.rawValue) width must be \(allowed.lowerBound) to \(allowed.upperBound), got \(width)")
        }
        guard numClasses >= 1 else { throw ShapeError("\(architecture.rawValue) needs at least one class, got \(numClasses)") }
    }
}

extension Architecture {
    var isVGG: Bool { self == .vgg16 || self == .vgg19 }
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
    /// With `expected` (the user's `--model`), a checkpoint of another architecture is an error.
    public static func load(_ path: String, strict: Bool = true, expected: Architecture? = nil, on backend: Backend) throws
        -> (model: Model, warnings: [String]) {
        let file = try TensorFile.read(path: path)
        var tensors: [String: HostTensor] = [:]
        for entry in file.stateDict { tensors[entry.name] = entry.tensor }
        let metadata = file.format == .safetensors ? file.metadata : [:]
        return try model(from: tensors, metadata: metadata, source: path, strict: strict, expected: expected, on: backend)
    }

    /// A model from named tensors (safetensors or an imported PyTorch state_dict).
    public static func model(from tensors: [String: HostTensor], metadata: [String: String] = [:], source: String,
                             strict: Bool = true, expected: Architecture? = nil, on backend: Backend) throws
        -> (model: Model, warnings: [String]) {
        let model = try ModelZoo.model(for: tensors, metadata: metadata, source: source, expected: expected, on: backend)
        let warnings = try model.load(stateDict: tensors, strict: strict, source: source)
        return (model, warnings)
    }
}
