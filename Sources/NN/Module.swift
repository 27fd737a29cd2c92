import Backend

/// A node of a model's tree. Children, parameters and buffers are found by walking stored
/// properties (children are declared with `@Child`), so a module lists nothing by hand: its
/// state_dict names, its BatchNorm layers and module transforms all come from one walk.
/// Names are PyTorch's: the property names, dot-joined (`layer2.0.shortcut.1.running_mean`).
open class Module {
    /// Dotted path from the root ("" for the root), set when the root names its tree.
    public internal(set) var name = ""

    public init() {}

    /// Direct children in declaration order (base-class properties first).
    open var namedChildren: [(name: String, module: Module)] {
        Self.storedProperties(of: self).compactMap { label, value in
            (value as? AnyChild).map { (String(label.dropFirst()), $0.anyModule) }
        }
    }

    /// Replaces a direct child; false when the name is unknown or the type does not fit.
    open func replaceChild(named name: String, with module: Module) -> Bool {
        for (label, value) in Self.storedProperties(of: self) where label == "_" + name {
            return (value as? AnyChild)?.replace(with: module) ?? false
        }
        return false
    }

    /// This module's own parameters, buffers and counters, in declaration order.
    public var ownParameters: [Parameter] { Self.storedProperties(of: self).compactMap { $0.1 as? Parameter } }
    public var ownBuffers: [Buffer] { Self.storedProperties(of: self).compactMap { $0.1 as? Buffer } }
    public var ownCounters: [Counter] { Self.storedProperties(of: self).compactMap { $0.1 as? Counter } }

    static func storedProperties(of object: AnyObject) -> [(String, Any)] {
        var mirrors: [Mirror] = []
        var mirror: Mirror? = Mirror(reflecting: object)
        while let m = mirror {
            mirrors.insert(m, at: 0)
            mirror = m.superclassMirror
        }
        return mirrors.flatMap { $0.children.compactMap { child in child.label.map { ($0, child.value) } } }
    }
}

/// Declares a child module: `@Child var bn1: BatchNorm2d`. A reference box, so the tree walk
/// can swap the module (ANP's noisy BatchNorm) without the parent knowing.
@propertyWrapper
public final class Child<M: Module>: AnyChild {
    public var wrappedValue: M
    public init(wrappedValue: M) { self.wrappedValue = wrappedValue }
    var anyModule: Module { wrappedValue }
    func replace(with module: Module) -> Bool {
        guard let typed = module as? M else { return false }
        wrappedValue = typed
        return true
    }
}

protocol AnyChild {
    var anyModule: Module { get }
    func replace(with module: Module) -> Bool
}

extension Module {
    /// Every module of the tree, depth first, parents before children, with its dotted name.
    public func namedModules(prefix: String = "") -> [(name: String, module: Module)] {
        [(prefix, self)] + namedChildren.flatMap { child in
            child.module.namedModules(prefix: prefix.isEmpty ? child.name : prefix + "." + child.name)
        }
    }

    /// The modules of one type (e.g. every BatchNorm2d), in tree order.
    public func modules<M>(of type: M.Type) -> [M] { namedModules().compactMap { $0.module as? M } }

    /// Trainable parameters in state_dict order.
    public var parameters: [Parameter] { namedModules().flatMap { $0.module.ownParameters } }

    /// Sets `name` on every module, parameter and buffer from its place in the tree.
    public func assignNames() {
        for (path, module) in namedModules() {
            module.name = path
            let prefix = path.isEmpty ? "" : path + "."
            for p in module.ownParameters { p.name = prefix + p.localName }
            for b in module.ownBuffers { b.name = prefix + b.localName }
            for c in module.ownCounters { c.name = prefix + c.localName }
        }
    }

    /// Replaces every module for which `transform` returns a new one (children of a replaced
    /// module are not visited), then renames the tree. Returns how many were replaced.
    @discardableResult
    public func transformModules(_ transform: (String, Module) throws -> Module?) rethrows -> Int {
        var replaced = 0
        func visit(_ module: Module, _ path: String) throws {
            for (name, child) in module.namedChildren {
                let childPath = path.isEmpty ? name : path + "." + name
                if let replacement = try transform(childPath, child) {
                    precondition(module.replaceChild(named: name, with: replacement),
                                 "\(type(of: replacement)) cannot take the place of \(childPath)")
                    replaced += 1
                } else {
                    try visit(child, childPath)
                }
            }
        }
        try visit(self, "")
        assignNames()
        return replaced
    }
}

/// A trainable tensor and its gradient, in one layout (the compute layout once a layer has
/// adopted one). Optimiser state lives in the optimiser.
public final class Parameter {
    /// The attribute name in its module ("weight"); `name` is the state_dict name.
    public let localName: String
    public internal(set) var name: String
    /// Shape in PyTorch's state_dict (e.g. [10, 512] for `linear.weight`).
    public let plainShape: [Int]
    public private(set) var value: Tensor
    public private(set) var gradient: Tensor
    private var adopted = false

    public init(_ localName: String, plainShape: [Int], storageShape: [Int]? = nil, values: [Float],
                on backend: Backend) throws {
        self.localName = localName
        name = localName
        self.plainShape = plainShape
        value = try backend.upload(values, shape: storageShape ?? plainShape)
        gradient = try backend.makeTensor(value.layout)
    }

    /// Moves value and gradient into the layout a kernel prefers (once: later mismatches, e.g.
    /// at another batch size, are converted per call by the kernel instead).
    func adopt(_ layout: TensorLayout) throws {
        guard !adopted else { return }
        adopted = true
        if value.shape != layout.shape { return }
        value = try value.relayout(to: layout)
        gradient = try gradient.relayout(to: layout)
    }

    public func plainValues() throws -> [Float] { try value.plainValues() }

    public func setPlainValues(_ values: [Float]) throws {
        guard values.count == count else {
            throw ShapeError("\(name): expected \(count) values for shape \(plainShape), got \(values.count)")
        }
        try value.setPlainValues(values)
    }

    public func plainGradient() throws -> [Float] { try gradient.plainValues() }

    public var count: Int { plainShape.reduce(1, *) }
}

/// A float tensor of a module's state that is not trained (BatchNorm's running statistics).
public final class Buffer {
    public let localName: String
    public internal(set) var name: String
    public let tensor: Tensor

    public init(_ localName: String, values: [Float], on backend: Backend) throws {
        self.localName = localName
        name = localName
        tensor = try backend.upload(values, shape: [values.count])
    }

    public var shape: [Int] { tensor.shape }
    public func plainValues() throws -> [Float] { try tensor.plainValues() }
    public func setPlainValues(_ values: [Float]) throws { try tensor.setPlainValues(values) }
}

/// An int64 scalar of a module's state (`num_batches_tracked`).
public final class Counter {
    public let localName: String
    public internal(set) var name: String
    public var value: Int64 = 0
    public init(_ localName: String) {
        self.localName = localName
        name = localName
    }
}

public struct ShapeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
