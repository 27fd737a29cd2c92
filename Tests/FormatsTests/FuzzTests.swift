import Foundation
import Support
import XCTest
@testable import Formats
import TestSupport

/// Mutated copies of the fixtures (safetensors, npy, png, pickle) must only ever give thrown
/// errors or a valid reading, never a crash. `BACKDOOR_FUZZ_ITERATIONS` scales the run.
final class FuzzTests: XCTestCase {
    static var iterations: Int {
        ProcessInfo.processInfo.environment["BACKDOOR_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 400
    }

    /// 1-4 random edits: overwrite, bit flip, insertion, or deletion of a short run.
    static func mutate(_ original: [UInt8], _ generator: inout SplitMix) -> [UInt8] {
        var bytes = original
        for _ in 0..<(1 + Int(generator.next() % 4)) {
            if bytes.isEmpty { bytes = [0]; continue }
            let position = Int(generator.next() % UInt64(bytes.count))
            switch generator.next() % 4 {
            case 0: bytes[position] = UInt8(truncatingIfNeeded: generator.next())
            case 1: bytes[position] ^= 1 << (generator.next() % 8)
            case 2: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: position)
            default: bytes.removeSubrange(position..<min(bytes.count, position + 1 + Int(generator.next() % 16)))
            }
        }
        return bytes
    }

    private func fuzz(_ fixture: String, seed: UInt64, _ decode: ([UInt8]) throws -> Void) throws {
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: FixturePaths.formats(fixture))))
        var generator = SplitMix(seed: seed)
        var refused = 0
        for _ in 0..<FuzzTests.iterations {
            do {
                try decode(FuzzTests.mutate(original, &generator))
            } catch is FileError {
                refused += 1
            } catch is PickleError {
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 0, fixture)
    }

    func testSafeTensors() throws {
        try fuzz("python_mixed.safetensors", seed: 1) { _ = try SafeTensors.decode($0, path: "fuzz") }
    }

    func testNPY() throws {
        try fuzz("npy/images_u8.npy", seed: 2) { _ = try NPY.decode($0, path: "fuzz") }
    }

    func testPNG() throws {
        try fuzz("png/palette.png", seed: 3) { _ = try PNG.decode($0, path: "fuzz", alpha: .drop) }
        try fuzz("png/rgba.png", seed: 4) { _ = try PNG.decode($0, path: "fuzz") }
    }

    func testPickleAndNumpy() throws {
        try fuzz("cifar_py2_style.pkl", seed: 5) { bytes in
            let root = try Pickle.parse(bytes, allowedGlobals: Pickle.numpyGlobals)
            if let data = root["data"] {
                do { _ = try NumpyPickle.array(data) } catch is NumpyPickle.Unsupported {}
            }
        }
    }

    /// Every saved input of the coverage-guided fuzzer (Tests/Fuzz/corpus and Tests/Fuzz/crashes,
    /// see scripts/fuzz/run.sh) goes through its target again: a crash here is a regression.
    func testSavedFuzzInputsReplay() throws {
        for target in FuzzTarget.allCases {
            let inputs = try FuzzInputs.inputs(target: target.rawValue)
            XCTAssertFalse(inputs.isEmpty, "\(target) has saved inputs")
            for input in inputs { try target.run(input) }
        }
    }

    /// Issue 12, case 1: 50,000 nested lists pass the depth check's error path; freeing the
    /// parse tree recursively then overflowed the stack (SIGSEGV), in a bare pickle and in a
    /// zip checkpoint's data.pkl alike.
    func testDeeplyNestedPickleIsAnErrorNotAStackOverflow() throws {
        let pickle = FuzzInputs.root() + "/crashes/pickle/deep-nesting-issue12.pkl"
        assertThrows(try Pickle.read(path: pickle, allowedGlobals: []), mentioning: [pickle, "nests deeper than 500 levels"])
        let zip = FuzzInputs.root() + "/crashes/zip/deep-nesting-data-pkl-issue12.pt"
        assertThrows(try TorchCheckpoint.read(path: zip), mentioning: [zip, "nests deeper than 500 levels"])
        assertThrows(try TensorFile.read(path: zip), mentioning: [zip, "nests deeper than 500 levels"])
    }

    /// Found by the fuzzer: 576 bytes whose memo references expand to millions of values; the
    /// bound is low enough that the refusal is quick (it took 3.4 s and 660 MB at 20,000,000).
    func testMemoExpansionIsRefusedEarly() throws {
        let zip = FuzzInputs.root() + "/crashes/zip/memo-expansion-timeout.pt"
        assertThrows(try TorchCheckpoint.read(path: zip), mentioning: [zip, "expands to more than 2000000 values"])
    }
}

