import ArgumentParser
import Datasets
import DNNL
import Foundation

/// Compute options shared by every command that runs the network.
struct ComputeOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Compute threads (default: the cores available).")
    var threads: Int?

    func validate() throws {
        try FlagLimits.threads(threads)
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

/// Bounds of the numeric flags that several commands share. Beyond them a run does not fail
/// cleanly: 100,000 threads crash libgomp, 1,000 run for minutes on 2 cores; width 5000 asks
/// for 360 GB after seconds of work.
enum FlagLimits {
    /// Oversubscription beyond 4 threads a core only slows oneDNN down (64 on 2 cores: 90x slower).
    static var maximumThreads: Int { 4 * ProcessInfo.processInfo.activeProcessorCount }
    /// 16 times the real model's parameters (width 64); wider does not fit a CPU machine's memory.
    static let maximumWidth = 256

    static func threads(_ value: Int?, flag: String = "--threads") throws {
        guard let value else { return }
        guard (1...maximumThreads).contains(value) else {
            throw ValidationError("\(flag) \(value) is out of range: expected 1...\(maximumThreads) "
                + "(at most 4 per core; this machine has \(ProcessInfo.processInfo.activeProcessorCount))")
        }
    }

    static func width(_ value: Int?, flag: String = "--width") throws {
        guard let value else { return }
        guard (1...maximumWidth).contains(value) else {
            throw ValidationError("\(flag) \(value) is out of range: expected 1...\(maximumWidth) (64 is the real ResNet-18)")
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
