import Datasets
import Foundation
import Support
import XCTest
import TestSupport

final class SplitTests: XCTestCase {
    func testReferencePermutationSplits() throws {
        let permutation = try Permutation.read(path: try Fixture.sharedData() + "/anp/cifar_shuffle.txt")
        XCTAssertEqual(Array(permutation.prefix(3)), [42114, 3905, 13755])
        let training = DataSplit(permutation: permutation, valFrac: 0.1)
        XCTAssertEqual(training.defender.count, 5000)
        XCTAssertEqual(training.attacker.count, 45000)
        XCTAssertEqual(training.defender + training.attacker, permutation)
        XCTAssertEqual(DataSplit(permutation: permutation, valFrac: 0.01).defender.count, 500)
    }

    func testSplitTruncatesLikePython() {
        let split = DataSplit(permutation: Array(0..<7), valFrac: 0.5)  // int(3.5) == 3
        XCTAssertEqual(split.defender, [0, 1, 2])
        XCTAssertEqual(split.attacker, [3, 4, 5, 6])
    }

    func testNonPermutationsNameTheFirstBadLine() {
        func check(_ text: String, _ fragments: [String]) {
            assertThrows(["split.txt"] + fragments) { _ = try Permutation.parse(text, path: "split.txt", count: 4) }
        }
        check("0\n1\n1\n3\n", ["line 3", "1 repeats line 2"])
        check("0\n1\n4\n3\n", ["line 3", "4 is outside 0..<4"])
        check("0\n-1\n2\n3\n", ["line 2", "-1 is outside"])
        check("0\nx1\n2\n3\n", ["line 2", "\"x1\" is not an integer"])
        check("0\n1\n2\n", ["line 4", "ends after 3 indices", "expected 4"])
        check("0\n1\n\n2\n3\n", ["line 3", "is not an integer"])
        XCTAssertEqual(try Permutation.parse("3\r\n1\r\n0\r\n2\r\n", path: "split.txt", count: 4), [3, 1, 0, 2])
    }

    func testSeededPermutationIsWrittenAndRepeatable() throws {
        let dir = try temporaryFolder(self)
        let (permutation, path) = try Permutation.resolve(splitFile: Permutation.seededFlag, outputDirectory: dir, seed: 7, count: 1000)
        XCTAssertEqual(path, dir + "/" + Permutation.defaultFileName)
        XCTAssertEqual(Set(permutation), Set(0..<1000))
        XCTAssertNotEqual(permutation, Array(0..<1000))
        XCTAssertEqual(try Permutation.read(path: path, count: 1000), permutation)
        XCTAssertEqual(Permutation.seeded(count: 1000, seed: 7), permutation)
        XCTAssertNotEqual(Permutation.seeded(count: 1000, seed: 8), permutation)
        // A given split file is used as is.
        let (again, givenPath) = try Permutation.resolve(splitFile: path, outputDirectory: dir + "/other", seed: 99, count: 1000)
        XCTAssertEqual(again, permutation)
        XCTAssertEqual(givenPath, path)
    }

    /// Without a split file: the ANP reference's permutation, shipped with the tool, equal to the
    /// shared copy of the reference's file.
    func testTheDefaultSplitIsTheShippedReferencePermutation() throws {
        let dir = try temporaryFolder(self)
        let (permutation, path) = try Permutation.resolve(splitFile: nil, outputDirectory: dir, seed: 7)
        XCTAssertEqual(path, Permutation.referenceFile)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/" + Permutation.defaultFileName), "nothing written")
        XCTAssertEqual(Set(permutation), Set(0..<50_000))
        if let shared = try SharedData.directory() {
            XCTAssertEqual(permutation, try Permutation.read(path: shared + "/anp/cifar_shuffle.txt"))
        }
        XCTAssertThrowsError(try Permutation.resolve(splitFile: nil, outputDirectory: dir, seed: 7, count: 1000)) { error in
            XCTAssertTrue("\(error)".contains("seeded"), "\(error)")
        }
    }

    /// The fuzzer's saved split-file inputs (Tests/Fuzz) parse or are refused, never crash.
    func testSavedFuzzInputsReplay() throws {
        let inputs = try FuzzInputs.inputs(target: "split")
        for input in inputs { _ = try? Permutation.parse(String(decoding: input, as: UTF8.self), path: "fuzz", count: 16) }
        XCTAssertGreaterThan(inputs.count, 0)
    }
}

