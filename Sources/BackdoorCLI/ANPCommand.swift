import ArgumentParser
import Attacks
import Backend
import Datasets
import Defenses
import Foundation
import Models
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

    @Option(help: "Backdoored model: our safetensors checkpoint or a PyTorch state_dict file.") var checkpoint: String?
    @Flag(help: "Load a checkpoint whose tensors do not all match ResNet-18: missing, extra or misshapen ones are skipped with a warning.")
    var nonStrict = false
    @Option(help: "Trigger information file written by `backdoor train` (for the ASR columns of the log).")
    var triggerInfo: String?
    @Option(help: "Where mask_values.txt and the logs go.") var outputDir = "runs/anp"
    @OptionGroup var data: DataOptions
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var network: ModelOption
    @Option(help: "Fraction of the training set held by the defender.") var valFrac = 0.01
    @Option(help: "Perturbation budget (0 disables the adversary).") var anpEps: Float = 0.4
    @Option(help: "Adversarial steps per iteration.") var anpSteps = 1
    @Option(help: "Weight of the natural loss; 1 - alpha weighs the perturbed loss.") var anpAlpha: Float = 0.2
    @Option(help: "Mask learning rate (SGD, momentum 0.9).") var lr: Float = 0.2
    @Option(help: "Mask optimisation iterations.") var nbIter = 2000
    @Option(help: "Iterations between log lines (each evaluates the test sets).") var printEvery = 500
    @Option(help: "Batch size of the mask optimisation.") var batchSize = 128
    @Option(help: "Batch size of the evaluations.") var evalBatchSize = 256
    @Option(help: "Evaluate on the first N test images only (quick runs).") var testLimit: Int?
    @Option(parsing: .unconditional, help: "Seed of the batch draws, augmentation and perturbations (and of a generated split).", transform: parseSeed)
    var seed: UInt64 = 0
    @Flag(help: "Continue from --output-dir/anp_state.safetensors when it exists.") var resume = false
    @Option(help: "Time this many iterations on random data and a random model instead (no data needed).")
    var benchmark: Int?
    @Option(help: "Width of the random --model of --benchmark (ResNet family only; default 64, the real model).") var width: Int?

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
        if let testLimit, testLimit < 1 { throw ValidationError("--test-limit must be at least 1, got \(testLimit)") }
        guard valFrac > 0 && valFrac <= 1 else { throw ValidationError("--val-frac \(valFrac) is invalid: expected a fraction in (0, 1]") }
        guard evalBatchSize >= 1 else { throw ValidationError("--eval-batch-size \(evalBatchSize) is invalid: expected >= 1") }
        if let benchmark, benchmark < 1 { throw ValidationError("--benchmark \(benchmark) is invalid: expected >= 1") }
        try FlagLimits.width(width, model: network.architecture)
        if benchmark == nil && checkpoint == nil { throw ValidationError("--checkpoint is required (the backdoored model)") }
        do { try config.validate() } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        let backend = try compute.backend(for: .inference)
        if let benchmark { return try runBenchmark(iterations: benchmark, on: backend) }
        guard let checkpoint else { return }
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, expected: network.model, on: backend)
        let dataSet = try data.load()
        var test = dataSet.test
        if let testLimit, testLimit < test.count { test = test.subset(Array(0..<testLimit)) }
        try Folder.create(outputDir)
        let (permutation, splitPath) = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDir, seed: seed,
                                                               count: dataSet.train.count)
        let split = DataSplit(permutation: permutation, valFrac: valFrac)
        var poisonTest: ImageSet?
        if let triggerInfo {
            let info = try TriggerInfo.read(path: triggerInfo)
            poisonTest = try Poisoning.testSet(test, trigger: info.trigger, target: info.target)
        }
        let images = ANPData(defender: dataSet.train.subset(split.defender), cleanTest: test, poisonTest: poisonTest)

        let logPath = (outputDir as NSString).appendingPathComponent("anp_log.txt")
        let jsonPath = (outputDir as NSString).appendingPathComponent("anp_log.jsonl")
        let statePath = (outputDir as NSString).appendingPathComponent(ANP.stateFileName)
        let resuming = resume && FileManager.default.fileExists(atPath: statePath)
        var logText = resuming ? (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" : ""
        let jsonLog = try JSONLinesWriter(path: jsonPath, truncate: !resuming)
        func say(_ line: String) throws {
            print(line)
            logText += line + "\n"
            try AtomicFile.write(logText, to: logPath)
        }
        try say("ANP on \(checkpoint) (\(model.description)), \(images.defender.count) defender images from \(splitPath), "
            + "eps \(anpEps), steps \(anpSteps), alpha \(anpAlpha), lr \(lr), \(nbIter) iterations of \(batchSize), "
            + backend.summary + (resuming ? ", resuming from \(statePath)" : ""))
        if poisonTest == nil { try say("no --trigger-info: the poison columns stay empty") }
        try say(ANPLogEntry.header)
        let progress = ProgressBar(total: nbIter, label: "anp")
        let result = try ANP.optimizeMasks(model: model, data: images, config: config, statePath: statePath,
                                           resume: resume, evaluationBatchSize: evalBatchSize, progress: progress) { entry in
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            try say(entry.line)
            try jsonLog.append(entry.json)
        }
        progress.finish()
        let maskPath = (outputDir as NSString).appendingPathComponent(MaskFile.fileName)
        try MaskFile.write(result.scores, to: maskPath)
        let masks = result.masks.joined()
        try say("wrote \(maskPath): \(masks.count) neurons, \(masks.filter { $0 <= 0.2 }.count) with mask <= 0.2, "
            + "\(masks.filter { $0 == 0 }.count) at 0")
    }

    /// CPU seconds of this process, all threads (CLOCK_PROCESS_CPUTIME_ID).
    static func processCPUSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Seconds per ANP iteration on random weights and images (what matters for speed is the
    /// shape: width and batch size).
    func runBenchmark(iterations: Int, on backend: Backend) throws {
        let model = try network.architecture.model(width: network.width(width), seed: seed, on: backend)
        var generator = SeededGenerator(seed: seed, stream: "anp-benchmark")
        let images = (0..<(batchSize * 3072)).map { _ in generator.nextGaussian() }
        let labels = (0..<batchSize).map { _ in Int32(generator.next() % 10) }
        let optimizer = try MaskOptimizer(model: model, config: config)
        defer { optimizer.detach() }
        try optimizer.step(images: images, labels: labels, generator: &generator)  // primitive creation, first touch
        /// Mean wall and process CPU seconds of `body` (CPU time shows contention from other processes).
        func measure(_ runs: Int, _ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
            let (wallStart, cpuStart) = (Date(), Self.processCPUSeconds())
            for _ in 0..<runs { try body() }
            return (Date().timeIntervalSince(wallStart) / Double(runs), (Self.processCPUSeconds() - cpuStart) / Double(runs))
        }
        let iteration = try measure(iterations) { try optimizer.step(images: images, labels: labels, generator: &generator) }
        let forward = try measure(iterations) { _ = try model.forward(images: images, count: batchSize, mode: .training) }
        let both = try measure(iterations) { _ = try optimizer.gradients(images: images, labels: labels, perturbed: true) }
        print(String(format: "ANP iteration, %@, batch %d, %@: %.3f s wall, %.3f s CPU (mean of %d)",
                     model.description, batchSize, backend.summary, iteration.wall, iteration.cpu, iterations))
        print(String(format: "  of which each of its %d forward+backward passes: %.3f s wall (forward %.3f s, backward %.3f s)",
                     2 + anpSteps, both.wall, forward.wall, both.wall - forward.wall))
    }
}

