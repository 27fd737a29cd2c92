import ArgumentParser
import Backend
import Datasets
import Foundation
import OneDNNBackend

/// What a backend computes for: training keeps oneDNN's direct convolutions (Winograd's scratch
/// memory would take a width-64, batch-128 step past 1 GiB); everything else may use Winograd.
enum Workload {
    case training, inference

    var defaultAlgorithm: ConvolutionAlgorithm { self == .training ? .direct : .auto }
}

/// Compute options shared by every command that runs the network, and the one place the CLI
/// chooses its backend.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Compute threads (default: the cores available; at most 4 per core).")
    var threads: Int?

    @Option(help: "oneDNN's convolution algorithm: direct, or auto (Winograd where oneDNN has it: AVX-512 CPUs; about 20% faster training for about 200 MiB more memory at width 64). Default: direct for training, auto for evaluation, attacks and ANP.")
    var convAlgorithm: ConvolutionAlgorithm?

    func validate() throws {
        if let threads, !(1...OneDNN.maximumThreads).contains(threads) {
            throw ValidationError("--threads must be 1 to \(OneDNN.maximumThreads) (4 per core; this machine has \(OneDNN.availableCores) cores), got \(threads)")
        }
    }

    func backend(for workload: Workload) throws -> Backend {
        try OneDNN(.init(threads: threads, convolutionAlgorithm: convAlgorithm ?? workload.defaultAlgorithm))
    }
}

extension ConvolutionAlgorithm: ExpressibleByArgument {}

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
