import Foundation
import Support

/// The defender/attacker split of the reference code: a permutation of the training indices;
/// its first `Int(valFrac * count)` entries are the defender's clean set, the rest (in
/// permutation order) the attacker's training set.
public struct DataSplit: Equatable {
    public let defender: [Int]
    public let attacker: [Int]

    public init(permutation: [Int], valFrac: Double) {
        precondition(valFrac >= 0 && valFrac <= 1, "valFrac must lie in [0, 1]")
        let cut = Int(valFrac * Double(permutation.count))  // truncation, as Python's int()
        defender = Array(permutation[..<cut])
        attacker = Array(permutation[cut...])
    }
}

public enum Permutation {
    /// The file name of a run's own permutation, written next to its outputs.
    public static let defaultFileName = "split_permutation.txt"

    /// Reads a permutation file: one integer per line, a permutation of 0..<count.
    public static func read(path: String, count: Int = CIFAR10.trainCount) throws -> [Int] {
        try parse(try InputFile.text(path, what: "split (permutation) file"), path: path, count: count)
    }

    public static func parse(_ text: String, path: String, count: Int) throws -> [Int] {
        // Split the bytes: in Swift "\r\n" is one Character and would not split at "\n".
        var lines = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }  // final newline
        var seenAt = [Int](repeating: 0, count: count)  // 1-based line of first occurrence
        var result = [Int]()
        result.reserveCapacity(count)
        for (i, rawLine) in lines.enumerated() {
            let line = String(decoding: rawLine, as: UTF8.self).trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\r")))
            guard let value = Int(line) else {
                throw FileError(path, "line \(i + 1): \"\(line.prefix(40))\" is not an integer; expected one index in 0..<\(count) per line")
            }
            guard value >= 0 && value < count else {
                throw FileError(path, "line \(i + 1): \(value) is outside 0..<\(count); expected a permutation of the \(count) training indices")
            }
            guard seenAt[value] == 0 else {
                throw FileError(path, "line \(i + 1): \(value) repeats line \(seenAt[value]); expected a permutation of 0..<\(count)")
            }
            seenAt[value] = i + 1
            result.append(value)
        }
        guard result.count == count else {
            throw FileError(path, "line \(result.count + 1): file ends after \(result.count) indices; expected \(count) (a permutation of 0..<\(count))")
        }
        return result
    }

    /// A seeded permutation of 0..<count (Fisher-Yates on SeededGenerator, stable across Swift versions).
    public static func seeded(count: Int, seed: UInt64) -> [Int] {
        var generator = SeededGenerator(seed: seed, stream: "split permutation")
        var values = Array(0..<count)
        shuffle(&values, using: &generator)
        return values
    }

    public static func write(_ permutation: [Int], to path: String) throws {
        try AtomicFile.write(permutation.map(String.init).joined(separator: "\n") + "\n", to: path)
    }

    /// The `--split-file` value that asks for a seeded permutation instead of the reference's.
    public static let seededFlag = "seeded"

    /// The ANP reference's permutation of the 50,000 CIFAR-10 training indices
    /// (csdongxian/ANP_backdoor's `data/cifar_shuffle.txt`), shipped with the tool.
    public static var referenceFile: String {
        (Bundle.module.resourceURL ?? Bundle.module.bundleURL).appendingPathComponent("ReferenceData/cifar_shuffle.txt").path
    }

    /// The split a run uses: the file given by `--split-file`; without one the reference's
    /// permutation (shipped); with `seeded` a permutation from `seed`, written to
    /// `outputDirectory/split_permutation.txt` so the run can be repeated.
    /// Returns the permutation and the file it came from or was written to.
    public static func resolve(splitFile: String?, outputDirectory: String, seed: UInt64,
                               count: Int = CIFAR10.trainCount) throws -> (permutation: [Int], path: String) {
        if let splitFile, splitFile != seededFlag {
            return (try read(path: splitFile, count: count), splitFile)
        }
        if splitFile == nil {
            guard count == CIFAR10.trainCount else {
                throw FileError(referenceFile, "the reference split permutes \(CIFAR10.trainCount) images, not \(count): pass a split file or \(seededFlag)")
            }
            return (try read(path: referenceFile, count: count), referenceFile)
        }
        let permutation = seeded(count: count, seed: seed)
        let path = (outputDirectory as NSString).appendingPathComponent(defaultFileName)
        try write(permutation, to: path)
        return (permutation, path)
    }
}

/// Uniform integer in 0..<bound without modulo bias (Lemire), spelled out so orders repeat
/// exactly whatever the standard library does.
@inline(__always)
func uniform(_ bound: Int, using generator: inout SeededGenerator) -> Int {
    let b = UInt64(bound)
    var product = generator.next().multipliedFullWidth(by: b)
    if product.low < b {
        let threshold = (0 &- b) % b
        while product.low < threshold { product = generator.next().multipliedFullWidth(by: b) }
    }
    return Int(product.high)
}

/// In-place Fisher-Yates shuffle.
func shuffle(_ values: inout [Int], using generator: inout SeededGenerator) {
    var i = values.count - 1
    while i > 0 {
        let j = uniform(i + 1, using: &generator)
        values.swapAt(i, j)
        i -= 1
    }
}
