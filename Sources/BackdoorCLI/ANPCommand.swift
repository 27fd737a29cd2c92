import ArgumentParser
import Attacks
import Datasets
import Defenses
import DNNL
import Foundation
import NN
import Support

/// `backdoor anp`: the reference's `optimize_mask_cifar.py` (ANP mask optimisation), writing
/// mask_values.txt for `backdoor prune`.
struct ANPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "anp",
        abstract: "Adversarial Neuron Pruning, step 1: optimise a mask per BatchNorm neuron (writes mask_values.txt).",
        discussion: """
            Loads the backdoored model, draws batches with replacement from the defender's clean split \
            (the first --val-frac of the split permutation, train-time augmentation) and learns neuron masks \
            under adversarial neuron perturbations. Every --print-every iterations it logs the train loss, the \
            masked model's clean accuracy and, with --trigger-info, its attack success rate, to the screen, \
            anp_log.txt and anp_log.jsonl in --output-dir. The state is saved there too (anp_state.safetensors); \
            --resume continues an interrupted run. `--benchmark N` times N iterations at --width on random data instead.
            """)

    @Option(help: "Backdoored model (safetensors checkpoint).") var checkpoint: String?
    @Option(help: "Trigger information file written by `backdoor train` (for the ASR columns of the log).")
    var triggerInfo: String?
    @Option(help: "Where mask_values.txt and the logs go.") var outputDir = "runs/anp"
    @Option(help: "CIFAR-10 folder (default $BACKDOOR_DATA_DIR, else ./data).") var dataDir: String?
    @Option(help: "Split permutation file (one index per line), the one training used; default: a seeded one.")
    var splitFile: String?
    @Option(help: "Fraction of the training set held by the defender.") var valFrac = 0.01
    @Option(help: "Perturbation budget (0 disables the adversary).") var anpEps: Float = 0.4
    @Option(help: "Adversarial steps per iteration.") var anpSteps = 1
    @Option(help: "Weight of the natural loss; 1 - alpha weighs the perturbed loss.") var anpAlpha: Float = 0.2
    @Option(help: "Mask learning rate (SGD, momentum 0.9).") var lr: Float = 0.2
    @Option(help: "Mask optimisation iterations.") var nbIter = 2000
    @Option(help: "Iterations between log lines (each evaluates the test sets).") var printEvery = 500
    @Option(help: "Batch size of the mask optimisation.") var batchSize = 128
    @Option(help: "Batch size of the evaluations.") var evalBatchSize = 256
    @Option(help: "Seed of the batch draws, augmentation and perturbations (and of a generated split).")
    var seed: UInt64 = 0
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Flag(help: "Continue from --output-dir/anp_state.safetensors when it exists.") var resume = false
    @Option(help: "Time this many iterations on random data and a random model instead (no data needed).")
    var benchmark: Int?
    @Option(help: "Width of the random model of --benchmark (64 is the real ResNet-18).") var width = 64

    var config: ANPConfig {
        var config = ANPConfig()
        config.eps = anpEps
        config.steps = anpSteps
        config.alpha = anpAlpha
        config.learningRate = lr
        config.iterations = nbIter
        config.printEvery = printEvery
        config.batchSize = batchSize
        config.seed = seed
        return config
    }

    func validate() throws {
        guard valFrac > 0 && valFrac <= 1 else { throw ValidationError("--val-frac \(valFrac) is invalid: expected a fraction in (0, 1]") }
        guard evalBatchSize >= 1 else { throw ValidationError("--eval-batch-size \(evalBatchSize) is invalid: expected >= 1") }
        if let threads, threads < 1 { throw ValidationError("--threads \(threads) is invalid: expected >= 1") }
        if let benchmark, benchmark < 1 { throw ValidationError("--benchmark \(benchmark) is invalid: expected >= 1") }
        if benchmark == nil && checkpoint == nil { throw ValidationError("--checkpoint is required (the backdoored model)") }
        do { try config.validate() } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        if let threads { Runtime.setThreads(threads) }
        if let benchmark { return try runBenchmark(iterations: benchmark) }
        guard let checkpoint else { return }
        let (model, warnings) = try Checkpoint.load(checkpoint)
        for warning in warnings { print("warning: \(checkpoint): \(warning)") }
        let dataSet = try DataDirectory.load(flag: dataDir)
        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        let (permutation, splitPath) = try Permutation.resolve(splitFile: splitFile, outputDirectory: outputDir, seed: seed,
                                                               count: dataSet.train.count)
        let split = DataSplit(permutation: permutation, valFrac: valFrac)
        var poisonTest: ImageSet?
        if let triggerInfo {
            let info = try TriggerInfo.read(path: triggerInfo)
            poisonTest = try Poisoning.testSet(dataSet.test, trigger: info.trigger, target: info.target)
        }
        let data = ANPData(defender: dataSet.train.subset(split.defender), cleanTest: dataSet.test, poisonTest: poisonTest)

        let logPath = (outputDir as NSString).appendingPathComponent("anp_log.txt")
        let jsonPath = (outputDir as NSString).appendingPathComponent("anp_log.jsonl")
        let statePath = (outputDir as NSString).appendingPathComponent(ANP.stateFileName)
        let resuming = resume && FileManager.default.fileExists(atPath: statePath)
        let textLog = try AppendingTextLog(path: logPath, truncate: !resuming)
        let jsonLog = try JSONLinesWriter(path: jsonPath, truncate: !resuming)
        func say(_ line: String) {
            print(line)
            textLog.append(line)
        }
        say("ANP on \(checkpoint) (ResNet-18 width \(model.width)), \(data.defender.count) defender images from \(splitPath), "
            + "eps \(anpEps), steps \(anpSteps), alpha \(anpAlpha), lr \(lr), \(nbIter) iterations of \(batchSize), "
            + "\(Runtime.threads) threads" + (resuming ? ", resuming from \(statePath)" : ""))
        if poisonTest == nil { say("no --trigger-info: the poison columns stay empty") }
        say(ANPLogEntry.header)
        let progress = ProgressBar(total: nbIter, label: "anp")
        let result = try ANP.optimizeMasks(model: model, data: data, config: config, statePath: statePath,
                                           resume: resume, evaluationBatchSize: evalBatchSize, progress: progress) { entry in
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            say(entry.line)
            try jsonLog.append(entry.json)
        }
        progress.finish()
        let maskPath = (outputDir as NSString).appendingPathComponent(MaskFile.fileName)
        try MaskFile.write(result.scores, to: maskPath)
        let masks = result.masks.joined()
        say("wrote \(maskPath): \(masks.count) neurons, \(masks.filter { $0 <= 0.2 }.count) with mask <= 0.2, "
            + "\(masks.filter { $0 == 0 }.count) at 0")
    }

    /// Seconds per ANP iteration on random weights and images (what matters for speed is the
    /// shape: width and batch size).
    func runBenchmark(iterations: Int) throws {
        let model = try ResNet18(width: width, seed: seed)
        var generator = SeededGenerator(seed: seed, stream: "anp-benchmark")
        let images = (0..<(batchSize * 3072)).map { _ in generator.nextGaussian() }
        let labels = (0..<batchSize).map { _ in Int32(generator.next() % 10) }
        let optimizer = try MaskOptimizer(model: model, config: config)
        defer { optimizer.detach() }
        try optimizer.step(images: images, labels: labels, generator: &generator)  // primitive creation, first touch
        var times: [Double] = []
        for _ in 0..<iterations {
            let start = Date()
            try optimizer.step(images: images, labels: labels, generator: &generator)
            times.append(Date().timeIntervalSince(start))
        }
        let mean = times.reduce(0, +) / Double(times.count)
        print(String(format: "ANP iteration, width %d, batch %d, %d threads: %.3f s mean over %d (min %.3f, max %.3f)",
                     width, batchSize, Runtime.threads, mean, iterations, times.min()!, times.max()!))
    }
}

/// A human-readable log file, appended line by line (the text twin of a JSON-lines log).
final class AppendingTextLog {
    private let handle: FileHandle

    init(path: String, truncate: Bool) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if truncate || !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw FileError(path, "cannot create the log file") }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw FileError(path, "cannot open the log file for appending") }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    func append(_ line: String) { handle.write(Data((line + "\n").utf8)) }

    deinit { try? handle.close() }
}
