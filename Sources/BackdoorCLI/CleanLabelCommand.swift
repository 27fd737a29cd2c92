import ArgumentParser
import Attacks
import Datasets
import Foundation
import NN
import Support

struct CleanLabelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clean-label",
        abstract: "Make the clean-label poisoned training set with PGD against a clean model.",
        discussion: """
            Takes floor(rate x target-class images) target-class images of the attacker's split (a seeded draw), \
            raises the clean model's loss on them with L-inf PGD in [0, 1] pixel space (random start, images that \
            become misclassified stop moving, the attempt with the largest loss is kept), rounds to bytes and adds \
            the four-corner trigger; labels stay correct. Writes data.npy, label.npy, backdoor_list.npy (attacker \
            split order), trigger_info.safetensors and examples.png to --clb-dir, for \
            `backdoor train --poison-type clean-label --clb-dir DIR`.
            """)

    @OptionGroup var compute: ComputeOptions
    @OptionGroup var network: ModelOption
    @OptionGroup var data: DataOptions
    @Option(help: "Clean model checkpoint (trained with --poison-type benign).") var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match ResNet-18: missing, extra or misshapen ones are skipped with a warning.")
    var nonStrict = false
    @Option(help: "Target class of the backdoor (0-9).") var poisonTarget = 0
    @Option(help: "Share of the training set to poison: round(rate x attacker-split images), at most the whole target class (0.1: all of it; BackdoorBench's meaning).") var poisonRate = 0.1
    @Option(help: "Opacity of the four-corner trigger.") var triggerAlpha = 1.0
    @Option(help: "L-inf radius in pixel scale, as a fraction (16/255) or a decimal.") var eps = PixelAmount(16, over: 255)
    @Option(help: "PGD step size, as a fraction (2/255) or a decimal.") var stepSize = PixelAmount(2, over: 255)
    @Option(help: "PGD iterations per attempt.") var iters = 100
    @Option(help: "Random restarts after the first attempt (1 means 2 attempts).") var restarts = 1
    @Option(help: "Images per PGD batch.") var batchSize = 128
    @Option(help: "Fraction of the training set kept as the defender's clean split.") var valFrac = 0.1
    @Option(parsing: .unconditional, help: "Seed for the image draw, the random starts and a missing split.", transform: parseSeed) var seed: UInt64 = 0
    @Option(help: "Output folder (default data/clean-label/RATE, e.g. data/clean-label/0.1).") var clbDir: String?
    @Flag(help: "No progress bar.") var quiet = false

    var outputDirectory: String { clbDir ?? "data/clean-label/\(poisonRate)" }

    var pgd: CleanLabelPGD {
        CleanLabelPGD(epsilon: Float(eps.value), stepSize: Float(stepSize.value), iterations: iters, restarts: restarts,
                      batchSize: batchSize)
    }

    func validate() throws {
        guard valFrac >= 0, valFrac < 1 else { throw ValidationError("--val-frac must be in [0, 1), got \(valFrac)") }
        do {
            try Poisoning.validate(rate: poisonRate)
            try Poisoning.validate(target: poisonTarget)
            try Trigger.validate(alpha: triggerAlpha)
            try pgd.validate()
        } catch let error as AttackError {
            throw ValidationError(AttackFlags.describe(error))
        }
    }

    func run() throws {
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, expected: network.model, on: compute.backend(for: .inference))
        let dataset = try data.load()
        let split = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDirectory, seed: seed)
        let attackerSet = dataset.train.subset(DataSplit(permutation: split.permutation, valFrac: valFrac).attacker)
        let trigger = try Trigger.checkerboard4Corner(alpha: triggerAlpha)
        let chosen = try CleanLabelAttack.chooseImages(labels: attackerSet.labels, target: poisonTarget, rate: poisonRate, seed: seed)
        print("clean-label: PGD on \(chosen.count) class-\(poisonTarget) images of the \(attackerSet.count)-image attacker split "
            + "(eps \(eps), step \(stepSize), \(iters) iterations, \(restarts + 1) attempts, batch \(batchSize)), "
            + "model \(model.description) from \(checkpoint)")

        let progress = ProgressBar(total: pgd.stepCount(images: chosen.count), label: "PGD", quiet: quiet)
        let start = Date()
        let poisoned = try CleanLabelAttack.poison(attackerSet, classifier: model, target: poisonTarget, rate: poisonRate,
                                                   trigger: trigger, pgd: pgd, seed: seed, progress: progress)
        progress.finish()
        let seconds = Date().timeIntervalSince(start)

        let info = try TriggerInfo(poisonType: PoisonType.cleanLabel.rawValue, trigger: trigger, target: poisonTarget,
                                   notes: ["poison_rate": "\(poisonRate)", "poison_rate_meaning": PoisonType.cleanLabel.rateMeaning])
        let files = try PoisonedSetFolder.export(poisoned, clean: attackerSet, triggerInfo: info, to: outputDirectory)
        print(String(format: "poisoned %d images in %.1f s; split from %@", poisoned.poisonedIndices.count, seconds, split.path))
        for file in files { print("wrote \(file)") }
    }
}

/// A pixel-scale amount given as "16/255" or "0.0627".
struct PixelAmount: ExpressibleByArgument, CustomStringConvertible {
    let value: Double
    let text: String

    init(_ numerator: Double, over denominator: Double) {
        value = numerator / denominator
        text = "\(Int(numerator))/\(Int(denominator))"
    }

    init?(argument: String) {
        let parts = argument.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, let numerator = Double(parts[0]), let denominator = Double(parts[1]), denominator != 0 {
            value = numerator / denominator
        } else if parts.count == 1, let decimal = Double(argument) {
            value = decimal
        } else {
            return nil
        }
        text = argument
    }

    var description: String { text }
    var defaultValueDescription: String { text }
}
