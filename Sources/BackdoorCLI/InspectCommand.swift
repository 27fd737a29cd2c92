import ArgumentParser
import Formats
import Foundation
import Support

/// `backdoor inspect FILE`: what a tensor file holds (names, dtypes, shapes, metadata), for
/// checking a checkpoint or trigger file before using it.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List the tensors (name, dtype, shape) and metadata of a safetensors, PyTorch or .npy file.")

    @Argument(help: "File to inspect.") var file: String
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        print(try InspectCommand.report(path: file, json: json))
    }

    /// The text `run` prints. Names and metadata are escaped for the terminal (JSON escapes its own).
    static func report(path: String, json: Bool) throws -> String {
        let contents = try TensorFile.list(path: path)
        let elements = contents.tensors.reduce(0) { $0 + $1.elementCount }
        let bytes = contents.tensors.reduce(0) { $0 + $1.byteCount }
        if json {
            let tensors: [[String: Any]] = contents.tensors.map {
                ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape]
            }
            return try JSONOutput.string([
                "file": path, "format": contents.format.rawValue, "tensors": tensors,
                "metadata": contents.metadata, "elements": elements, "bytes": bytes,
            ] as [String: Any])
        }
        let show = TerminalText.escaped
        var lines = ["\(show(path)): \(contents.format.rawValue), \(contents.tensors.count) tensors, \(elements) values, \(bytes) bytes"]
        let names = contents.tensors.map { show($0.name) }
        let nameWidth = min(60, names.map(\.count).max() ?? 0)
        for (name, tensor) in zip(names, contents.tensors) {
            let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
            lines.append("  " + name.padding(toLength: max(nameWidth, name.count), withPad: " ", startingAt: 0)
                         + "  " + tensor.dtype.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0) + "  " + shape)
        }
        if !contents.metadata.isEmpty {
            lines.append("metadata:")
            for key in contents.metadata.keys.sorted() {
                let value = show(contents.metadata[key]!)
                lines.append("  \(show(key)): \(value.count > 200 ? String(value.prefix(200)) + "..." : value)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
