import Backend
import NN
import Support

/// The CIFAR BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (1x1 conv + BN when the
/// shape changes, else identity: an empty Sequential, as in the reference), ReLU after the sum.
public final class BasicBlock: Module, Layer {
    @Child public var conv1: Conv2d
    @Child public var bn1: BatchNorm2d
    @Child public var conv2: Conv2d
    @Child public var bn2: BatchNorm2d
    @Child public var shortcut: Sequential
    private let backend: Backend
    private var output = OutputSlot()

    public init(_ inPlanes: Int, _ planes: Int, stride: Int, generator: inout SeededGenerator, on backend: Backend) throws {
        self.backend = backend
        conv1 = try Conv2d(inPlanes, planes, kernel: 3, stride: stride, padding: 1, generator: &generator, on: backend)
        bn1 = try BatchNorm2d(planes, fuseReLU: true, on: backend)
        conv2 = try Conv2d(planes, planes, kernel: 3, padding: 1, generator: &generator, on: backend)
        bn2 = try BatchNorm2d(planes, on: backend)
        shortcut = stride != 1 || inPlanes != planes
            ? Sequential([try Conv2d(inPlanes, planes, kernel: 1, stride: stride, generator: &generator, on: backend),
                          try BatchNorm2d(planes, on: backend)])
            : Sequential([])
    }

    /// The outputs of bn2 and the shortcut BN live only until the join, in transient buffers.
    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        let main = try bn2.forward(conv2.forward(bn1.forward(conv1.forward(x, pass), pass), pass), pass, transient: true)
        var residual = x
        if let (conv, bn) = shortcut.projection { residual = try bn.forward(conv.forward(x, pass), pass, transient: true) }
        // Not in place: oneDNN 2.6's binary add with a ReLU post-op gave wrong results in place.
        let y = try output.get(main.layout, on: backend)
        try backend.addition(main.layout, relu: true).forward(main, residual, into: y)
        pass.transients.give(main)
        if residual !== x { pass.transients.give(residual) }
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        guard let y = output.tensor else { throw ShapeError("\(name): backward before forward") }
        let gSum = gradient
        try backend.addition(y.layout, relu: true).reluBackward(output: y, outputGradient: gSum, inputGradient: gSum)
        let gResidual: Tensor
        let g2: Tensor
        if let (conv, bn) = shortcut.projection {
            let gS = try bn.backward(gSum, pass, inPlace: false)
            gResidual = try conv.backward(gS, pass, needsInputGradient: true)!
            g2 = try bn2.backward(gSum, pass, inPlace: true)
        } else {
            gResidual = gSum
            g2 = try bn2.backward(gSum, pass, inPlace: false)
        }
        let g1 = try conv2.backward(g2, pass, needsInputGradient: true)!
        let g1b = try bn1.backward(g1, pass, inPlace: true)
        let gMain = try conv1.backward(g1b, pass, needsInputGradient: true)!
        try backend.addition(gMain.layout, relu: false).forward(gMain, gResidual, into: gMain)
        pass.pool.give(gResidual)
        return gMain
    }
}

/// ResNet-18 for CIFAR as the ANP paper's code defines it (3x3 stem, no max-pool, four stages of
/// two BasicBlocks at width x (1, 2, 4, 8), 4x4 average pool, linear), so parameter names
/// match PyTorch's state_dict. `width` 64 is the real model; 32 and 16 are CPU-sized variants.
public final class ResNet18: Sequential {
    public static let architecture = "resnet18-cifar"
    /// 16 times the real model's parameters (width 64); wider does not fit a CPU machine's memory
    /// (width 5000 asked for 360 GB after seconds of work).
    public static let maximumWidth = 256

    public let width: Int
    public let numClasses: Int

    public init(width: Int = 64, numClasses: Int = 10, seed: UInt64 = 0, on backend: Backend) throws {
        guard (1...Self.maximumWidth).contains(width) else {
            throw ShapeError("ResNet-18 width must be 1 to \(Self.maximumWidth), got \(width)")
        }
        guard numClasses >= 1 else { throw ShapeError("ResNet-18 needs at least one class, got \(numClasses)") }
        self.width = width
        self.numClasses = numClasses
        var generator = SeededGenerator(seed: seed, stream: "resnet18-init")
        let stem: [(String, Layer)] = [
            ("conv1", try Conv2d(3, width, kernel: 3, padding: 1, generator: &generator, on: backend)),
            ("bn1", try BatchNorm2d(width, fuseReLU: true, on: backend)),
        ]
        var stages: [(String, Layer)] = []
        var inPlanes = width
        for (index, (multiplier, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].enumerated() {
            let planes = width * multiplier
            var blocks: [Layer] = []
            for block in 0..<2 {
                blocks.append(try BasicBlock(inPlanes, planes, stride: block == 0 ? stride : 1, generator: &generator,
                                             on: backend))
                inPlanes = planes
            }
            stages.append(("layer\(index + 1)", Sequential(blocks)))
        }
        let head: [(String, Layer)] = [
            ("avgpool", Pool2d(.init(.average, kernel: 4), on: backend)),
            ("linear", try Linear(8 * width, numClasses, generator: &generator, on: backend)),
        ]
        super.init(named: stem + stages + head)
    }

    /// A ready model: the tree with its backend and host-facing passes.
    public static func model(width: Int = 64, numClasses: Int = 10, seed: UInt64 = 0, on backend: Backend) throws -> Model {
        Model(root: try ResNet18(width: width, numClasses: numClasses, seed: seed, on: backend), architecture: architecture,
              settings: ["width": String(width)], numClasses: numClasses, on: backend)
    }
}

extension Sequential {
    /// A projection shortcut's convolution and BatchNorm (nil for the identity, an empty Sequential).
    var projection: (conv: Conv2d, bn: BatchNorm2d)? {
        guard layers.count == 2, let conv = layers[0] as? Conv2d, let bn = layers[1] as? BatchNorm2d else { return nil }
        return (conv, bn)
    }
}
