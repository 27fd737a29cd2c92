import ArgumentParser
import Backend
import Foundation
import Models
import NN
import OneDNNBackend
import Support

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Images per second of a --model (default ResNet-18) training step and of evaluation, and peak resident memory.")

    @OptionGroup var compute: ComputeOptions
    @OptionGroup var network: ModelOption
    @Option(parsing: .unconditional, help: "Base width of the ResNet family (default 64; not for VGG or MobileNetV2).") var width: Int?
    @Option(parsing: .unconditional, help: "Batch size.") var batchSize = 128
    @Option(parsing: .unconditional, help: "Timed training steps (after one warm-up step).") var steps = 3
    @Option(parsing: .unconditional, help: "Timed evaluation batches (after one warm-up batch).") var evalBatches = 3
    @Flag(help: "Also time an input-gradient step (PGD).") var extended = false
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        try FlagLimits.width(width, model: network.architecture)
        // oneDNN's answer to a zero batch is a bare invalid_arguments.
        try FlagLimits.atLeastOne(batchSize, flag: "--batch-size")
        try FlagLimits.atLeastOne(steps, flag: "--steps")
        try FlagLimits.atLeastOne(evalBatches, flag: "--eval-batches")
    }

    /// The training step runs on the training backend, evaluation and the input-gradient step
    /// on the inference one (as train, and eval / anp / clean-label, do); --conv-algorithm sets both.
    func run() throws {
        var generator = SeededGenerator(seed: 5)
        let images = (0..<(batchSize * 3 * 32 * 32)).map { _ in generator.nextGaussian() }
        let labels = (0..<batchSize).map { _ in Int32(generator.next() % 10) }
        let width = network.width(self.width)
        var result: [String: Any] = ["model": network.architecture.flagName, "width": width, "batch_size": batchSize, "onednn": OneDNN.version, "isa": OneDNN.isa]
        do {  // the training model and its backend are released before evaluation
            let trainingBackend = try compute.backend(for: .training)
            result["threads"] = trainingBackend.threads
            let model = try network.architecture.model(width: width, seed: 1, on: trainingBackend)
            result["parameter_count"] = model.parameterCount
            let sgd = SGD()
            result["train_images_per_s"] = try Self.rate({
                let logits = try model.forward(images: images, count: batchSize, mode: .training)
                let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10)
                try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: false)
                try sgd.step(model.parameters)
            }, steps: steps, batch: batchSize)
            result["peak_rss_mib"] = Self.peakResidentMiB()
            result["convolutions_training"] = try Self.implementations(trainingBackend)
        }
        // The training model's buffers go back to the system, so that the evaluation phase is
        // measured on its own (the allocator otherwise keeps them, see the oneDNN backend's Tensor).
        OneDNN.returnFreedMemory()
        let inferenceBackend = try compute.backend(for: .inference)
        let model = try network.architecture.model(width: width, seed: 1, on: inferenceBackend)
        result["eval_images_per_s"] = try Self.rate({
            _ = try model.forward(images: images, count: batchSize, mode: .evaluation)
        }, steps: evalBatches, batch: batchSize)
        if extended {
            result["input_gradient_images_per_s"] = try Self.rate({
                _ = try model.lossAndInputGradient(images: images, labels: labels)
            }, steps: steps, batch: batchSize)
        }
        result["peak_rss_mib_all"] = Self.peakResidentMiB()
        result["convolutions_inference"] = try Self.implementations(inferenceBackend)
        if json {
            print(try JSONOutput.string(result))
        } else {
            for key in result.keys.sorted() { print("\(key): \(result[key]!)") }
        }
    }

    /// Images per second: median over `steps` timed runs after one warm-up run.
    static func rate(_ body: () throws -> Void, steps: Int, batch: Int) throws -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<max(steps, 1) {
            let start = Date()
            try body()
            times.append(Date().timeIntervalSince(start))
        }
        times.sort()
        return Double(batch) / times[times.count / 2]
    }

    /// Which convolution implementations ran: "pass: implementation" -> number of layer shapes.
    static func implementations(_ backend: Backend) throws -> [String: Int] {
        try (backend as? OneDNN)?.convolutionImplementations() ?? [:]
    }

    /// VmHWM of this process from /proc (Linux).
    static func peakResidentMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? -1
            return kb / 1024
        }
        return -1
    }
}
