import Datasets
import Foundation
import Support
import XCTest
import TestSupport

final class LoaderTests: XCTestCase {
    func testBinaryFixturesLoadInOfficialOrder() throws {
        let data = try CIFAR10.load(directory: Fixture.root, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertEqual(data.layout, .binary)  // the binary layout wins when both are present
        XCTAssertEqual(data.train.count, 5 * Fixture.recordsPerFile)
        XCTAssertEqual(data.train.labels, Fixture.trainLabels)
        XCTAssertEqual(data.test.labels, Fixture.labels("test_batch"))
    }

    /// Planes R, G, B of a record become interleaved HWC pixels.
    func testPlanesBecomeHWC() throws {
        let raw = FileManager.default.contents(atPath: Fixture.path("cifar-10-batches-bin/data_batch_2.bin"))!
        let set = try CIFAR10.readBinaryBatch(path: Fixture.path("cifar-10-batches-bin/data_batch_2.bin"),
                                              expectedRecords: Fixture.recordsPerFile)
        let bytes = [UInt8](raw)
        for record in [0, Fixture.recordsPerFile - 1] {
            let base = record * CIFAR10.recordBytes
            XCTAssertEqual(set.labels[record], Int(bytes[base]))
            let image = Array(set.image(record))
            for (y, x) in [(0, 0), (0, 31), (17, 5), (31, 31)] {
                for c in 0..<3 {
                    XCTAssertEqual(image[(y * 32 + x) * 3 + c], bytes[base + 1 + c * 1024 + y * 32 + x],
                                   "record \(record) y \(y) x \(x) channel \(c)")
                }
            }
        }
    }

    func testTruncatedOversizedAndBadLabelFilesAreErrors() throws {
        let dir = try temporaryFolder(self)
        var bytes = [UInt8](FileManager.default.contents(atPath: Fixture.path("cifar-10-batches-bin/data_batch_1.bin"))!)
        let n = Fixture.recordsPerFile
        let path = dir + "/data_batch_1.bin"

        try Data(bytes.dropLast(100)).write(to: URL(fileURLWithPath: path))
        assertThrows([path, "truncated", "\(n * 3073 - 100) bytes", "expected \(n * 3073) bytes"]) {
            _ = try CIFAR10.readBinaryBatch(path: path, expectedRecords: n)
        }
        try Data(bytes + bytes[0..<3073]).write(to: URL(fileURLWithPath: path))
        assertThrows([path, "oversized", "\(n + 1) records", "expected \(n * 3073) bytes"]) {
            _ = try CIFAR10.readBinaryBatch(path: path, expectedRecords: n)
        }
        bytes[2 * 3073] = 12
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        assertThrows([path, "record 2", "label byte 12", "expected 0-9"]) {
            _ = try CIFAR10.readBinaryBatch(path: path, expectedRecords: n)
        }
        // The real size is the default.
        assertThrows([path, "expected 30730000 bytes"]) { _ = try CIFAR10.readBinaryBatch(path: path) }
    }

    func testMissingBatchFileIsNamed() throws {
        let dir = try temporaryFolder(self)
        try FileManager.default.createDirectory(atPath: dir + "/cifar-10-batches-bin", withIntermediateDirectories: true)
        assertThrows(["cifar-10-batches-bin/data_batch_1.bin", "missing"]) {
            _ = try CIFAR10.load(directory: dir, recordsPerFile: 5)
        }
    }

    /// The shared copy: counts, classes and the first labels of the official order.
    func testSharedDataCountsAndFirstLabels() throws {
        let data = try CIFAR10.load(directory: try Fixture.sharedData() + "/cifar10")
        XCTAssertEqual(data.train.count, 50_000)
        XCTAssertEqual(data.test.count, 10_000)
        XCTAssertEqual(CIFAR10Report.SetSummary(data.train).perClass, [Int](repeating: 5000, count: 10))
        XCTAssertEqual(CIFAR10Report.SetSummary(data.test).perClass, [Int](repeating: 1000, count: 10))
        XCTAssertEqual(Array(data.train.labels.prefix(8)), [6, 9, 9, 4, 1, 1, 2, 7])
        XCTAssertEqual(Array(data.test.labels.prefix(8)), [3, 8, 8, 0, 6, 6, 1, 6])
    }
}

final class DataDirectoryTests: XCTestCase {
    func testFlagThenEnvironmentThenDefault() {
        // Relative paths resolve against the given working directory, whatever it is.
        let cwd = FileManager.default.currentDirectoryPath
        let env = [DataDirectory.environmentVariable: "/env/data"]
        XCTAssertEqual(DataDirectory.resolve(flag: "mine", environment: env, currentDirectory: cwd),
                       DataDirectory(path: ((cwd + "/mine") as NSString).standardizingPath, source: .flag))
        XCTAssertEqual(DataDirectory.resolve(flag: nil, environment: env, currentDirectory: cwd),
                       DataDirectory(path: "/env/data", source: .environment))
        XCTAssertEqual(DataDirectory.resolve(flag: nil, environment: [:], currentDirectory: cwd),
                       DataDirectory(path: ((cwd + "/data") as NSString).standardizingPath, source: .defaultPath))
    }

    func testNotFoundSaysWhereAndHow() throws {
        let dir = try temporaryFolder(self)
        let directory = DataDirectory.resolve(flag: dir, environment: [:])
        assertThrows([dir, "--data-dir", "cifar-10-batches-bin/", "cifar-10-batches-py/", "backdoor data fetch",
                      DataDirectory.environmentVariable]) { _ = try directory.locate() }
        XCTAssertEqual(try DataDirectory.resolve(flag: Fixture.root, environment: [:]).locate().layout, .binary)
    }
}

final class ImageSetTests: XCTestCase {
    func testConcatenationAndSubset() {
        let a = randomImageSet(count: 3, seed: 1), b = randomImageSet(count: 2, seed: 2)
        let joined = ImageSet(concatenating: [a, b])
        XCTAssertEqual(joined.count, 5)
        XCTAssertEqual(joined.labels, a.labels + b.labels)
        XCTAssertEqual(joined.subset([0, 1, 2]), a)
        XCTAssertEqual(joined.subset([3, 4]), b)
        XCTAssertEqual(Array(joined.image(3)), Array(b.image(0)))
    }
}
