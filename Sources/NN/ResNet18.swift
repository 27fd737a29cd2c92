import DNNL
import Support

/// The CIFAR BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus a shortcut (1x1 conv + BN when the
/// shape changes), ReLU after the sum.
final class BasicBlock {
    let conv1, conv2: Conv2d
    let bn1, bn2: BatchNorm2d
    let shortcutConv: Conv2d?
    let shortcutBN: BatchNorm2d?
    private var output: Tensor?
    private var outputSlot = OutputSlot()
    private var join: AddReLU?

    init(name: String, inPlanes: Int, planes: Int, stride: Int, generator: inout SeededGenerator) throws {
        conv1 = try Conv2d(name: name + ".conv1", inChannels: inPlanes, outChannels: planes, kernel: 3, stride: stride,
                           padding: 1, generator: &generator)
        bn1 = try BatchNorm2d(name: name + ".bn1", channels: planes, fuseReLU: true)
        conv2 = try Conv2d(name: name + ".conv2", inChannels: planes, outChannels: planes, kernel: 3, stride: 1,
                           padding: 1, generator: &generator)
        bn2 = try BatchNorm2d(name: name + ".bn2", channels: planes, fuseReLU: false)
        if stride != 1 || inPlanes != planes {
            shortcutConv = try Conv2d(name: name + ".shortcut.0", inChannels: inPlanes, outChannels: planes, kernel: 1,
                                      stride: stride, padding: 0, generator: &generator)
            shortcutBN = try BatchNorm2d(name: name + ".shortcut.1", channels: planes, fuseReLU: false)
        } else {
            shortcutConv = nil
            shortcutBN = nil
        }
    }

    var batchNorms: [BatchNorm2d] { [bn1, bn2] + (shortcutBN.map { [$0] } ?? []) }
    var convolutions: [Conv2d] { [conv1, conv2] + (shortcutConv.map { [$0] } ?? []) }

    /// The outputs of bn2 and the shortcut BN live only until the join, in `pool` buffers.
    func forward(_ x: Tensor, mode: Mode, pool: TensorPool) throws -> Tensor {
        let main = try bn2.forward(conv2.forward(bn1.forward(conv1.forward(x), mode: mode)), mode: mode,
                                   transientPool: pool)
        var shortcut = x
        if let shortcutConv, let shortcutBN {
            shortcut = try shortcutBN.forward(shortcutConv.forward(x), mode: mode, transientPool: pool)
        }
        let join = try AddReLU.get(desc: main.desc, relu: true)
        self.join = join
        // Not in place: oneDNN 2.6's binary add with a ReLU post-op gave wrong results in place.
        let y = try outputSlot.get(main.desc)
        try join.forward(main, shortcut, into: y)
        pool.give(main)
        if shortcut !== x { pool.give(shortcut) }
        output = y
        return y
    }

    /// Takes ownership of `gy` (a pool buffer) and returns the input gradient (another one).
    func backward(_ gy: Tensor, weightGradients: Bool, pool: TensorPool) throws -> Tensor {
        guard let join, let y = output else { throw ShapeError("block backward before forward") }
        let gSum = gy
        try join.reluBackward(dst: y, diffDst: gSum, diffSrc: gSum)
        let gShortcut: Tensor
        let g2: Tensor
        if let shortcutConv, let shortcutBN {
            let gS = try shortcutBN.backward(gSum, inPlace: false, pool: pool)
            gShortcut = try shortcutConv.backward(gS, weightGradients: weightGradients, wantInputGradient: true,
                                                  pool: pool)!
            pool.give(gS)
            g2 = try bn2.backward(gSum, inPlace: true, pool: pool)
        } else {
            gShortcut = gSum
            g2 = try bn2.backward(gSum, inPlace: false, pool: pool)
        }
        let g1 = try conv2.backward(g2, weightGradients: weightGradients, wantInputGradient: true, pool: pool)!
        pool.give(g2)
        let g1b = try bn1.backward(g1, inPlace: true, pool: pool)
        if g1b !== g1 { pool.give(g1) }
        let gMain = try conv1.backward(g1b, weightGradients: weightGradients, wantInputGradient: true, pool: pool)!
        pool.give(g1b)
        let add = try AddReLU.get(desc: gMain.desc, relu: false)
        try add.forward(gMain, gShortcut, into: gMain)
        pool.give(gShortcut)
        return gMain
    }
}

/// ResNet-18 for CIFAR (3x3 stem, no max-pool, BasicBlocks of width x (1, 2, 4, 8), 4x4 average
/// pool, linear to 10 classes), in the layout of the ANP paper's code so parameter names match
/// PyTorch's state_dict. `width` 64 is the real model; 32 and 16 are CPU-sized variants.
public final class ResNet18 {
    public let width: Int
    public let numClasses: Int
    let conv1: Conv2d
    let bn1: BatchNorm2d
    let blocks: [BasicBlock]
    let linear: Linear
    private var pooled = OutputSlot()
    private var pool: AveragePooling?
    private var lastLogits: Tensor?
    private let gradients = TensorPool()
    private let transients = TensorPool()

    public init(width: Int = 64, numClasses: Int = 10, seed: UInt64 = 0) throws {
        guard width > 0 else { throw ShapeError("ResNet-18 width must be positive, got \(width)") }
        self.width = width
        self.numClasses = numClasses
        var generator = SeededGenerator(seed: seed, stream: "resnet18-init")
        conv1 = try Conv2d(name: "conv1", inChannels: 3, outChannels: width, kernel: 3, stride: 1, padding: 1,
                           generator: &generator)
        bn1 = try BatchNorm2d(name: "bn1", channels: width, fuseReLU: true)
        var blocks: [BasicBlock] = []
        var inPlanes = width
        for (layer, (multiplier, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].enumerated() {
            let planes = width * multiplier
            for index in 0..<2 {
                blocks.append(try BasicBlock(name: "layer\(layer + 1).\(index)", inPlanes: inPlanes, planes: planes,
                                             stride: index == 0 ? stride : 1, generator: &generator))
                inPlanes = planes
            }
        }
        self.blocks = blocks
        linear = try Linear(name: "linear", inFeatures: 8 * width, outFeatures: numClasses, generator: &generator)
    }

    /// oneDNN's convolution algorithm for every convolution (see `Convolution.Algorithm`): `auto`
    /// (Winograd where oneDNN has it) by default; training keeps `direct` for its memory budget.
    public var convolutionAlgorithm = Convolution.Algorithm.auto {
        didSet {
            for conv in [conv1] + blocks.flatMap(\.convolutions) { conv.algorithm = convolutionAlgorithm }
        }
    }

    /// Every BatchNorm layer in state_dict order, named as in PyTorch (e.g. `layer1.0.bn1`).
    public var batchNorms: [BatchNorm2d] { [bn1] + blocks.flatMap(\.batchNorms) }

    /// Trainable parameters in state_dict order.
    public var parameters: [Parameter] {
        var out = [conv1.weight, bn1.weight, bn1.bias]
        for block in blocks {
            out += [block.conv1.weight, block.bn1.weight, block.bn1.bias, block.conv2.weight, block.bn2.weight,
                    block.bn2.bias]
            if let c = block.shortcutConv, let b = block.shortcutBN { out += [c.weight, b.weight, b.bias] }
        }
        return out + [linear.weight, linear.bias]
    }

    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// Logits (N x classes, plain) for normalised NCHW images.
    public func forward(images: [Float], count: Int, mode: Mode) throws -> [Float] {
        let x = try Tensor(shape: [count, 3, 32, 32], values: images)
        return try forward(x, mode: mode).plainValues()
    }

    func forward(_ x: Tensor, mode: Mode) throws -> Tensor {
        var h = try bn1.forward(conv1.forward(x), mode: mode)
        for block in blocks { h = try block.forward(h, mode: mode, pool: transients) }
        transients.removeAll()
        let pool = try AveragePooling.get(srcDesc: h.desc, kernel: 4)
        self.pool = pool
        let p = try pooled.get(pool.dstDesc)
        try pool.forward(src: h, dst: p)
        let logits = try linear.forward(p)
        lastLogits = logits
        return logits
    }

    /// Backpropagates a logits gradient (N x classes). With `weightGradients`, every parameter's
    /// gradient is written; without, only activation gradients and BatchNorm scale/shift
    /// gradients are (no backward-weights convolutions). Returns the input gradient (plain NCHW)
    /// when `wantInputGradient`.
    @discardableResult
    public func backward(logitsGradient: [Float], weightGradients: Bool, wantInputGradient: Bool) throws -> [Float]? {
        guard let lastLogits, let pool else { throw ShapeError("backward before forward") }
        let gLogits = try Tensor(shape: lastLogits.shape, values: logitsGradient).reordered(to: lastLogits.desc)
        let gPooled = try linear.backward(gLogits, weightGradients: weightGradients, pool: gradients)
        var g = try gradients.take(pool.srcDesc)
        try pool.backward(diffDst: gPooled, diffSrc: g)
        gradients.give(gPooled)
        for block in blocks.reversed() {
            g = try block.backward(g, weightGradients: weightGradients, pool: gradients)
            gradients.keepOnly(g.desc)
        }
        let gStem = try bn1.backward(g, inPlace: true, pool: gradients)
        if gStem !== g { gradients.give(g) }
        let gx = try conv1.backward(gStem, weightGradients: weightGradients, wantInputGradient: wantInputGradient,
                                    pool: gradients)
        gradients.give(gStem)
        defer { gx.map(gradients.give) }
        return try gx?.plainValues()
    }
}
