import Backend
import NN
import Support

/// BackdoorBench's pre-activation block: BN-ReLU before each convolution. The shortcut, where the
/// shape changes a 1x1 convolution alone (no BN), takes the post-ReLU tensor; the identity takes
/// the block's input. No ReLU after the sum.
public final class PreActBlock: Module, Layer {
    // Declaration order is the reference's registration order (bn1, conv1, bn2, conv2, shortcut).
    @Child public var bn1: BatchNorm2d
    @Child public var conv1: Conv2d
    @Child public var bn2: BatchNorm2d
    @Child public var conv2: Conv2d
    @Child public var shortcut: Sequential
    private let backend: Backend
    private var output = OutputSlot()

    public init(_ inPlanes: Int, _ planes: Int, stride: Int, generator: inout SeededGenerator, on backend: Backend) throws {
        self.backend = backend
        // F.relu(bn(x)) as one fused layer: its output is the post-ReLU tensor both branches read.
        bn1 = try BatchNorm2d(inPlanes, fuseReLU: true, on: backend)
        conv1 = try Conv2d(inPlanes, planes, kernel: 3, stride: stride, padding: 1, generator: &generator, on: backend)
        bn2 = try BatchNorm2d(planes, fuseReLU: true, on: backend)
        conv2 = try Conv2d(planes, planes, kernel: 3, padding: 1, generator: &generator, on: backend)
        // The reference has no `shortcut` attribute for the identity: an empty Sequential has no
        // state_dict entries either.
        shortcut = stride != 1 || inPlanes != planes
            ? Sequential([try Conv2d(inPlanes, planes, kernel: 1, stride: stride, generator: &generator, on: backend)])
            : Sequential([])
    }

    private var projection: Conv2d? { shortcut.layers.first as? Conv2d }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        let activated = try bn1.forward(x, pass)
        let residual = try projection?.forward(activated, pass) ?? x
        let main = try conv2.forward(bn2.forward(conv1.forward(activated, pass), pass), pass)
        let y = try output.get(main.layout, on: backend)
        try backend.addition(main.layout, relu: false).forward(main, residual, into: y)
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        // The sum's gradient feeds both branches, and conv2's backward consumes its buffer: the
        // shortcut gets a copy.
        let gBranch = try pass.pool.take(gradient.layout)
        try backend.copy(gradient, into: gBranch)
        let g2 = try bn2.backward(conv2.backward(gradient, pass, needsInputGradient: true)!, pass, inPlace: true)
        let gActivated = try conv1.backward(g2, pass, needsInputGradient: true)!
        if let conv = projection {
            let gShortcut = try conv.backward(gBranch, pass, needsInputGradient: true)!
            try backend.addition(gActivated.layout, relu: false).forward(gActivated, gShortcut, into: gActivated)
            pass.pool.give(gShortcut)
            return try bn1.backward(gActivated, pass, inPlace: true)
        }
        let gx = try bn1.backward(gActivated, pass, inPlace: true)
        try backend.addition(gx.layout, relu: false).forward(gx, gBranch, into: gx)
        pass.pool.give(gBranch)
        return gx
    }
}

/// BackdoorBench's PreActResNet18 (its default model): 3x3 stem convolution without BN, four
/// stages of two PreActBlocks at width x (1, 2, 4, 8), no BN-ReLU before the pooling, adaptive
/// average pool to 1x1, linear. `width` 64 is the real model; narrower ones are CPU-sized.
public final class PreActResNet18: Sequential {
    public init(width: Int = 64, numClasses: Int = 10, seed: UInt64 = 0, on backend: Backend) throws {
        try ModelZoo.validate(.preactResNet18, width: width, allowed: 1...ResNet18.maximumWidth, numClasses: numClasses)
        var generator = SeededGenerator(seed: seed, stream: "preact-resnet18-init")
        var layers: [(String, Layer)] = [("conv1", try Conv2d(3, width, kernel: 3, padding: 1, generator: &generator,
                                                                   on: backend))]
        var inPlanes = width
        for (index, (multiplier, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].enumerated() {
            let planes = width * multiplier
            let first = try PreActBlock(inPlanes, planes, stride: stride, generator: &generator, on: backend)
            let second = try PreActBlock(planes, planes, stride: 1, generator: &generator, on: backend)
            layers.append(("layer\(index + 1)", Sequential([first, second])))
            inPlanes = planes
        }
        // AdaptiveAvgPool2d((1, 1)) on the 4x4 maps a 32x32 CIFAR image leaves.
        layers.append(("avgpool", Pool2d(.init(.average, kernel: 4), on: backend)))
        layers.append(("linear", try Linear(8 * width, numClasses, generator: &generator, on: backend)))
        super.init(named: layers)
    }
}
