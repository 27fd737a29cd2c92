import Backend
import NN
import Support

/// MobileNetV2's inverted residual (`Block` in the ANP code's `models/mobilenetv2.py`): 1x1
/// expansion - BN - ReLU, 3x3 depthwise (stride s) - BN - ReLU, 1x1 projection - BN. The sum
/// with the shortcut exists only at stride 1 (a 1x1 conv + BN where the channel count changes,
/// else the identity); at stride 2 the block's output is the projection's. No ReLU after.
public final class InvertedResidual: Module, Layer {
    @Child public var conv1: Conv2d
    @Child public var bn1: BatchNorm2d
    @Child public var conv2: Conv2d
    @Child public var bn2: BatchNorm2d
    @Child public var conv3: Conv2d
    @Child public var bn3: BatchNorm2d
    @Child public var shortcut: Sequential
    public let stride: Int
    private let backend: Backend
    private var output = OutputSlot()

    public init(_ inPlanes: Int, _ outPlanes: Int, expansion: Int, stride: Int, generator: inout SeededGenerator,
                on backend: Backend) throws {
        (self.stride, self.backend) = (stride, backend)
        let planes = expansion * inPlanes
        conv1 = try Conv2d(inPlanes, planes, kernel: 1, generator: &generator, on: backend)
        bn1 = try BatchNorm2d(planes, fuseReLU: true, on: backend)
        conv2 = try Conv2d(planes, planes, kernel: 3, stride: stride, padding: 1, groups: planes, generator: &generator,
                           on: backend)
        bn2 = try BatchNorm2d(planes, fuseReLU: true, on: backend)
        conv3 = try Conv2d(planes, outPlanes, kernel: 1, generator: &generator, on: backend)
        bn3 = try BatchNorm2d(outPlanes, on: backend)
        // As the reference: the projection only at stride 1 (a stride-2 block has no sum at all).
        shortcut = stride == 1 && inPlanes != outPlanes
            ? Sequential([try Conv2d(inPlanes, outPlanes, kernel: 1, generator: &generator, on: backend),
                          try BatchNorm2d(outPlanes, on: backend)])
            : Sequential([])
    }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        let expanded = try bn2.forward(conv2.forward(bn1.forward(conv1.forward(x, pass), pass), pass), pass)
        let main = try bn3.forward(conv3.forward(expanded, pass), pass)
        guard stride == 1 else { return main }
        let residual = try shortcut.projection.map { try $0.bn.forward($0.conv.forward(x, pass), pass) } ?? x
        let y = try output.get(main.layout, on: backend)
        try backend.addition(main.layout, relu: false).forward(main, residual, into: y)
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        // Not in place where a sum follows: the shortcut needs `gradient` too.
        let g3 = try bn3.backward(gradient, pass, inPlace: stride != 1)
        let g2 = try bn2.backward(conv3.backward(g3, pass, needsInputGradient: true)!, pass, inPlace: true)
        let g1 = try bn1.backward(conv2.backward(g2, pass, needsInputGradient: true)!, pass, inPlace: true)
        let gx = try conv1.backward(g1, pass, needsInputGradient: true)!
        guard stride == 1 else { return gx }
        var gResidual = gradient
        if let (conv, bn) = shortcut.projection {
            gResidual = try conv.backward(bn.backward(gradient, pass, inPlace: true), pass, needsInputGradient: true)!
        }
        try backend.addition(gx.layout, relu: false).forward(gx, gResidual, into: gx)
        pass.pool.give(gResidual)
        return gx
    }
}

/// MobileNetV2 for CIFAR as the ANP code defines it: stride-1 3x3 stem (32 channels) - BN - ReLU,
/// 17 inverted residuals in `layers` (the second stage at stride 1, not 2), 1x1 conv to 1280 -
/// BN - ReLU, 4x4 average pool, linear. `width` is the stem's channel count and scales every
/// other one by width / 32 (32, the default, is the reference model; narrower ones keep test
/// fixtures small, and must be a multiple of 4 so every stage keeps whole channels).
public final class MobileNetV2: Sequential {
    public static let maximumWidth = 64
    /// (expansion, output channels at width 32, blocks, first block's stride).
    static let stages = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                         (6, 320, 1, 1)]

    public init(width: Int = 32, numClasses: Int = 10, seed: UInt64 = 0, on backend: Backend) throws {
        try ModelZoo.validate(.mobileNetV2, width: width, allowed: 1...Self.maximumWidth, numClasses: numClasses)
        guard width % 4 == 0 else {
            throw ShapeError("mobilenetv2 width must be a multiple of 4 (channels scale by width / 32), got \(width)")
        }
        func scaled(_ channels: Int) -> Int { channels * width / 32 }
        var generator = SeededGenerator(seed: seed, stream: "mobilenetv2-init")
        let stem = try Conv2d(3, scaled(32), kernel: 3, padding: 1, generator: &generator, on: backend)
        var blocks: [Layer] = []
        var inPlanes = scaled(32)
        for (expansion, outPlanes, count, stride) in Self.stages {
            for i in 0..<count {
                blocks.append(try InvertedResidual(inPlanes, scaled(outPlanes), expansion: expansion,
                                                   stride: i == 0 ? stride : 1, generator: &generator, on: backend))
                inPlanes = scaled(outPlanes)
            }
        }
        super.init(named: [
            ("conv1", stem),
            ("bn1", try BatchNorm2d(scaled(32), fuseReLU: true, on: backend)),
            ("layers", Sequential(blocks)),
            ("conv2", try Conv2d(inPlanes, scaled(1280), kernel: 1, generator: &generator, on: backend)),
            ("bn2", try BatchNorm2d(scaled(1280), fuseReLU: true, on: backend)),
            ("avgpool", Pool2d(.init(.average, kernel: 4), on: backend)),
            ("linear", try Linear(scaled(1280), numClasses, generator: &generator, on: backend)),
        ])
    }
}
