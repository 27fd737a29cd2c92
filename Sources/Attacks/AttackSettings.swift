import Backend
import Datasets
import Formats
import Foundation
import NN
import Support

/// The attacks `backdoor train` and `backdoor poison` know, with the reference's names.
public enum PoisonType: String, CaseIterable {
    case benign, badnets, blend
    case cleanLabel = "clean-label"
    case sig, wanet, bpp, ftrojan, trojannn
    case inputaware

    /// The pattern-and-mask trigger of the attacks that have one.
    public var triggerKind: Trigger.Kind? {
        switch self {
        case .badnets: return .checkerboard1Corner
        case .blend: return .gaussianNoise
        case .cleanLabel: return .checkerboard4Corner
        case .benign, .sig, .wanet, .bpp, .ftrojan, .trojannn, .inputaware: return nil
        }
    }

    /// WaNet and BPP poison each training batch afresh instead of a fixed set of images.
    public var poisonsPerBatch: Bool { self == .wanet || self == .bpp || self == .inputaware }

    /// Input-aware's trigger is a pair of networks trained with the classifier: there is none
    /// before training (`InputAwareTraining`; the trigger information is written after it).
    public var trainsTrigger: Bool { self == .inputaware }

    /// Which images a fixed-set attack poisons, and so what `--poison-rate` means for it.
    public var selection: Poisoning.Selection {
        switch self {
        case .benign, .badnets, .blend: return .nonTarget
        case .cleanLabel, .sig: return .targetClass
        case .wanet, .bpp, .ftrojan, .trojannn, .inputaware: return .wholeSet
        }
    }

    /// What `--poison-rate` means for this attack (for --help and the trigger information).
    public var rateMeaning: String {
        poisonsPerBatch ? "share of each training batch (int(rate x batch size)), relabelled to the target; "
            + "over an epoch a share of the whole training set" : selection.rateMeaning
    }
}

/// The settings of the data-trigger attacks, BackdoorBench's defaults (config/attack/*/default.yaml).
public struct DataTriggerSettings: Equatable {
    public var sigDelta = SIGTrigger.defaultDelta
    public var sigFrequency = SIGTrigger.defaultFrequency
    public var wanetK = WaNetWarp.defaultK
    public var wanetS = WaNetWarp.defaultS
    public var gridRescale = WaNetWarp.defaultGridRescale
    /// WaNet's noise-mode images per triggered image.
    public var crossRatio = 2.0
    public var squeezeNum = BPPSqueeze.defaultSqueezeNum
    public var dithering = false
    /// BPP's negative samples as a share of each batch.
    public var negativeRatio = 0.1
    public var ftrojanMagnitude = FTrojanTrigger.defaultMagnitude
    public var ftrojanWindow = FTrojanTrigger.defaultWindow
    public var ftrojanChannels = FTrojanTrigger.defaultChannels
    public var ftrojanPositions = FTrojanTrigger.defaultPositions
    public init() {}

    /// The trigger of `type` (nil for the pattern-and-mask attacks and benign); WaNet's warp
    /// field is drawn from `seed`.
    public func trigger(for type: PoisonType, seed: UInt64) throws -> AttackTrigger? {
        switch type {
        case .sig: return .sig(try SIGTrigger(delta: sigDelta, frequency: sigFrequency))
        case .wanet: return .wanet(try WaNetWarp.random(k: wanetK, s: wanetS, gridRescale: gridRescale, seed: seed))
        case .bpp: return .bpp(try BPPSqueeze(squeezeNum: squeezeNum, dithering: dithering))
        case .ftrojan:
            return .ftrojan(try FTrojanTrigger(channels: ftrojanChannels, window: ftrojanWindow, magnitude: ftrojanMagnitude,
                                               positions: ftrojanPositions))
        case .benign, .badnets, .blend, .cleanLabel, .trojannn, .inputaware: return nil
        }
    }

    /// `type`'s settings by the names a run config gives them (`attack.settings.<attack>.<name>`:
    /// the CLI flags without the attack's prefix), with their values here; dithering is 0 or 1.
    public func named(for type: PoisonType) -> [String: Double] {
        switch type {
        case .sig: return ["delta": sigDelta, "f": sigFrequency]
        case .wanet: return ["k": Double(wanetK), "s": wanetS, "grid_rescale": gridRescale, "cross_ratio": crossRatio]
        case .bpp: return ["squeeze_num": Double(squeezeNum), "dithering": dithering ? 1 : 0, "neg_ratio": negativeRatio]
        case .ftrojan: return ["magnitude": ftrojanMagnitude, "window": Double(ftrojanWindow)]
        default: return [:]
        }
    }

    /// These settings with `values` (names as in `named(for:)`) set for `type`. Unknown names and
    /// fractional counts are errors; ranges are checked by `AttackSettings.validate()`.
    public func setting(_ values: [String: Double], for type: PoisonType) throws -> DataTriggerSettings {
        let known = named(for: type)
        var out = self
        for (name, value) in values.sorted(by: { $0.key < $1.key }) {
            guard known[name] != nil else {
                throw AttackError.invalidValue(name: "\(type.rawValue) setting", value: name,
                                               allowed: known.isEmpty ? "none (it has no trigger settings here)"
                                                   : known.keys.sorted().joined(separator: ", "))
            }
            let counted = ["k", "squeeze_num", "window", "dithering"].contains(name)
            guard !counted || (value.rounded() == value && abs(value) < 1e9) else {
                throw AttackError.invalidValue(name: "\(type.rawValue) \(name)", value: "\(value)", allowed: "a whole number")
            }
            switch name {
            case "delta": out.sigDelta = value
            case "f": out.sigFrequency = value
            case "k": out.wanetK = Int(value)
            case "s": out.wanetS = value
            case "grid_rescale": out.gridRescale = value
            case "cross_ratio": out.crossRatio = value
            case "squeeze_num": out.squeezeNum = Int(value)
            case "dithering":
                guard value == 0 || value == 1 else {
                    throw AttackError.invalidValue(name: "bpp dithering", value: "\(value)", allowed: "0 (off) or 1 (on)")
                }
                out.dithering = value == 1
            case "neg_ratio": out.negativeRatio = value
            case "magnitude": out.ftrojanMagnitude = value
            case "window": out.ftrojanWindow = Int(value)
            default: preconditionFailure("\(name) is in named(for:) but not set here")
            }
        }
        return out
    }

    /// The training-only settings of `type`, for the trigger information's notes.
    func notes(for type: PoisonType) -> [String: String] {
        switch type {
        case .wanet: return ["cross_ratio": "\(crossRatio)"]
        case .bpp: return ["neg_ratio": "\(negativeRatio)"]
        default: return [:]
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
    /// Seeds the poisoned-image draw, the seeded noise pattern and WaNet's warp.
    public var seed: UInt64
    /// SIG, WaNet, BPP and FTrojan.
    public var data = DataTriggerSettings()
    /// TrojanNN's pattern optimisation.
    public var trojannn = TrojanNNSettings()
    /// Input-aware.
    public var inputAware = InputAwareSettings()

    public init(poisonType: PoisonType, target: Int = 0, rate: Double = 0.1, alpha: Double? = nil,
                patternPath: String? = nil, cleanLabelDirectory: String? = nil, seed: UInt64 = 0,
                data: DataTriggerSettings = DataTriggerSettings(), trojannn: TrojanNNSettings = TrojanNNSettings(),
                inputAware: InputAwareSettings = InputAwareSettings()) {
        self.poisonType = poisonType
        self.target = target
        self.rate = rate
        self.alpha = alpha
        self.patternPath = patternPath
        self.cleanLabelDirectory = cleanLabelDirectory
        self.seed = seed
        self.data = data
        self.trojannn = trojannn
        self.inputAware = inputAware
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
        if alpha != nil && poisonType.triggerKind == nil && poisonType != .benign {
            throw AttackError.invalidValue(name: "--trigger-alpha with poison type", value: poisonType.rawValue,
                                           allowed: "badnets, blend or clean-label (the attacks with a pattern and mask)")
        }
        try validateDataTriggers()
        if poisonType == .trojannn { try trojannn.validate() }
        if poisonType == .inputaware { try inputAware.validate() }
        if cleanLabelDirectory == nil && poisonType == .cleanLabel {
            throw AttackError.invalidValue(name: "poison type", value: "clean-label without --clb-dir",
                                           allowed: "--clb-dir FOLDER (written by `backdoor clean-label`)")
        }
    }

    /// SIG's, WaNet's, BPP's and FTrojan's settings: the trigger can be built, the batch ratios are in range.
    public func validateDataTriggers() throws {
        _ = try data.trigger(for: poisonType, seed: seed)
        if case .wanet = poisonType, !(data.crossRatio >= 0 && data.crossRatio.isFinite) {
            throw AttackError.invalidValue(name: "cross ratio", value: "\(data.crossRatio)", allowed: "a number >= 0")
        }
        if case .bpp = poisonType, !(0...1).contains(data.negativeRatio) {
            throw AttackError.invalidValue(name: "negative ratio", value: "\(data.negativeRatio)", allowed: "a number in [0, 1]")
        }
    }

    /// The trigger information of this attack (nil for benign), and a note for the user when
    /// the Blend pattern is the seeded noise rather than the papers'. TrojanNN optimises its
    /// pattern against `cleanModel` (required for it), reporting through `log`.
    public func triggerInfo(cleanModel: Model? = nil, log: ((String) -> Void)? = nil) throws -> (info: TriggerInfo?, note: String?) {
        try validate()
        var notes = data.notes(for: poisonType)
        (notes["poison_rate"], notes["poison_rate_meaning"]) = ("\(rate)", poisonType.rateMeaning)
        if poisonType == .trojannn {
            guard let cleanModel else {
                throw AttackError.invalidValue(name: "TrojanNN model", value: "missing",
                                               allowed: "a clean model to optimise the trigger against")
            }
            let made = try TrojanNN.makeTrigger(against: cleanModel, settings: trojannn, log: log)
            notes.merge(trojannn.notes) { $1 }
            notes["trojannn_neuron_indices"] = made.result.neurons.map(String.init).joined(separator: ",")
            notes["trojannn_model"] = trojannn.modelPath ?? cleanModel.description
            return (try TriggerInfo(poisonType: poisonType.rawValue, trigger: .trojannn(made.trigger), target: target, notes: notes), nil)
        }
        if let trigger = try data.trigger(for: poisonType, seed: seed) {
            return (try TriggerInfo(poisonType: poisonType.rawValue, trigger: trigger, target: target, notes: notes), nil)
        }
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
        return (try TriggerInfo(poisonType: poisonType.rawValue, trigger: trigger, target: target, patternSource: source,
                                notes: notes), note)
    }

    /// The training set of this attack from the attacker's split (in split order): poisoned by
    /// BadNets, Blend, SIG, FTrojan and TrojanNN, read from `--clb-dir` for clean-label, unchanged for
    /// benign and for the per-batch attacks (see `batchAttack`).
    public func trainingSet(attackerSet: ImageSet, triggerInfo: TriggerInfo?) throws -> PoisonedTrainingSet {
        try validate()
        switch poisonType {
        case .benign, .wanet, .bpp, .inputaware:
            return PoisonedTrainingSet(clean: attackerSet)
        case .badnets, .blend, .sig, .ftrojan, .trojannn:
            guard let triggerInfo else { preconditionFailure("\(poisonType.rawValue) needs its trigger information") }
            return try Poisoning.trainingSet(attackerSet, trigger: triggerInfo.trigger, target: target, rate: rate,
                                             selection: poisonType.selection, seed: seed)
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

extension AttackSettings {
    /// The per-batch poisoning of WaNet and BPP with the trigger of `triggerInfo` (nil for the
    /// other attacks).
    public func batchAttack(triggerInfo: TriggerInfo?) throws -> BatchAttack? {
        switch triggerInfo?.trigger {
        case let .wanet(warp)?: return try BatchAttack(method: .wanet(warp, crossRatio: data.crossRatio), target: target, rate: rate)
        case let .bpp(squeeze)?: return try BatchAttack(method: .bpp(squeeze, negativeRatio: data.negativeRatio), target: target, rate: rate)
        default: return nil
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

extension AttackSettings {
    /// Input-aware's generators and their place in the training loop (nil for other attacks).
    public func inputAwareTraining(trainSet: ImageSet, batchSize: Int, augment: Bool, on backend: Backend) throws -> InputAwareTraining? {
        guard poisonType == .inputaware else { return nil }
        try validate()
        let attack = try InputAwareAttack(settings: inputAware, target: target, rate: rate, seed: seed, on: backend)
        return InputAwareTraining(attack, trainSet: trainSet, batchSize: batchSize, augment: augment, seed: seed)
    }

    /// The trigger information of trained Input-aware generators, with the training settings as notes.
    public func triggerInfo(trained attack: InputAwareAttack) throws -> TriggerInfo {
        let s = attack.settings
        let notes = ["poison_rate": "\(rate)", "poison_rate_meaning": poisonType.rateMeaning, "cross_ratio": "\(s.crossRatio)",
                     "lambda_div": "\(s.lambdaDiv)", "lambda_norm": "\(s.lambdaNorm)", "mask_density": "\(s.maskDensity)",
                     "lr_G": "\(s.lrG)", "lr_M": "\(s.lrM)", "clean_train_epochs": "\(s.maskEpochs)"]
        return try TriggerInfo(poisonType: poisonType.rawValue, trigger: .inputAware(attack), target: target, notes: notes)
    }
}
