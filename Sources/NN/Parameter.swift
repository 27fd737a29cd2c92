import DNNL

/// A trainable tensor with its PyTorch state_dict name, its gradient and SGD momentum, all in
/// one layout (the compute layout once a layer has adopted one).
public final class Parameter {
    public let name: String
    /// Shape in PyTorch's state_dict (e.g. [10, 512] for `linear.weight`).
    public let plainShape: [Int]
    public private(set) var value: Tensor
    public private(set) var gradient: Tensor
    var momentum: Tensor?
    private var adopted = false

    init(name: String, plainShape: [Int], storageShape: [Int]? = nil, values: [Float]) throws {
        self.name = name
        self.plainShape = plainShape
        value = try Tensor(shape: storageShape ?? plainShape, values: values)
        gradient = try Tensor(desc: value.desc)
    }

    /// Moves value, gradient and momentum into the layout a primitive prefers (once: later
    /// mismatches, e.g. at another batch size, are reordered per call by the op instead).
    func adopt(_ desc: MemoryDesc) throws {
        guard !adopted else { return }
        adopted = true
        if value.desc.shape != desc.shape { return }
        value = try value.reordered(to: desc)
        gradient = try gradient.reordered(to: desc)
        momentum = try momentum?.reordered(to: desc)
    }

    /// Values in PyTorch's order and shape.
    public func plainValues() throws -> [Float] { try value.plainValues() }

    public func setPlainValues(_ values: [Float]) throws {
        guard values.count == plainShape.reduce(1, *) else {
            throw ShapeError("\(name): expected \(plainShape.reduce(1, *)) values for shape \(plainShape), got \(values.count)")
        }
        try value.setPlainValues(values)
    }

    public func plainGradient() throws -> [Float] { try gradient.plainValues() }

    public var count: Int { plainShape.reduce(1, *) }

    func zeroMomentum() { momentum = nil }
}

public struct ShapeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
