import Datasets
import Support

/// A backdoor trigger as the ANP reference code defines it: a pattern and a mask over a
/// 32 x 32 image (one channel, applied to all three, or three channels) and an opacity `alpha`.
/// Poisoning a pixel computes, in double precision,
/// `(1 - mask) * x + mask * ((1 - alpha) * x + alpha * pattern)`, clips to [0, 255] and
/// truncates to uint8 (numpy's `astype(uint8)`), so poisoned images match the reference byte
/// for byte.
public struct Trigger: Equatable {
    public enum Kind: String, CaseIterable {
        /// BadNets: a 3x3 checkerboard in the bottom-right corner.
        case checkerboard1Corner = "checkerboard_1corner"
        /// Clean-label: the checkerboard in all four corners (mirrored on the left).
        case checkerboard4Corner = "checkerboard_4corner"
        /// Blend: a noise image over the whole picture (named as in the reference; its PNG is
        /// in fact uniform noise).
        case gaussianNoise = "gaussian_noise"
    }

    public static let height = 32, width = 32
    public static let pixelsPerChannel = height * width

    public let kind: Kind
    /// Row-major height x width x `patternChannels` (HWC), values in [0, 255].
    public let pattern: [Double]
    public let patternChannels: Int
    /// Row-major height x width x `maskChannels`, values in [0, 1].
    public let mask: [Double]
    public let maskChannels: Int
    /// Opacity in [0, 1]: 1 pastes the pattern, 0.2 is the Blend attack's default.
    public let alpha: Double

    // Pattern and mask broadcast to the image's HWC layout once, so applying is a flat loop.
    private let patternHWC: [Double]
    private let maskHWC: [Double]

    public init(kind: Kind, pattern: [Double], patternChannels: Int,
                mask: [Double], maskChannels: Int, alpha: Double) throws {
        for (name, channels, values) in [("pattern", patternChannels, pattern), ("mask", maskChannels, mask)] {
            guard channels == 1 || channels == 3 else {
                throw AttackError.invalidTrigger("\(name) has \(channels) channels; expected 1 or 3")
            }
            guard values.count == Self.pixelsPerChannel * channels else {
                throw AttackError.invalidTrigger(
                    "\(name) has \(values.count) values; expected 32 x 32 x \(channels) = \(Self.pixelsPerChannel * channels)")
            }
        }
        if let bad = pattern.first(where: { !($0 >= 0 && $0 <= 255) }) {
            throw AttackError.invalidTrigger("pattern value \(bad) is outside [0, 255]")
        }
        if let bad = mask.first(where: { !($0 >= 0 && $0 <= 1) }) {
            throw AttackError.invalidTrigger("mask value \(bad) is outside [0, 1]")
        }
        try Self.validate(alpha: alpha)
        self.kind = kind
        self.pattern = pattern
        self.patternChannels = patternChannels
        self.mask = mask
        self.maskChannels = maskChannels
        self.alpha = alpha
        patternHWC = Self.broadcastToRGB(pattern, channels: patternChannels)
        maskHWC = Self.broadcastToRGB(mask, channels: maskChannels)
    }

    public static func validate(alpha: Double) throws {
        guard alpha >= 0 && alpha <= 1 else {
            throw AttackError.invalidValue(name: "trigger alpha", value: "\(alpha)", allowed: "a number in [0, 1]")
        }
    }

    /// The default opacity of each trigger kind: 1 for the checkerboards, 0.2 for Blend.
    public static func defaultAlpha(for kind: Kind) -> Double {
        kind == .gaussianNoise ? 0.2 : 1.0
    }

    // MARK: The reference triggers

    /// The 3x3 block both checkerboards use, rows top to bottom.
    static let checkerboardBlock: [[Double]] = [[0, 0, 255], [0, 255, 0], [255, 0, 255]]

    /// BadNets: the block at rows 29-31, columns 29-31. The pattern is 122 elsewhere, as in the
    /// reference (masked out, but kept so a saved pattern matches it).
    public static func checkerboard1Corner(alpha: Double = 1) throws -> Trigger {
        var pattern = [Double](repeating: 122, count: pixelsPerChannel)
        var mask = [Double](repeating: 0, count: pixelsPerChannel)
        for dh in -1...1 {
            for dw in -1...1 {
                pattern[(30 + dh) * width + 30 + dw] = checkerboardBlock[dh + 1][dw + 1]
                mask[(30 + dh) * width + 30 + dw] = 1
            }
        }
        return try Trigger(kind: .checkerboard1Corner, pattern: pattern, patternChannels: 1,
                           mask: mask, maskChannels: 1, alpha: alpha)
    }

    /// Clean-label: the block centred at rows 1 and 30 in the right-hand columns 29-31, and its
    /// left-right mirror image in columns 0-2. The pattern is 0 elsewhere.
    public static func checkerboard4Corner(alpha: Double = 1) throws -> Trigger {
        var pattern = [Double](repeating: 0, count: pixelsPerChannel)
        var mask = [Double](repeating: 0, count: pixelsPerChannel)
        for centreRow in [1, 30] {
            for dh in -1...1 {
                for dw in -1...1 {
                    let row = (centreRow + dh) * width
                    pattern[row + 30 + dw] = checkerboardBlock[dh + 1][dw + 1]
                    pattern[row + 1 + dw] = checkerboardBlock[dh + 1][1 - dw]
                    mask[row + 30 + dw] = 1
                    mask[row + 1 + dw] = 1
                }
            }
        }
        return try Trigger(kind: .checkerboard4Corner, pattern: pattern, patternChannels: 1,
                           mask: mask, maskChannels: 1, alpha: alpha)
    }

    /// Blend: `pattern` (32 x 32, 1 or 3 channels, HWC bytes, e.g. a decoded PNG) over the
    /// whole image.
    public static func gaussianNoise(pattern: [UInt8], channels: Int, alpha: Double = 0.2) throws -> Trigger {
        try Trigger(kind: .gaussianNoise, pattern: pattern.map(Double.init), patternChannels: channels,
                    mask: [Double](repeating: 1, count: pixelsPerChannel), maskChannels: 1, alpha: alpha)
    }

    /// This tool's own Blend pattern when no PNG is given: 32 x 32 x 3 bytes, each uniform in
    /// 0...255 from a seeded generator (the reference's PNG is uniform noise too).
    public static func seededNoisePattern(seed: UInt64) -> [UInt8] {
        var generator = SeededGenerator(seed: seed, stream: "blend-pattern")
        return (0..<pixelsPerChannel * 3).map { _ in UInt8(truncatingIfNeeded: generator.next() >> 56) }
    }

    /// The trigger of `kind` with its default pattern; Blend needs its pattern (`gaussianNoise`).
    public static func standard(_ kind: Kind, alpha: Double) throws -> Trigger {
        switch kind {
        case .checkerboard1Corner: return try checkerboard1Corner(alpha: alpha)
        case .checkerboard4Corner: return try checkerboard4Corner(alpha: alpha)
        case .gaussianNoise:
            throw AttackError.invalidTrigger("the gaussian_noise trigger needs a pattern image")
        }
    }

    // MARK: Applying

    /// Poisons one image's pixels (HWC, 32 x 32 x 3) in place.
    public func apply(to image: inout ArraySlice<UInt8>) {
        precondition(image.count == ImageSet.pixelsPerImage, "an image has 32 x 32 x 3 pixels")
        let start = image.startIndex
        for i in 0..<ImageSet.pixelsPerImage {
            image[start + i] = Self.blend(image[start + i], mask: maskHWC[i], pattern: patternHWC[i], alpha: alpha)
        }
    }

    /// Poisons the images at `indices` of `set` in place (labels untouched).
    public func apply(to set: inout ImageSet, at indices: [Int]) {
        let size = ImageSet.pixelsPerImage
        for index in indices {
            apply(to: &set.pixels[index * size..<(index + 1) * size])
        }
    }

    /// One poisoned pixel, with the reference's operations in its order (numpy float64), so the
    /// rounding of every intermediate matches.
    @inline(__always)
    static func blend(_ x: UInt8, mask: Double, pattern: Double, alpha: Double) -> UInt8 {
        let value = Double(x)
        let poisoned = (1 - mask) * value + mask * ((1 - alpha) * value + alpha * pattern)
        // UInt8(Double) truncates toward zero, as astype(uint8) does on [0, 255].
        return UInt8(min(max(poisoned, 0), 255))
    }

    private static func broadcastToRGB(_ values: [Double], channels: Int) -> [Double] {
        if channels == 3 { return values }
        var out = [Double](repeating: 0, count: values.count * 3)
        for (i, v) in values.enumerated() {
            out[3 * i] = v
            out[3 * i + 1] = v
            out[3 * i + 2] = v
        }
        return out
    }

    public static func == (a: Trigger, b: Trigger) -> Bool {
        a.kind == b.kind && a.pattern == b.pattern && a.patternChannels == b.patternChannels
            && a.mask == b.mask && a.maskChannels == b.maskChannels && a.alpha == b.alpha
    }
}
