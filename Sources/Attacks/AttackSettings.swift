import Datasets
import Formats
import Foundation
import Support

/// The attacks `backdoor train` and `backdoor poison` know, with the reference's names.
public enum PoisonType: String, CaseIterable {
    case benign, badnets, blend
    case cleanLabel = "clean-label"

    /// The trigger each attack uses (none for benign training).
    public var triggerKind: Trigger.Kind? {
        switch self {
        case .benign: return nil
        case .badnets: return .checkerboard1Corner
        case .blend: return .gaussianNoise
        case .cleanLabel: return .checkerboard4Corner
        }
    }
}

/// The attack options shared by `train` and `poison` (the reference's flags), and the one place
/// that turns them into a poisoned training set and trigger information.
public struct AttackSettings: Equatable {
    public var poisonType: PoisonType
    /// `--poison-target`, 0-9.
    public var target: Int
    /// `--poison-rate` in [0, 1]; for clean-label the folder already fixes it.
    public var rate: Double
    /// `--trigger-alpha`; nil means the attack's default (1 for BadNets and clean-label, 0.2 for Blend).
    public var alpha: Double?
    /// `--trigger-pattern`: a 32x32 PNG for Blend; nil: the papers' pattern; `seeded`: the tool's seeded noise.
    public var patternPath: String?
    /// `--clb-dir`: the folder `backdoor clean-label` wrote (clean-label only).
    public var cleanLabelDirectory: String?
    /// Seeds the poisoned-image draw and the seeded noise pattern.
    public var seed: UInt64

    public init(poisonType: PoisonType, target: Int = 0, rate: Double = 0.1, alpha: Double? = nil,
                patternPath: String? = nil, cleanLabelDirectory: String? = nil, seed: UInt64 = 0) {
        self.poisonType = poisonType
        self.target = target
        self.rate = rate
        self.alpha = alpha
        self.patternPath = patternPath
        self.cleanLabelDirectory = cleanLabelDirectory
        self.seed = seed
    }

    /// The opacity used: `alpha`, or the trigger's default.
    public var effectiveAlpha: Double {
        alpha ?? poisonType.triggerKind.map(Trigger.defaultAlpha(for:)) ?? 1
    }

    public func validate() throws {
        try Poisoning.validate(rate: rate)
        try Poisoning.validate(target: target)
        if let alpha { try Trigger.validate(alpha: alpha) }
        if patternPath != nil && poisonType != .blend {
            throw AttackError.invalidValue(name: "--trigger-pattern with poison type", value: poisonType.rawValue,
                                           allowed: "poison type blend (only Blend takes a pattern image)")
        }
        if cleanLabelDirectory == nil && poisonType == .cleanLabel {
            throw AttackError.invalidValue(name: "poison type", value: "clean-label without --clb-dir",
                                           allowed: "--clb-dir FOLDER (written by `backdoor clean-label`)")
        }
    }

    /// The trigger information of this attack (nil for benign), and a note for the user when
    /// the Blend pattern is the seeded noise rather than the papers'.
    public func triggerInfo() throws -> (info: TriggerInfo?, note: String?) {
        try validate()
        guard let kind = poisonType.triggerKind else { return (nil, nil) }
        let trigger: Trigger
        var source: String?
        var note: String?
        switch kind {
        case .gaussianNoise:
            (trigger, source) = try Trigger.blend(patternFile: patternPath, alpha: effectiveAlpha, seed: seed)
            if patternPath == Trigger.seededPatternFlag {
                note = "--trigger-pattern seeded: the Blend pattern is this tool's own seeded uniform noise (seed \(seed)), "
                    + "not the papers' cifar_gaussian_noise.png (the default)"
            }
        case .checkerboard1Corner, .checkerboard4Corner:
            trigger = try .standard(kind, alpha: effectiveAlpha)
        }
        return (try TriggerInfo(poisonType: poisonType.rawValue, trigger: trigger, target: target, patternSource: source), note)
    }

    /// The training set of this attack from the attacker's split (in split order): poisoned by
    /// BadNets/Blend, read from `--clb-dir` for clean-label, unchanged for benign.
    public func trainingSet(attackerSet: ImageSet, triggerInfo: TriggerInfo?) throws -> PoisonedTrainingSet {
        try validate()
        switch poisonType {
        case .benign:
            return PoisonedTrainingSet(clean: attackerSet)
        case .badnets, .blend:
            guard let triggerInfo else { preconditionFailure("BadNets and Blend need their trigger information") }
            return try Poisoning.trainingSet(attackerSet, trigger: triggerInfo.trigger, target: target, rate: rate, seed: seed)
        case .cleanLabel:
            let directory = cleanLabelDirectory!
            let set = try PoisonedSetFolder.read(directory: directory)
            guard set.count == attackerSet.count else {
                throw FileError(directory, "holds \(set.count) images but the attacker split has \(attackerSet.count); "
                    + "use the --split-file and --val-frac the folder was made with")
            }
            if let made = set.poisonedLabel, made != target {
                throw AttackError.invalidValue(name: "poison target", value: "\(target)",
                                               allowed: "\(made), the class the clean-label folder \(directory) was made for")
            }
            return set
        }
    }
}

extension Trigger {
    /// The `--trigger-pattern` value that asks for the tool's seeded noise.
    public static let seededPatternFlag = "seeded"

    /// The papers' Blend pattern (csdongxian/ANP_backdoor's `data/cifar_gaussian_noise.png`,
    /// uniform noise despite its name), shipped with the tool.
    public static var referencePatternFile: String {
        (Bundle.module.resourceURL ?? Bundle.module.bundleURL).appendingPathComponent("ReferenceData/cifar_gaussian_noise.png").path
    }

    /// The Blend trigger with the pattern of `patternFile` (a 32x32 gray or RGB PNG), the
    /// papers' pattern without one, or the seeded noise for `seeded`; `source` says which, for
    /// the trigger information and the user.
    public static func blend(patternFile: String?, alpha: Double, seed: UInt64) throws -> (trigger: Trigger, source: String) {
        if patternFile == seededPatternFlag {
            return (try .gaussianNoise(pattern: seededNoisePattern(seed: seed), channels: 3, alpha: alpha),
                    "seeded noise (seed \(seed))")
        }
        let patternFile = patternFile ?? referencePatternFile
        let image = try PNG.read(path: patternFile, alpha: .reject)
        guard image.width == width && image.height == height else {
            throw FileError(patternFile, "trigger pattern is \(image.width)x\(image.height); expected a 32x32 image")
        }
        return (try .gaussianNoise(pattern: image.pixels, channels: image.channels, alpha: alpha), patternFile)
    }
}
