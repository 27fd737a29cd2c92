import ArgumentParser
import Attacks
import Backend
import Datasets
import Experiments
import NN

import Foundation
import Support

extension Attacks.PoisonType: ExpressibleByArgument {}

/// The attack a training set is poisoned with (the reference's flags).
struct AttackOptions: ParsableArguments {
    typealias PoisonType = Attacks.PoisonType

    @Option(help: "Attack: benign, badnets, blend, clean-label, sig, wanet, bpp, ftrojan, trojannn or inputaware.") var poisonType: PoisonType = .benign
    @Option(help: "Target class of the backdoor (0-9).") var poisonTarget = 0
    @Option(help: ArgumentHelp("Share of the training images to poison (its meaning depends on the attack).",
                               discussion: "badnets, blend: floor(rate x non-target images), relabelled. sig, clean-label: round(rate x all "
                                   + "images), at most the whole target class (0.1 is all of it), labels kept. ftrojan: round(rate x all images), "
                                   + "relabelled. wanet, bpp, inputaware: int(rate x batch size) of every training batch, relabelled. trojannn: round(rate x all images), relabelled."))
    var poisonRate = 0.1
    @Option(help: "Trigger opacity (default 1.0 for BadNets and clean-label, 0.2 for Blend).") var triggerAlpha: Double?
    @Option(help: "32x32 PNG pattern for the Blend trigger (default: the papers' cifar_gaussian_noise.png, shipped; `seeded`: the tool's own seeded noise).") var triggerPattern: String?
    @Option(help: "Folder with the clean-label attack's data.npy, label.npy, backdoor_list.npy.") var clbDir = "data/clean-label/0.1"
    @Option(help: "SIG: amplitude of the sinusoid in grey levels.") var sigDelta = SIGTrigger.defaultDelta
    @Option(help: "SIG: periods of the sinusoid across the image.") var sigF = SIGTrigger.defaultFrequency
    @Option(parsing: .unconditional, help: "WaNet: side of the random warp field before upsampling.") var wanetK = WaNetWarp.defaultK
    @Option(help: "WaNet: strength of the warp.") var wanetS = WaNetWarp.defaultS
    @Option(help: "WaNet: scale of the warped sampling grid.") var gridRescale = WaNetWarp.defaultGridRescale
    @Option(help: "WaNet: noise-mode images (warp plus jitter, labels kept) per triggered image of a batch (default 2). Input-aware: cross-trigger images (another image's pattern and mask, labels kept) per triggered image (default 1).")
    var crossRatio: Double?
    @Option(parsing: .unconditional, help: "BPP: colour levels per channel after squeezing.") var squeezeNum = BPPSqueeze.defaultSqueezeNum
    @Option(help: "BPP: Floyd-Steinberg dithering when squeezing (true or false).") var dithering = false
    @Option(help: "BPP: negative samples (squeeze residual of another image, labels kept) as a share of each batch.") var negRatio = 0.1
    @Option(help: "FTrojan: value added to each chosen DCT coefficient.") var ftrojanMagnitude = FTrojanTrigger.defaultMagnitude
    @Option(parsing: .unconditional, help: "FTrojan: DCT window side (a divisor of 32).") var ftrojanWindow = FTrojanTrigger.defaultWindow
    @Option(help: "FTrojan: YCrCb channels to bump, comma-separated (0 Y, 1 Cr, 2 Cb).") var ftrojanChannels = "1,2"
    @Option(help: "FTrojan: frequencies inside each window as row,column pairs, comma-separated.") var ftrojanPositions = "15,15,31,31"
    @Option(help: "TrojanNN: the clean model's checkpoint the trigger is optimised against (required for trojannn; `backdoor run` trains one).") var trojannnModel: String?
    @Option(help: "TrojanNN: 32x32 PNG whose non-zero pixels are the trigger region and its start (default: BackdoorBench's apple4.png at 32x32, shipped).") var trojannnMask: String?
    @Option(help: "TrojanNN: the layer whose input neurons are excited, ranked by the sum of its absolute weights (BackdoorBench: selected_layer_name).") var trojannnLayer = "linear"
    @Option(parsing: .unconditional, help: "TrojanNN: how many of the most connected neurons (num_neuron).") var trojannnNeurons = 2
    @Option(help: "TrojanNN: the activation the chosen neurons are pulled to (neuron_target_values).") var trojannnTargetValue = 100.0
    @Option(parsing: .unconditional, help: "TrojanNN: sign-gradient steps of the pattern (mask_update_iters).") var trojannnSteps = 1000
    @Option(help: "TrojanNN: step of the pattern in [0, 1] pixel scale (the PGD alpha).") var trojannnStepSize = 0.1
    @Option(help: "TrojanNN: how far the pattern may move from the mask image, [0, 1] pixel scale (the PGD eps).") var trojannnEps = 0.3
    @OptionGroup var inputAware: InputAwareOptions

    func validate() throws {
        guard (0...1).contains(poisonRate) else {
            throw ValidationError("--poison-rate must be in [0, 1], got \(poisonRate)")
        }
        guard (0...9).contains(poisonTarget) else {
            throw ValidationError("--poison-target must be a class in 0-9, got \(poisonTarget)")
        }
        if let triggerAlpha, !(0...1).contains(triggerAlpha) {
            throw ValidationError("--trigger-alpha must be in [0, 1], got \(triggerAlpha)")
        }
        let positions = try Self.integers(ftrojanPositions, flag: "--ftrojan-positions")
        guard positions.count % 2 == 0 else {
            throw ValidationError("--ftrojan-positions \(ftrojanPositions) holds \(positions.count) numbers; expected row,column pairs")
        }
        _ = try Self.integers(ftrojanChannels, flag: "--ftrojan-channels")
        _ = try inputAware.settings(crossRatio: crossRatio)
        if poisonType == .trojannn && trojannnModel == nil {
            throw ValidationError("--poison-type trojannn needs --trojannn-model PATH: the clean model to optimise the trigger against "
                + "(a checkpoint, e.g. from `backdoor train --poison-type benign`)")
        }
    }

    /// TrojanNN's settings (checked with the attack's).
    var trojannn: TrojanNNSettings {
        var t = TrojanNNSettings()
        (t.modelPath, t.maskPath, t.layer, t.neurons) = (trojannnModel, trojannnMask, trojannnLayer, trojannnNeurons)
        (t.targetValue, t.steps, t.stepSize, t.epsilon) = (trojannnTargetValue, trojannnSteps, trojannnStepSize, trojannnEps)
        return t
    }

    /// The clean model TrojanNN optimises against (nil for the other attacks).
    func cleanModel(on backend: Backend) throws -> Model? {
        guard poisonType == .trojannn, let trojannnModel else { return nil }
        return try ModelFiles.loadModel(trojannnModel, on: backend)
    }

    /// The attack's trigger information, loading TrojanNN's clean model and printing its progress.
    func triggerInfo(seed: UInt64, backend: () throws -> Backend, quiet: Bool) throws -> (info: TriggerInfo?, note: String?) {
        let model = poisonType == .trojannn ? try cleanModel(on: backend()) : nil
        do {
            return try settings(seed: seed).triggerInfo(cleanModel: model, log: quiet ? nil : { print($0) })
        } catch let error as AttackError {
            throw ValidationError(AttackFlags.describe(error))
        }
    }

    static func integers(_ text: String, flag: String) throws -> [Int] {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else {
            throw ValidationError("\(flag) \(text) is not a comma-separated list of whole numbers")
        }
        return parts.map { $0! }
    }

    /// The SIG, WaNet, BPP and FTrojan flags (checked by `validate()`).
    var dataTriggers: DataTriggerSettings {
        var d = DataTriggerSettings()
        (d.sigDelta, d.sigFrequency) = (sigDelta, sigF)
        (d.wanetK, d.wanetS, d.gridRescale, d.crossRatio) = (wanetK, wanetS, gridRescale, crossRatio ?? d.crossRatio)
        (d.squeezeNum, d.dithering, d.negativeRatio) = (squeezeNum, dithering, negRatio)
        (d.ftrojanMagnitude, d.ftrojanWindow) = (ftrojanMagnitude, ftrojanWindow)
        d.ftrojanChannels = (try? Self.integers(ftrojanChannels, flag: "--ftrojan-channels")) ?? d.ftrojanChannels
        let positions = (try? Self.integers(ftrojanPositions, flag: "--ftrojan-positions")) ?? []
        if positions.count % 2 == 0 && !positions.isEmpty {
            d.ftrojanPositions = stride(from: 0, to: positions.count, by: 2).map { [positions[$0], positions[$0 + 1]] }
        }
        return d
    }

    /// The flags of the chosen attack that change the result, for a resumed run's check.
    var resultSettings: [String: String] {
        switch poisonType {
        case .sig: return ["--sig-delta": "\(sigDelta)", "--sig-f": "\(sigF)"]
        case .wanet: return ["--wanet-k": "\(wanetK)", "--wanet-s": "\(wanetS)", "--grid-rescale": "\(gridRescale)", "--cross-ratio": "\(dataTriggers.crossRatio)"]
        case .bpp: return ["--squeeze-num": "\(squeezeNum)", "--dithering": "\(dithering)", "--neg-ratio": "\(negRatio)"]
        case .ftrojan:
            return ["--ftrojan-magnitude": "\(ftrojanMagnitude)", "--ftrojan-window": "\(ftrojanWindow)",
                    "--ftrojan-channels": ftrojanChannels, "--ftrojan-positions": ftrojanPositions]
        case .trojannn:
            return ["--trojannn-model": trojannnModel ?? "", "--trojannn-mask": trojannnMask ?? "apple4", "--trojannn-layer": trojannnLayer,
                    "--trojannn-neurons": "\(trojannnNeurons)", "--trojannn-target-value": "\(trojannnTargetValue)",
                    "--trojannn-steps": "\(trojannnSteps)", "--trojannn-step-size": "\(trojannnStepSize)", "--trojannn-eps": "\(trojannnEps)"]
        case .inputaware:
            return inputAware.resultSettings.merging(["--cross-ratio": "\((try? inputAware.settings(crossRatio: crossRatio))?.crossRatio ?? 1)"]) { $1 }
        default: return [:]
        }
    }
}

extension ExperimentData {
    static func prepare(data: DataOptions, attack: AttackOptions, valFrac: Double, trainLimit: Int?, testLimit: Int?,
                        batchSize: Int, seed: UInt64, outputDirectory: String, quiet: Bool,
                        backend: () throws -> Backend) throws -> ExperimentData {
        try prepareFull(data: data, attack: attack, valFrac: valFrac, trainLimit: trainLimit, testLimit: testLimit,
                        batchSize: batchSize, seed: seed, outputDirectory: outputDirectory, quiet: quiet, backend: backend).prepared
    }

    /// `prepare`, with the loaded data set and split it drew from.
    static func prepareFull(data: DataOptions, attack: AttackOptions, valFrac: Double, trainLimit: Int?, testLimit: Int?,
                            batchSize: Int, seed: UInt64, outputDirectory: String, quiet: Bool, backend: () throws -> Backend)
        throws -> (prepared: ExperimentData, dataset: CIFAR10.DataSet, permutation: [Int]) {
        let dataset = try data.load()
        let split = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDirectory, seed: seed)
        let settings = attack.settings(seed: seed)
        let (info, note) = try attack.triggerInfo(seed: seed, backend: backend, quiet: quiet)
        if let note, !quiet { print("note: \(note)") }
        let prepared = try make(dataset: dataset, permutation: split.permutation, settings: settings, triggerInfo: info,
                                valFrac: valFrac, trainLimit: trainLimit, testLimit: testLimit, batchSize: batchSize)
        if let info { try info.write(path: outputDirectory + "/" + TriggerInfo.fileName) }
        return (prepared, dataset, split.permutation)
    }
}
