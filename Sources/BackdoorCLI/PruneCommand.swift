import ArgumentParser
import Attacks
import Datasets
import Defenses
import Foundation
import Models
import NN
import Support
import Training

extension Pruning.Mode: ExpressibleByArgument {}

/// `backdoor prune`: the reference's `prune_neuron_cifar.py` (ANP step 2).
struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Adversarial Neuron Pruning, step 2: prune neurons with small masks (BN weight set to 0, bias kept).",
        discussion: """
            With --threshold T: prunes every neuron whose mask is <= T, saves the pruned model and reports clean \
            accuracy and attack success before and after. Without it: a sweep as the reference's, by threshold \
            (0, step, ..., max) or by number (step more neurons per row, up to max), evaluating after each row \
            and writing pruning_by_threshold.txt / pruning_by_number.txt to --output-dir.
            """)

    @Option(help: "Backdoored model: our safetensors checkpoint or a PyTorch state_dict file.") var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match ResNet-18: missing, extra or misshapen ones are skipped with a warning.")
    var nonStrict = false
    @Option(help: "mask_values.txt from `backdoor anp`.") var maskFile: String
    @Option(help: "Trigger information file written by `backdoor train` (builds the ASR test set).")
    var triggerInfo: String
    @Option(help: "Where the sweep file or the pruned model goes.") var outputDir = "runs/prune"
    @Option(help: "Folder holding cifar-10-batches-bin/ or cifar-10-batches-py/ (else $BACKDOOR_DATA_DIR, else ./data).")
    var dataDir: String?
    @Option(help: "Sweep by mask threshold or by number of neurons (threshold | number; default threshold, as the reference).")
    var pruningBy: Pruning.Mode?
    @Option(help: "Sweep end: the largest threshold, or the most neurons (rounded up).") var pruningMax = 0.90
    @Option(help: "Sweep step: threshold increment, or neurons per row (rounded up).") var pruningStep = 0.05
    @Option(parsing: .unconditional, help: "Prune once at this mask threshold and save the model (instead of a sweep).")
    var threshold: Double?
    @Option(help: "Pruned model path for --threshold (default: OUTPUT-DIR/pruned_threshold_T.safetensors).")
    var prunedCheckpoint: String?
    @Option(help: "Evaluation batch size.") var batchSize = 256
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var network: ModelOption

    func validate() throws {
        if let testLimit, testLimit < 1 { throw ValidationError("--test-limit must be at least 1, got \(testLimit)") }
        // Masks lie in [0, 1]: 2 pruned every neuron and -1 none, without a word.
        try FlagLimits.fraction(threshold, flag: "--threshold")
        if threshold != nil && pruningBy == .number {
            throw ValidationError("--threshold prunes by threshold: drop --pruning-by number")
        }
        guard pruningStep > 0 && pruningStep.isFinite else { throw ValidationError("--pruning-step \(pruningStep) is invalid: expected > 0") }
        guard pruningMax >= 0 && pruningMax.isFinite else { throw ValidationError("--pruning-max \(pruningMax) is invalid: expected >= 0") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size \(batchSize) is invalid: expected >= 1") }
    }

    func run() throws {
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, expected: network.model, on: compute.backend(for: .inference))
        let scores = try MaskFile.read(path: maskFile)
        try Pruning.validate(scores, for: model, source: maskFile)
        let info = try TriggerInfo.read(path: triggerInfo)
        var test = try DataDirectory.load(flag: dataDir).test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }
        let poisonTest = try Poisoning.testSet(test, trigger: info.trigger, target: info.target)
        try Folder.create(outputDir)
        let evaluate = { (model: Model) in
            try BackdoorMetrics.evaluate(model, clean: test, poison: poisonTest, batchSize: batchSize)
        }
        let start = Date()
        let baseline = try evaluate(model)
        print("No. \t Layer Name \t Neuron Idx \t Mask \t PoisonLoss \t PoisonACC \t CleanLoss \t CleanACC")
        print("0 \t None     \t None     \t " + [baseline.poisonLoss, baseline.poisonAccuracy, baseline.cleanLoss,
                                                  baseline.cleanAccuracy].map { String(format: "%.4f", $0) }.joined(separator: " \t "))
        if let threshold {
            try pruneOnce(model, scores: scores, threshold: threshold, baseline: baseline, evaluate: evaluate)
            return
        }
        let mode = pruningBy ?? .threshold
        let rowCount = mode == .threshold ? Pruning.thresholds(max: pruningMax, step: pruningStep).count
            : Int(pruningMax.rounded(.up)) / Int(pruningStep.rounded(.up)) + 1
        let progress = ProgressBar(total: rowCount, label: "prune")
        let rows = try Pruning.sweep(model, scores: scores, mode: mode, max: pruningMax, step: pruningStep,
                                     evaluate: evaluate) { row in
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            print(row.line(mode: mode), terminator: "")
            progress.advance()
        }
        progress.finish()
        let path = (outputDir as NSString).appendingPathComponent(mode.fileName)
        try AtomicFile.write(Pruning.sweepText(rows, mode: mode), to: path)
        print(String(format: "wrote %@ (%d rows, %.1f s)", path, rows.count, Date().timeIntervalSince(start)))
    }

    func pruneOnce(_ model: Model, scores: [NeuronScore], threshold: Double, baseline: BackdoorMetrics,
                   evaluate: (Model) throws -> BackdoorMetrics) throws {
        let chosen = Pruning.neurons(scores, atOrBelow: threshold)
        try Pruning.prune(model, neurons: chosen)
        let after = try evaluate(model)
        let path = prunedCheckpoint
            ?? (outputDir as NSString).appendingPathComponent("pruned_threshold_\(threshold).safetensors")
        try Checkpoint.save(model, to: path, extraMetadata: [
            "anp_mask_file": maskFile, "anp_threshold": "\(threshold)", "anp_pruned_neurons": "\(chosen.count)",
        ])
        let summary: [String: Any] = [
            "checkpoint": checkpoint, "mask_file": maskFile, "threshold": threshold, "pruned_neurons": chosen.count,
            "total_neurons": scores.count, "pruned_checkpoint": path,
            "before": ["clean_acc": baseline.cleanAccuracy, "clean_loss": baseline.cleanLoss,
                       "asr": baseline.poisonAccuracy, "poison_loss": baseline.poisonLoss],
            "after": ["clean_acc": after.cleanAccuracy, "clean_loss": after.cleanLoss,
                      "asr": after.poisonAccuracy, "poison_loss": after.poisonLoss],
        ]
        try AtomicFile.write(try JSONOutput.string(summary) + "\n",
                             to: (outputDir as NSString).appendingPathComponent("pruning_threshold_\(threshold).json"))
        print(String(format: "pruned %d of %d neurons (mask <= %g): clean accuracy %.2f%% -> %.2f%%, ASR %.2f%% -> %.2f%%",
                     chosen.count, scores.count, threshold, 100 * baseline.cleanAccuracy, 100 * after.cleanAccuracy,
                     100 * baseline.poisonAccuracy, 100 * after.poisonAccuracy))
        print("saved \(path)")
    }
}
