import ArgumentParser
import Attacks
import Datasets
import Experiments

import Foundation
import Support

extension Attacks.PoisonType: ExpressibleByArgument {}

/// The attack a training set is poisoned with (the reference's flags).
struct AttackOptions: ParsableArguments {
    typealias PoisonType = Attacks.PoisonType

    @Option(help: "Attack: benign, badnets, blend or clean-label.") var poisonType: PoisonType = .benign
    @Option(help: "Target class of the backdoor (0-9).") var poisonTarget = 0
    @Option(help: "Fraction of the non-target training images to poison (BadNets, Blend).") var poisonRate = 0.1
    @Option(help: "Trigger opacity (default 1.0 for BadNets and clean-label, 0.2 for Blend).") var triggerAlpha: Double?
    @Option(help: "32x32 PNG pattern for the Blend trigger (default: the papers' cifar_gaussian_noise.png, shipped; `seeded`: the tool's own seeded noise).") var triggerPattern: String?
    @Option(help: "Folder with the clean-label attack's data.npy, label.npy, backdoor_list.npy.") var clbDir = "data/clean-label/0.1"

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
    }
}

extension ExperimentData {
    static func prepare(data: DataOptions, attack: AttackOptions, valFrac: Double, trainLimit: Int?, testLimit: Int?,
                        seed: UInt64, outputDirectory: String, quiet: Bool) throws -> ExperimentData {
        let dataset = try data.load()
        let split = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDirectory, seed: seed)
        let settings = attack.settings(seed: seed)
        let (info, note) = try settings.triggerInfo()
        if let note, !quiet { print("note: \(note)") }
        let prepared = try make(dataset: dataset, permutation: split.permutation, settings: settings, triggerInfo: info,
                                valFrac: valFrac, trainLimit: trainLimit, testLimit: testLimit)
        if let info { try info.write(path: outputDirectory + "/" + TriggerInfo.fileName) }
        return prepared
    }
}
