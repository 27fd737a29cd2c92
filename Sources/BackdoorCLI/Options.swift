import ArgumentParser
import Backend
import Datasets
import Foundation
import Models
import OneDNNBackend

/// What a backend computes for. Training on AVX-512 CPUs keeps oneDNN's direct convolutions
/// (oneDNN's Winograd scratch would take a width-64, batch-128 step past 1 GiB); everything else
/// uses `auto`, the fastest per shape and pass as timed once on this machine.
enum Workload {
    case training, inference

    var defaultAlgorithm: ConvolutionAlgorithm { self == .training && OneDNN.hasAVX512 ? .direct : .auto }
}

/// Compute options shared by every command that runs the network, and the one place the CLI
/// chooses its backend.
struct ComputeOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Compute threads (default: the cores available; at most 4 per core).")
    var threads: Int?

    @Option(help: "Convolution algorithm: direct (oneDNN's direct kernels), auto (per layer shape and pass the fastest of oneDNN's direct kernel, oneDNN's own Winograd where it has one (AVX-512 CPUs; about 200 MiB more training memory at width 64) and BackdoorLab's Winograd F(4x4,3x3) (3x3 stride-1 layers; 1.5-3x faster than direct on AVX2-only CPUs), timed once per machine and kept in $BACKDOOR_CONV_CHOICES, default ~/.cache/backdoorlab/convolution-choices.json, so that reruns compute alike), or winograd (BackdoorLab's wherever it applies). Default: auto, but direct for training on AVX-512 CPUs.")
    var convAlgorithm: ConvolutionAlgorithm?

    func validate() throws {
        try FlagLimits.threads(threads)
    }

    func backend(for workload: Workload) throws -> Backend {
        try OneDNN(.init(threads: threads, convolutionAlgorithm: convAlgorithm ?? workload.defaultAlgorithm))
    }
}

extension ConvolutionAlgorithm: ExpressibleByArgument {}

extension Architecture: ExpressibleByArgument {
    public init?(argument: String) { self.init(flagName: argument) }
    public static var allValueStrings: [String] { allCases.map(\.flagName) }
    public var defaultValueDescription: String { flagName }
}

/// `--model`: the network a command builds, or the one a checkpoint it opens must hold.
struct ModelOption: ParsableArguments {
    @Option(help: "Network: resnet18 | preact-resnet18 | vgg16-bn | vgg19-bn | mobilenetv2 (default resnet18 where one is built; a checkpoint of another network is refused, and without the flag any is opened).")
    var model: Architecture?

    /// What a command that builds a model builds.
    var architecture: Architecture { model ?? .resnet18 }

    /// The width to build at: `--width` (the ResNet family only, checked by `FlagLimits.width`),
    /// else `resNetDefault` for the ResNet family and the reference width for the others.
    func width(_ flag: Int?, resNetDefault: Int = 64) -> Int {
        architecture.takesWidthFlag ? flag ?? resNetDefault : architecture.referenceWidth
    }
}

/// Where CIFAR-10 and the split permutation come from.
struct DataOptions: ParsableArguments {
    @Option(help: "Folder holding cifar-10-batches-bin/ or cifar-10-batches-py/ (else $BACKDOOR_DATA_DIR, else ./data).")
    var dataDir: String?

    @Option(help: "Permutation of the 50,000 training indices, one per line (default: the ANP reference's cifar_shuffle.txt, shipped; `seeded`: one from --seed, written to the output folder).")
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

/// Bounds of the numeric flags that several commands share. Beyond them a run does not fail
/// cleanly: 100,000 threads crash libgomp, 1,000 run for minutes on 2 cores; width 5000 asks
/// for 360 GB after seconds of work.
enum FlagLimits {
    /// The backend's own bounds (see `OneDNN.maximumThreads`, `ResNet18.maximumWidth`).
    static var maximumThreads: Int { OneDNN.maximumThreads }
    static var maximumWidth: Int { ResNet18.maximumWidth }

    static func threads(_ value: Int?, flag: String = "--threads") throws {
        guard let value else { return }
        guard (1...maximumThreads).contains(value) else {
            throw ValidationError("\(flag) \(value) is out of range: expected 1...\(maximumThreads) "
                + "(at most 4 per core; this machine has \(OneDNN.availableCores))")
        }
    }

    static func width(_ value: Int?, flag: String = "--width", model: Architecture = .resnet18) throws {
        guard let value else { return }
        guard model.takesWidthFlag else {
            throw ValidationError("\(flag) applies to the ResNet family (resnet18, preact-resnet18) only; "
                + "--model \(model.flagName) is built at its reference width")
        }
        guard (1...maximumWidth).contains(value) else {
            throw ValidationError("\(flag) \(value) is out of range: expected 1...\(maximumWidth) (64 is the real model)")
        }
    }

    static func atLeastOne(_ value: Int?, flag: String) throws {
        if let value, value < 1 { throw ValidationError("\(flag) \(value) is out of range: expected at least 1") }
    }

    /// `--train-limit` within the attacker split, which is what it limits (a larger value was
    /// silently the whole split).
    static func trainLimit(_ value: Int?, valFrac: Double) throws {
        guard let value else { return }
        let available = CIFAR10.trainCount - Int(valFrac * Double(CIFAR10.trainCount))
        guard (1...available).contains(value) else {
            throw ValidationError("--train-limit \(value) is out of range: expected 1...\(available) (the attacker split: "
                + "\(CIFAR10.trainCount) training images less the --val-frac \(valFrac) held by the defender)")
        }
    }

    static func testLimit(_ value: Int?, flag: String = "--test-limit") throws {
        guard let value else { return }
        guard (1...CIFAR10.testCount).contains(value) else {
            throw ValidationError("\(flag) \(value) is out of range: expected 1...\(CIFAR10.testCount) (the CIFAR-10 test set)")
        }
    }

    static func fraction(_ value: Double?, flag: String) throws {
        guard let value else { return }
        guard value.isFinite, (0...1).contains(value) else {
            throw ValidationError("\(flag) \(value) is out of range: expected a number in [0, 1]")
        }
    }
}

/// `--seed` as text, so a negative or too large value names the range (the default parser
/// only says the value is invalid).
func parseSeed(_ text: String) throws -> UInt64 {
    guard let value = UInt64(text) else {
        throw ValidationError("expected an integer in 0...\(UInt64.max), got \(text)")
    }
    return value
}
