import ArgumentParser
import Formats
import Foundation
import Support

/// `backdoor convert IN OUT.safetensors`: PyTorch checkpoints, trigger files and .npy arrays to
/// safetensors, read without executing anything from the input.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a PyTorch checkpoint or trigger file (or .npy / .safetensors) to safetensors.",
        discussion: """
            A training checkpoint with a "state_dict" entry is reduced to that state dict. Other \
            entries keep their dotted names (e.g. trigger_pattern, poison_target); Python numbers \
            become 0-d tensors and strings become metadata. Names are not mapped onto the model.
            """)

    @Argument(help: "Input file: torch.save output (.pt/.pth/.th), .npy or .safetensors.") var input: String
    @Argument(help: "Output .safetensors file (written atomically).") var output: String

    func validate() throws {
        guard output.hasSuffix(".safetensors") else {
            throw ValidationError("output must end in .safetensors, got \"\(output)\"")
        }
        guard URL(fileURLWithPath: input).standardized.path != URL(fileURLWithPath: output).standardized.path else {
            throw ValidationError("input and output are the same file: \(input)")
        }
    }

    func run() throws {
        let summary = try ConvertCommand.convert(input: input, output: output)
        print(summary)
    }

    /// Converts and returns the one-line summary that `run` prints.
    static func convert(input: String, output: String) throws -> String {
        let file = try TensorFile.read(path: input)
        let tensors = file.stateDict
        var metadata = file.metadata
        metadata["converted_from"] = URL(fileURLWithPath: input).lastPathComponent
        metadata["source_format"] = file.format.rawValue
        let byName = Dictionary(tensors.map { ($0.name, $0.tensor) }, uniquingKeysWith: { first, _ in first })
        try SafeTensors(tensors: byName, metadata: metadata).write(path: output)
        let elements = tensors.reduce(0) { $0 + $1.tensor.elementCount }
        return "wrote \(output): \(tensors.count) tensors, \(elements) values (from \(file.format.rawValue) file \(input))"
    }
}
