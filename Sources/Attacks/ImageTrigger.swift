import Datasets

/// What puts a backdoor trigger on clean images: a pattern and mask (BadNets, Blend,
/// clean-label), a signal (SIG), a warp (WaNet), a colour squeeze (BPP), a frequency bump
/// (FTrojan) or an optimised additive patch (TrojanNN). The poisoned test sets and the trigger information file go through it.
public protocol ImageTrigger {
    /// Poisons the images at `indices` of `set` in place (labels untouched).
    func apply(to set: inout ImageSet, at indices: [Int])
}

extension Trigger: ImageTrigger {}

// So `trigger: .checkerboard1Corner()` still reads where any ImageTrigger is taken.
extension ImageTrigger where Self == Trigger {
    public static func checkerboard1Corner(alpha: Double = 1) throws -> Trigger { try Trigger.checkerboard1Corner(alpha: alpha) }
    public static func checkerboard4Corner(alpha: Double = 1) throws -> Trigger { try Trigger.checkerboard4Corner(alpha: alpha) }
}

/// The trigger of any attack this tool knows, as the trigger information file holds it.
public enum AttackTrigger: ImageTrigger, Equatable {
    case pattern(Trigger)
    case sig(SIGTrigger)
    case wanet(WaNetWarp)
    case bpp(BPPSqueeze)
    case ftrojan(FTrojanTrigger)
    case trojannn(TrojanNNTrigger)
    /// Input-aware's trained pattern and mask generators.
    case inputAware(InputAwareAttack)

    var base: ImageTrigger {
        switch self {
        case let .pattern(t): return t
        case let .sig(t): return t
        case let .wanet(t): return t
        case let .bpp(t): return t
        case let .ftrojan(t): return t
        case let .trojannn(t): return t
        case let .inputAware(t): return t
        }
    }

    public func apply(to set: inout ImageSet, at indices: [Int]) {
        base.apply(to: &set, at: indices)
    }

    /// The pattern-and-mask trigger, for the attacks that have one.
    public var pattern: Trigger? {
        if case let .pattern(t) = self { return t }
        return nil
    }

    /// `trigger_type` in the trigger information.
    public var typeName: String {
        switch self {
        case let .pattern(t): return t.kind.rawValue
        case .sig: return "sig"
        case .wanet: return "wanet"
        case .bpp: return "bpp"
        case .ftrojan: return "ftrojan"
        case .trojannn: return "trojannn"
        case .inputAware: return "inputaware"
        }
    }
}

/// One image as float planes (CHW, 0-255) and back, for the triggers that compute in floats.
enum ImagePlanes {
    static let plane = ImageSet.height * ImageSet.width

    static func planes(_ image: ArraySlice<UInt8>) -> [Double] {
        var out = [Double](repeating: 0, count: ImageSet.pixelsPerImage)
        let start = image.startIndex
        for p in 0..<plane {
            for c in 0..<3 { out[c * plane + p] = Double(image[start + p * 3 + c]) }
        }
        return out
    }

    /// Writes planes back as bytes: clipped to [0, 255], then `rule` (truncation is numpy's astype).
    static func store(_ planes: [Double], into pixels: inout [UInt8], image index: Int, rule: FloatingPointRoundingRule) {
        let base = index * ImageSet.pixelsPerImage
        for p in 0..<plane {
            for c in 0..<3 { pixels[base + p * 3 + c] = UInt8(min(max(planes[c * plane + p], 0), 255).rounded(rule)) }
        }
    }

    /// Applies `transform` to each listed image's planes and stores the result by `rule`.
    static func map(_ set: inout ImageSet, at indices: [Int], rule: FloatingPointRoundingRule,
                    _ transform: ([Double]) -> [Double]) {
        for index in indices {
            store(transform(planes(set.image(index))), into: &set.pixels, image: index, rule: rule)
        }
    }
}
