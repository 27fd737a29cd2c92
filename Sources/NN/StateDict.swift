import DNNL
import Formats
import Support

/// PyTorch-compatible state_dict of a ResNet-18: parameter and buffer names and shapes exactly as
/// `model.state_dict()` of the ANP paper's code, so checkpoints move both ways.
extension ResNet18 {
    /// (name, shape, dtype) in state_dict order, for a base width.
    public static func stateDictLayout(width: Int, numClasses: Int = 10) -> [(name: String, shape: [Int], dtype: DType)] {
        var out: [(String, [Int], DType)] = []
        func bn(_ name: String, _ c: Int) {
            out += [(name + ".weight", [c], .f32), (name + ".bias", [c], .f32), (name + ".running_mean", [c], .f32),
                    (name + ".running_var", [c], .f32), (name + ".num_batches_tracked", [], .i64)]
        }
        out.append(("conv1.weight", [width, 3, 3, 3], .f32))
        bn("bn1", width)
        var inPlanes = width
        for (layer, (multiplier, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].enumerated() {
            let planes = width * multiplier
            for index in 0..<2 {
                let name = "layer\(layer + 1).\(index)"
                out.append((name + ".conv1.weight", [planes, inPlanes, 3, 3], .f32))
                bn(name + ".bn1", planes)
                out.append((name + ".conv2.weight", [planes, planes, 3, 3], .f32))
                bn(name + ".bn2", planes)
                if (index == 0 && stride != 1) || inPlanes != planes {
                    out.append((name + ".shortcut.0.weight", [planes, inPlanes, 1, 1], .f32))
                    bn(name + ".shortcut.1", planes)
                }
                inPlanes = planes
            }
        }
        out += [("linear.weight", [numClasses, 8 * width], .f32), ("linear.bias", [numClasses], .f32)]
        return out
    }

    /// The base width a state_dict was saved with (from `conv1.weight`), if it has one.
    public static func inferWidth(_ tensors: [String: HostTensor]) -> Int? {
        guard let shape = tensors["conv1.weight"]?.shape, shape.count == 4, shape[0] > 0 else { return nil }
        return shape[0]
    }

    /// Parameters and buffers as host tensors, keyed by state_dict name.
    public func stateDict() throws -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for p in parameters { out[p.name] = HostTensor(floats: try p.plainValues(), shape: p.plainShape) }
        for bn in batchNorms {
            out[bn.name + ".running_mean"] = HostTensor(floats: try bn.runningMean.plainValues(), shape: [bn.channels])
            out[bn.name + ".running_var"] = HostTensor(floats: try bn.runningVar.plainValues(), shape: [bn.channels])
            out[bn.name + ".num_batches_tracked"] = HostTensor(int64s: [bn.batchesTracked], shape: [])
        }
        return out
    }

    /// Loads a state_dict. Missing, unexpected or wrongly shaped entries are an error listing
    /// them all, unless `strict` is false (then they are returned as warnings and skipped).
    @discardableResult
    public func load(stateDict tensors: [String: HostTensor], strict: Bool = true, source: String = "state_dict")
        throws -> [String] {
        let layout = Self.stateDictLayout(width: width, numClasses: numClasses)
        var problems: [String] = []
        let expected = Set(layout.map(\.name))
        for entry in layout {
            guard let t = tensors[entry.name] else {
                problems.append("missing \(entry.name) \(entry.shape)")
                continue
            }
            if t.shape != entry.shape && !(entry.shape.isEmpty && t.elementCount == 1) {
                problems.append("\(entry.name): shape \(t.shape), expected \(entry.shape)")
            }
        }
        for name in tensors.keys.sorted() where !expected.contains(name) {
            problems.append("unexpected \(name) \(tensors[name]!.shape)")
        }
        if strict && !problems.isEmpty {
            throw ShapeError("\(source) does not match ResNet-18 width \(width): " + problems.joined(separator: "; "))
        }
        func floats(_ name: String) throws -> [Float]? {
            guard let t = tensors[name], t.elementCount == (layout.first { $0.name == name }?.shape.reduce(1, *) ?? -1)
            else { return nil }
            switch t.dtype {
            case .f32: return try t.floats()
            case .f64: return try t.doubles().map { Float($0) }
            default: throw ShapeError("\(source): \(name) has dtype \(t.dtype.rawValue), expected F32")
            }
        }
        for p in parameters {
            if let values = try floats(p.name) { try p.setPlainValues(values) }
            p.zeroMomentum()
        }
        for bn in batchNorms {
            if let m = try floats(bn.name + ".running_mean") { try bn.runningMean.setPlainValues(m) }
            if let v = try floats(bn.name + ".running_var") { try bn.runningVar.setPlainValues(v) }
            if let n = tensors[bn.name + ".num_batches_tracked"], n.elementCount == 1 {
                bn.batchesTracked = n.dtype == .i64 ? try n.int64s()[0] : 0
            }
        }
        return problems
    }
}

/// Model checkpoints as safetensors with PyTorch's names: `load_state_dict(load_file(path))`
/// works in PyTorch. Metadata records the architecture and width.
public enum Checkpoint {
    public static func save(_ model: ResNet18, to path: String, extraMetadata: [String: String] = [:]) throws {
        var metadata = extraMetadata
        metadata["architecture"] = "resnet18-cifar"
        metadata["width"] = String(model.width)
        metadata["num_classes"] = String(model.numClasses)
        metadata["format"] = "pt"
        try SafeTensors(tensors: model.stateDict(), metadata: metadata).write(path: path)
    }

    /// Reads a checkpoint into a new model of the width it was saved with: our safetensors files,
    /// or PyTorch's `torch.save(model.state_dict())` files (read without executing pickle code).
    public static func load(_ path: String, strict: Bool = true) throws -> (model: ResNet18, warnings: [String]) {
        let file = try TensorFile.read(path: path)
        var tensors: [String: HostTensor] = [:]
        for entry in file.stateDict { tensors[entry.name] = entry.tensor }
        let metadata = file.format == .safetensors ? file.metadata : [:]
        return try model(from: tensors, metadata: metadata, source: path, strict: strict)
    }

    /// A model from named tensors (safetensors or an imported PyTorch state_dict).
    public static func model(from tensors: [String: HostTensor], metadata: [String: String] = [:], source: String,
                             strict: Bool = true) throws -> (model: ResNet18, warnings: [String]) {
        guard let width = metadata["width"].flatMap(Int.init) ?? ResNet18.inferWidth(tensors) else {
            throw FileError(source, "not a ResNet-18 checkpoint: no conv1.weight of shape [width, 3, 3, 3]")
        }
        let classes = metadata["num_classes"].flatMap(Int.init) ?? tensors["linear.bias"]?.shape.first ?? 10
        let model = try ResNet18(width: width, numClasses: classes)
        let warnings = try model.load(stateDict: tensors, strict: strict, source: source)
        return (model, warnings)
    }
}
