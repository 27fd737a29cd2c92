import Backend

/// Whether BatchNorm uses batch statistics (and updates its running ones) or running statistics.
public enum Mode {
    case training
    case evaluation
}

/// A module that computes: an explicit forward, and a backward that turns the gradient of its
/// output into the gradient of its input (and writes its parameters' gradients).
///
/// Buffers: `forward` returns a tensor the layer owns (valid until its next forward).
/// `backward` takes ownership of `gradient` (a buffer of `pass.pool`: the layer gives it back
/// or returns it) and returns a pool buffer the caller owns, or nil when
/// `needsInputGradient` is false.
public protocol Layer: Module {
    func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor
    func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor?
}

/// One forward pass: the mode, scratch buffers that live until the pass ends, and the feature
/// taps to record.
public final class ForwardPass {
    public let mode: Mode
    /// Buffers consumed within the pass (a BatchNorm output that only feeds a residual sum).
    public let transients: TensorPool
    let tapped: Set<ObjectIdentifier>
    var captured: [ObjectIdentifier: Tensor] = [:]

    public init(mode: Mode, transients: TensorPool, taps: [Module] = []) {
        self.mode = mode
        self.transients = transients
        tapped = Set(taps.map(ObjectIdentifier.init))
    }

    /// Runs a child and records its output when it is tapped.
    public func run(_ layer: Layer, _ x: Tensor) throws -> Tensor {
        let y = try layer.forward(x, self)
        if tapped.contains(ObjectIdentifier(layer)) { captured[ObjectIdentifier(layer)] = y }
        return y
    }

    public func captured(_ module: Module) -> Tensor? { captured[ObjectIdentifier(module)] }
}

/// One backward pass: whether parameter gradients are wanted (attacks and ANP need only
/// activation gradients), the pool of gradient buffers, and gradients flowing into taps.
public final class BackwardPass {
    public let weightGradients: Bool
    public let pool: TensorPool
    let tapGradients: [ObjectIdentifier: Tensor]

    public init(weightGradients: Bool, pool: TensorPool, tapGradients: [(Module, Tensor)] = []) {
        self.weightGradients = weightGradients
        self.pool = pool
        self.tapGradients = Dictionary(tapGradients.map { (ObjectIdentifier($0.0), $0.1) }, uniquingKeysWith: { a, _ in a })
    }

    /// Runs a child's backward, first adding the gradient that flows into its tapped output.
    public func run(_ layer: Layer, _ gradient: Tensor, needsInputGradient: Bool) throws -> Tensor? {
        if let extra = tapGradients[ObjectIdentifier(layer)] {
            try gradient.backend.addition(gradient.layout, relu: false).forward(gradient, extra, into: gradient)
        }
        return try layer.backward(gradient, self, needsInputGradient: needsInputGradient)
    }
}

/// Holds a layer's output tensor, reallocated only when the layout changes (new batch size):
/// activations are allocated once per (model, batch size, mode) and reused every step.
public struct OutputSlot {
    public private(set) var tensor: Tensor?
    public init() {}
    public mutating func get(_ layout: TensorLayout, on backend: Backend) throws -> Tensor {
        if let tensor, tensor.layout == layout { return tensor }
        let t = try backend.makeTensor(layout)
        tensor = t
        return t
    }
}

/// Reuses buffers by layout: a backward pass takes a buffer per intermediate gradient and gives
/// it back once consumed, so only a few activation-sized buffers are ever alive (the difference
/// between ~1.8 GiB and well under 1 GiB at width 64, batch 128).
public final class TensorPool {
    public let backend: Backend
    private var free: [TensorLayout: [Tensor]] = [:]

    public init(backend: Backend) { self.backend = backend }

    public func take(_ layout: TensorLayout) throws -> Tensor {
        if var list = free[layout], let tensor = list.popLast() {
            free[layout] = list
            return tensor
        }
        return try backend.makeTensor(layout)
    }

    public func give(_ tensor: Tensor) { free[tensor.layout, default: []].append(tensor) }

    public func removeAll() { free.removeAll() }

    /// Frees idle buffers of every layout but `layout` (backward moves to larger activations
    /// layer by layer; the smaller ones would only raise the peak).
    public func keepOnly(_ layout: TensorLayout) { free = free.filter { $0.key == layout } }
}

/// Layers applied in order, named "0", "1", ... as PyTorch's nn.Sequential, or by the given
/// names (a model's top level: `conv1`, `bn1`, `layer1`, ...). Every child can be tapped.
open class Sequential: Module, Layer {
    public private(set) var layers: [Layer]
    private let names: [String]

    public init(_ layers: [Layer]) {
        self.layers = layers
        names = layers.indices.map(String.init)
    }

    public init(named: [(String, Layer)]) {
        layers = named.map(\.1)
        names = named.map(\.0)
    }

    override open var namedChildren: [(name: String, module: Module)] { Array(zip(names, layers.map { $0 as Module })) }

    override open func replaceChild(named name: String, with module: Module) -> Bool {
        guard let i = names.firstIndex(of: name), let layer = module as? Layer else { return false }
        layers[i] = layer
        return true
    }

    open func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        var h = x
        for layer in layers { h = try pass.run(layer, h) }
        return h
    }

    open func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        var g: Tensor? = gradient
        for (i, layer) in layers.enumerated().reversed() {
            guard let current = g else { break }
            g = try pass.run(layer, current, needsInputGradient: i > 0 || needsInputGradient)
            if let g { pass.pool.keepOnly(g.layout) }
        }
        return g
    }
}
