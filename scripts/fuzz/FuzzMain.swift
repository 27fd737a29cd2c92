// libFuzzer entry point for every parser (built by scripts/fuzz/run.sh, not by SwiftPM).
// BACKDOOR_FUZZ_TARGET picks the parser: a Formats.FuzzTarget name, or mask / split for the
// text files of Defenses and Datasets.
import Datasets
import Formats
import Foundation
import MaskFileFuzz
import Support

enum TextTarget: String {
    case mask, split
}

/// Resolved once: libFuzzer calls the entry point millions of times.
let chosen: Either = {
    let name = ProcessInfo.processInfo.environment["BACKDOOR_FUZZ_TARGET"] ?? ""
    if let target = FuzzTarget(rawValue: name) { return .format(target) }
    if let target = TextTarget(rawValue: name) { return .text(target) }
    let all = FuzzTarget.allCases.map(\.rawValue) + ["mask", "split"]
    FileHandle.standardError.write(Data("BACKDOOR_FUZZ_TARGET=\(name): expected one of \(all.joined(separator: ", "))\n".utf8))
    exit(2)
}()

enum Either {
    case format(FuzzTarget)
    case text(TextTarget)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        switch chosen {
        case .format(let target):
            try target.run(bytes)
        case .text(.mask):
            _ = try MaskFile.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz")
        case .text(.split):
            // A small count keeps the permutation check's table cheap per input.
            _ = try Permutation.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz", count: 16)
        }
    } catch is FileError {
        // A refusal: the expected outcome for most inputs.
    } catch {
        // Parsers throw only FileError (the format targets catch their own kinds): anything
        // else is a finding too.
        FileHandle.standardError.write(Data("unexpected error type: \(error)\n".utf8))
        abort()
    }
    return 0
}
