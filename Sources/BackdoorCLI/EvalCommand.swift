import ArgumentParser
import Attacks
import Backend
import Datasets
import Foundation
import Models
import NN
import Support
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Clean loss and accuracy of a checkpoint on the CIFAR-10 test set, and ASR and robust accuracy with --trigger-info.")

    @OptionGroup var compute: ComputeOptions
    @OptionGroup var network: ModelOption
    @Option(help: "Model checkpoint: our safetensors file or a PyTorch state_dict file.") var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match its network: missing, extra or misshapen ones are skipped with a warning.")
    var nonStrict = false
    @Option(help: "Trigger information saved by `backdoor train` (adds poison loss and ASR).") var triggerInfo: String?
    @Option(help: "Folder holding cifar-10-batches-bin/ or cifar-10-batches-py/.") var dataDir: String?
    @Option(help: "Evaluate the first N test images only.") var limit: Int?
    @Option(help: "Batch size.") var batchSize = 256
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1, got \(limit)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
    }

    func run() throws {
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, expected: network.model, on: compute.backend(for: .inference))
        var test = try DataDirectory.load(flag: dataDir).test
        if let limit, limit < test.count { test = test.subset(Array(0..<limit)) }
        let start = Date()
        let clean = try Evaluation.evaluate(model, on: test, batchSize: batchSize)
        var result: [String: Any] = ["clean_loss": clean.loss, "clean_acc": clean.accuracy, "images": clean.images,
                                     "checkpoint": checkpoint, "architecture": model.architecture,
                                     "width": model.width as Any]
        if let triggerInfo {
            let info = try TriggerInfo.read(path: triggerInfo, backend: model.backend)
            let poisonSet = try Poisoning.testSet(test, trigger: info.trigger, target: info.target)
            let poison = try Evaluation.evaluate(model, on: poisonSet, batchSize: batchSize)
            let robust = try Evaluation.evaluate(model, on: try Poisoning.triggeredTestSet(test, trigger: info.trigger, target: info.target),
                                                 batchSize: batchSize)
            result["poison_loss"] = poison.loss
            result["asr"] = poison.accuracy
            result["robust_acc"] = robust.accuracy
            result["poison_images"] = poison.images
            result["poison_type"] = info.poisonType
        }
        result["seconds"] = Date().timeIntervalSince(start)
        if json {
            print(try JSONOutput.string(result))
        } else {
            print(String(format: "clean loss %.4f  clean acc %.4f  (%d images)", clean.loss, clean.accuracy, clean.images))
            if let asr = result["asr"] as? Double, let loss = result["poison_loss"] as? Double, let robust = result["robust_acc"] as? Double {
                print(String(format: "poison loss %.4f  ASR %.4f  robust acc %.4f", loss, asr, robust))
            }
        }
    }
}

/// Opening model files given on the command line.
enum ModelFiles {
    /// `expected` is the user's `--model`: a checkpoint of another architecture is an error naming both.
    static func loadModel(_ path: String, strict: Bool = true, expected: Architecture? = nil, on backend: Backend) throws
        -> Model {
        guard FileManager.default.fileExists(atPath: path) else {
            throw FileError(path, "no such checkpoint file")
        }
        let (model, warnings) = try Checkpoint.load(path, strict: strict, expected: expected, on: backend)
        for warning in warnings { FileHandle.standardError.write(Data("warning: \(path): \(warning)\n".utf8)) }
        return model
    }
}
