import Formats

/// PyTorch-compatible state_dicts from the module tree: every parameter, buffer and counter
/// under its dotted name, in `model.state_dict()` order, so checkpoints move both ways.
extension Model {
    public struct StateEntry {
        public var name: String
        public var shape: [Int]
        public var dtype: DType
    }

    /// (name, shape, dtype) in state_dict order.
    public func stateDictLayout() -> [StateEntry] {
        root.namedModules().flatMap { _, module in
            module.ownParameters.map { StateEntry(name: $0.name, shape: $0.plainShape, dtype: .f32) }
                + module.ownBuffers.map { StateEntry(name: $0.name, shape: $0.shape, dtype: .f32) }
                + module.ownCounters.map { StateEntry(name: $0.name, shape: [], dtype: .i64) }
        }
    }

    /// Parameters and buffers as host tensors, keyed by state_dict name.
    public func stateDict() throws -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for (_, module) in root.namedModules() {
            for p in module.ownParameters { out[p.name] = HostTensor(floats: try p.plainValues(), shape: p.plainShape) }
            for b in module.ownBuffers { out[b.name] = HostTensor(floats: try b.plainValues(), shape: b.shape) }
            for c in module.ownCounters { out[c.name] = HostTensor(int64s: [c.value], shape: []) }
        }
        return out
    }

    /// Loads a state_dict. Missing, unexpected or wrongly shaped entries are an error listing
    /// them all, unless `strict` is false (then they are returned as warnings and skipped).
    @discardableResult
    public func load(stateDict tensors: [String: HostTensor], strict: Bool = true, source: String = "state_dict")
        throws -> [String] {
        let layout = stateDictLayout()
        var problems: [String] = []
        var fits = Set<String>()
        for entry in layout {
            guard let t = tensors[entry.name] else {
                problems.append("missing \(entry.name) \(entry.shape)")
                continue
            }
            if t.shape == entry.shape || (entry.shape.isEmpty && t.elementCount == 1) {
                fits.insert(entry.name)
            } else {
                problems.append("\(entry.name): shape \(t.shape), expected \(entry.shape)")
            }
        }
        let expected = Set(layout.map(\.name))
        for name in tensors.keys.sorted() where !expected.contains(name) {
            problems.append("unexpected \(name) \(tensors[name]!.shape)")
        }
        if strict && !problems.isEmpty {
            throw ShapeError("\(source) does not match \(description): " + problems.joined(separator: "; "))
        }
        func floats(_ name: String) throws -> [Float]? {
            guard fits.contains(name), let t = tensors[name] else { return nil }
            switch t.dtype {
            case .f32: return try t.floats()
            case .f64: return try t.doubles().map { Float($0) }
            default: throw ShapeError("\(source): \(name) has dtype \(t.dtype.rawValue), expected F32")
            }
        }
        for (_, module) in root.namedModules() {
            for p in module.ownParameters { if let v = try floats(p.name) { try p.setPlainValues(v) } }
            for b in module.ownBuffers { if let v = try floats(b.name) { try b.setPlainValues(v) } }
            for c in module.ownCounters {
                if fits.contains(c.name), let n = tensors[c.name] { c.value = n.dtype == .i64 ? try n.int64s()[0] : 0 }
            }
        }
        return problems
    }
}
