import ArgumentParser
import Datasets
import DNNL
import Foundation

/// Compute options shared by every command that runs the network.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Compute threads (default: the cores available).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func apply() {
        Runtime.setThreads(threads ?? Runtime.availableCores)
    }
}

extension Convolution.Algorithm: ExpressibleByArgument {}

/// The compute setup in words, for run headers.
enum DNNLThreads {
    static func describe() -> String { "\(Runtime.threads) thread(s), oneDNN \(Runtime.version)" }
}

/// Where CIFAR-10 and the split permutation come from.
struct DataOptions: ParsableArguments {
    @Option(help: "Folder holding cifar-10-batches-bin/ or cifar-10-batches-py/ (else $BACKDOOR_DATA_DIR, else ./data).")
    var dataDir: String?

    @Option(help: "Permutation of the 50,000 training indices, one per line (without it: a seeded one, written to the output folder).")
    var splitFile: String?

    func load() throws -> CIFAR10.DataSet {
        try DataDirectory.load(flag: dataDir)
    }
}

extension ParsableCommand {
    /// Prints an error line and exits non-zero, for failures found after parsing.
    static func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        return ExitCode.failure
    }
}

func parseMilestones(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let values = parts.compactMap { Int($0) }
    guard values.count == parts.count, values.allSatisfy({ $0 >= 0 }) else {
        throw ValidationError("--milestones must be comma-separated epoch numbers like 30,40, got \"\(text)\"")
    }
    return values
}
