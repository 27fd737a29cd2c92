import Datasets
import Foundation
import Formats
import NN
import Support
import Training

/// The images ANP works with: the defender's clean split (training images, augmented as in
/// training) and the test sets its log evaluates.
public struct ANPData {
    public var defender: ImageSet
    public var cleanTest: ImageSet
    /// The attack-success set (triggered non-target test images labelled with the target); nil
    /// leaves the poison columns of the log empty.
    public var poisonTest: ImageSet?

    public init(defender: ImageSet, cleanTest: ImageSet, poisonTest: ImageSet?) {
        self.defender = defender
        self.cleanTest = cleanTest
        self.poisonTest = poisonTest
    }
}

/// One line of the ANP log (every `printEvery` iterations and at the end).
public struct ANPLogEntry: Equatable {
    public var iteration: Int
    public var learningRate: Double
    /// Seconds since the previous entry (mask iterations and the evaluations).
    public var seconds: Double
    /// Mean mask objective and natural-forward accuracy over the iterations since the previous entry.
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var poisonLoss: Double?
    public var poisonAccuracy: Double?
    public var cleanLoss: Double
    public var cleanAccuracy: Double

    public static let header = "Iter \t lr \t Time \t TrainLoss \t TrainACC \t PoisonLoss \t PoisonACC \t CleanLoss \t CleanACC"

    /// The reference's line format.
    public var line: String {
        func f4(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "-" }
        return "\(iteration) \t \(String(format: "%.3f", learningRate)) \t \(String(format: "%.1f", seconds)) \t "
            + [f4(trainLoss), f4(trainAccuracy), f4(poisonLoss), f4(poisonAccuracy), f4(cleanLoss), f4(cleanAccuracy)]
            .joined(separator: " \t ")
    }

    public var json: [String: Any] {
        var out: [String: Any] = ["iteration": iteration, "lr": learningRate, "seconds": seconds,
                                  "train_loss": trainLoss, "train_acc": trainAccuracy,
                                  "clean_loss": cleanLoss, "clean_acc": cleanAccuracy]
        if let poisonLoss, let poisonAccuracy {
            out["poison_loss"] = poisonLoss
            out["poison_acc"] = poisonAccuracy
        }
        return out
    }
}

public struct ANPResult {
    /// BN layer names (state_dict names) in model order.
    public var layers: [String]
    public var masks: NeuronValues
    public var log: [ANPLogEntry]
    /// Iteration the run resumed from (0 for a fresh run).
    public var resumedAt: Int

    /// The neurons and their masks, in model order (what mask_values.txt holds).
    public var scores: [NeuronScore] { MaskFile.scores(layers: layers, masks: masks) }
}

/// ANP end to end: mask optimisation on batches drawn with replacement from the defender's
/// split (the reference's `RandomSampler(replacement=True)` with the training transform), with
/// the reference's log, and a state file so a long run can resume.
public enum ANP {
    public static let stateFileName = "anp_state.safetensors"

    /// Runs `config.iterations` iterations (logging after every `printEvery` and after the
    /// last). With `statePath`, the state is saved there at every log point, and a run with
    /// `resume` continues from the file when it exists. The model's parameters and statistics
    /// are as before when this returns.
    public static func optimizeMasks(model: Model, data: ANPData, config: ANPConfig, statePath: String? = nil,
                                     resume: Bool = false, evaluationBatchSize: Int = 256,
                                     progress: ProgressBar? = nil,
                                     onLog: (ANPLogEntry) throws -> Void = { _ in }) throws -> ANPResult {
        guard data.defender.count > 0 else {
            throw ANPError("the defender's clean split is empty: raise --val-frac (the reference uses 0.01 = 500 images)")
        }
        let snapshot = try model.stateDict()
        let optimizer = try MaskOptimizer(model: model, config: config)
        defer {
            optimizer.detach()
            _ = try? model.load(stateDict: snapshot)
        }
        var generator = SeededGenerator(seed: config.seed, stream: "anp")
        var window = Window()
        var iteration = 0
        if resume, let statePath, FileManager.default.fileExists(atPath: statePath) {
            iteration = try loadState(statePath, into: optimizer, generator: &generator)
        }
        let resumedAt = iteration
        progress?.update(to: iteration)
        var log: [ANPLogEntry] = []
        var windowStart = Date()
        let layerNames = optimizer.layers.map(\.name)
        while iteration < config.iterations {
            let indices = (0..<config.batchSize).map { _ in Int(generator.next(upperBound: UInt64(data.defender.count))) }
            let batch = Augmentation.trainingBatch(data.defender, indices: indices, generator: &generator)
            let result = try optimizer.step(images: batch.images, labels: batch.labels, generator: &generator)
            window.add(loss: Double(result.loss), correct: result.correct, count: batch.count)
            iteration += 1
            progress?.update(to: iteration)
            if iteration % config.printEvery == 0 || iteration == config.iterations {
                var entry = try logEntry(optimizer, data: data, iteration: iteration, window: window,
                                         seconds: 0, batchSize: evaluationBatchSize)
                // As the reference's Time column: the window's iterations and this entry's evaluations.
                entry.seconds = Date().timeIntervalSince(windowStart)
                log.append(entry)
                window = Window()
                if let statePath {
                    try saveState(statePath, optimizer: optimizer, iteration: iteration, generator: generator)
                }
                try onLog(entry)
                windowStart = Date()
            }
        }
        return ANPResult(layers: layerNames, masks: try optimizer.masks, log: log, resumedAt: resumedAt)
    }

    /// Running sums of the mask objective and natural accuracy between log entries.
    struct Window {
        var lossSum = 0.0, batches = 0, correct = 0, samples = 0
        mutating func add(loss: Double, correct: Int, count: Int) {
            lossSum += loss
            batches += 1
            self.correct += correct
            samples += count
        }
    }

    /// Evaluates the masked model (BN weight `w * m`, bias `b`, running statistics) as the
    /// reference's `test` after `mask_train` does.
    static func logEntry(_ optimizer: MaskOptimizer, data: ANPData, iteration: Int, window: Window, seconds: Double,
                         batchSize: Int) throws -> ANPLogEntry {
        optimizer.setForward(perturbed: false)
        let model = optimizer.model
        let clean = try Evaluation.evaluate(model, on: data.cleanTest, batchSize: batchSize)
        let poison = try data.poisonTest.map { try Evaluation.evaluate(model, on: $0, batchSize: batchSize) }
        return ANPLogEntry(iteration: iteration, learningRate: Double(optimizer.config.learningRate), seconds: seconds,
                           trainLoss: window.batches > 0 ? window.lossSum / Double(window.batches) : 0,
                           trainAccuracy: window.samples > 0 ? Double(window.correct) / Double(window.samples) : 0,
                           poisonLoss: poison?.loss, poisonAccuracy: poison?.accuracy,
                           cleanLoss: clean.loss, cleanAccuracy: clean.accuracy)
    }

    // MARK: State file

    /// Settings that must agree for a state file to be resumed.
    static func fingerprint(_ config: ANPConfig, _ optimizer: MaskOptimizer) -> String {
        "eps=\(config.eps) steps=\(config.steps) alpha=\(config.alpha) lr=\(config.learningRate) "
            + "batch=\(config.batchSize) seed=\(config.seed) "
            + "layers=\(optimizer.layers.map { "\($0.name):\($0.channels)" }.joined(separator: ","))"
    }

    /// Masks, momentum, running statistics (they move during ANP and feed the logged
    /// evaluations), the generator and the iteration, written atomically.
    static func saveState(_ path: String, optimizer: MaskOptimizer, iteration: Int, generator: SeededGenerator) throws {
        var tensors: [String: HostTensor] = [:]
        let masks = try optimizer.masks, momentum = try optimizer.maskMomentum
        for (i, layer) in optimizer.layers.enumerated() {
            tensors["mask." + layer.name] = HostTensor(floats: masks[i], shape: [layer.channels])
            if let momentum {
                tensors["mask_momentum." + layer.name] = HostTensor(floats: momentum[i], shape: [layer.channels])
            }
            tensors["running_mean." + layer.name] = HostTensor(floats: try layer.runningMean.plainValues(), shape: [layer.channels])
            tensors["running_var." + layer.name] = HostTensor(floats: try layer.runningVar.plainValues(), shape: [layer.channels])
        }
        let generatorState = String(decoding: try JSONEncoder().encode(generator), as: UTF8.self)
        let metadata = ["format": "backdoorlab.anp_state", "iteration": String(iteration), "generator": generatorState,
                        "config": fingerprint(optimizer.config, optimizer)]
        try SafeTensors(tensors: tensors, metadata: metadata).write(path: path)
    }

    /// Restores a state saved at a log point (so the log window starts empty) and returns its iteration.
    static func loadState(_ path: String, into optimizer: MaskOptimizer, generator: inout SeededGenerator) throws -> Int {
        let file = try SafeTensors.read(path: path)
        func fail(_ message: String) -> FileError { FileError(path, "cannot resume ANP: \(message)") }
        guard file.metadata["format"] == "backdoorlab.anp_state" else { throw fail("not an ANP state file") }
        let expected = fingerprint(optimizer.config, optimizer)
        guard file.metadata["config"] == expected else {
            throw fail("it was written with \(file.metadata["config"] ?? "unknown settings"); this run has \(expected) (remove the file or drop --resume to start afresh)")
        }
        guard let iterationText = file.metadata["iteration"], let iteration = Int(iterationText),
              let generatorText = file.metadata["generator"] else { throw fail("metadata lacks the iteration or generator") }
        generator = try JSONDecoder().decode(SeededGenerator.self, from: Data(generatorText.utf8))
        func values(_ prefix: String) throws -> NeuronValues? {
            let names = optimizer.layers.map { prefix + $0.name }
            if names.allSatisfy({ file.tensors[$0] == nil }) { return nil }
            return try names.map { name in
                guard let t = file.tensors[name] else { throw fail("no tensor \(name)") }
                return try t.floats()
            }
        }
        guard let masks = try values("mask.") else { throw fail("no masks") }
        try optimizer.restore(masks: masks, momentum: try values("mask_momentum."))
        for layer in optimizer.layers {
            if let mean = file.tensors["running_mean." + layer.name] { try layer.runningMean.setPlainValues(try mean.floats()) }
            if let variance = file.tensors["running_var." + layer.name] { try layer.runningVar.setPlainValues(try variance.floats()) }
        }
        return iteration
    }
}
