import Backend
import NN
import Support

/// VGG with BatchNorm for CIFAR as the ANP paper's code defines it (`models/vgg_cifar.py`):
/// `features` = conv3x3 (with bias) - BN - ReLU per channel count and 2x2 max pooling per "M",
/// five poolings taking 32x32 to 1x1; `classifier` = Linear(512, classes), no hidden FC layers.
/// `features.N` counts the ReLUs as the reference's nn.Sequential does (they hold no state and
/// are fused into the BN here, so those indices are simply absent).
///
/// `width` scales every channel count by width / 64 (64, the default, is the reference model):
/// a narrow VGG keeps test fixtures small. The CLI builds only the reference width.
public final class VGG: Sequential {
    public enum Depth: Int, CaseIterable {
        case vgg16 = 16, vgg19 = 19

        /// Channel counts at width 64, 0 for a max pool (the reference's configs "D" and "E").
        var configuration: [Int] {
            switch self {
            case .vgg16: [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0]
            case .vgg19: [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0]
            }
        }

        public var architecture: Architecture { self == .vgg16 ? .vgg16 : .vgg19 }
        /// Convolutions in `features` (how a state_dict tells the depths apart).
        public var convolutions: Int { configuration.filter { $0 > 0 }.count }
    }

    public static let maximumWidth = 128

    public init(_ depth: Depth, width: Int = 64, numClasses: Int = 10, seed: UInt64 = 0, on backend: Backend) throws {
        try ModelZoo.validate(depth.architecture, width: width, allowed: 1...Self.maximumWidth, numClasses: numClasses)
        var generator = SeededGenerator(seed: seed, stream: depth.architecture.rawValue + "-init")
        var features: [(String, Layer)] = []
        var channels = 3, index = 0
        for item in depth.configuration {
            if item == 0 {
                features.append((String(index), Pool2d(.init(.max, kernel: 2), on: backend)))
                index += 1
                continue
            }
            let out = item * width / 64
            // The reference's initialisation: conv weights N(0, 2 / (k * k * out)), biases 0.
            let conv = try Conv2d(channels, out, kernel: 3, padding: 1, bias: true, generator: &generator, on: backend)
            let std = (2 / Float(9 * out)).squareRoot()
            try conv.weight.setPlainValues((0..<conv.weight.count).map { _ in generator.nextGaussian() * std })
            try conv.bias?.setPlainValues(.init(repeating: 0, count: out))
            features.append((String(index), conv))
            features.append((String(index + 1), try BatchNorm2d(out, fuseReLU: true, on: backend)))
            index += 3  // conv, BN, ReLU
            channels = out
        }
        // Linear: N(0, 0.01) weights, zero bias.
        let classifier = try Linear(channels, numClasses, generator: &generator, on: backend)
        try classifier.weight.setPlainValues((0..<classifier.weight.count).map { _ in generator.nextGaussian() * 0.01 })
        try classifier.bias.setPlainValues(.init(repeating: 0, count: numClasses))
        super.init(named: [("features", Sequential(named: features)), ("classifier", classifier)])
    }
}
