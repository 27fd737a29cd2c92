import Datasets
import Foundation
import XCTest

final class PythonLayoutTests: XCTestCase {
    /// The pickled batches (as the official archive has them) give the same pixels and labels
    /// as the binary files made from the same arrays.
    func testPythonFixturesEqualTheBinaryLayout() throws {
        let n = Fixture.recordsPerFile
        for (python, binary) in zip(CIFAR10.Layout.python.batchFiles, CIFAR10.Layout.binary.batchFiles) {
            let fromPickle = try CIFAR10.readPythonBatch(path: Fixture.path("cifar-10-batches-py/" + python), expectedRecords: n)
            let fromBinary = try CIFAR10.readBinaryBatch(path: Fixture.path("cifar-10-batches-bin/" + binary), expectedRecords: n)
            XCTAssertEqual(fromPickle, fromBinary, python)
        }
    }

    /// A data directory holding only the python layout loads through it.
    func testLoadsAPythonOnlyDirectory() throws {
        let dir = try temporaryFolder(self)
        try FileManager.default.copyItem(atPath: Fixture.path("cifar-10-batches-py"), toPath: dir + "/cifar-10-batches-py")
        let data = try CIFAR10.load(directory: dir, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertEqual(data.layout, .python)
        XCTAssertEqual(data.train.labels, Fixture.trainLabels)
        let binary = try CIFAR10.load(directory: Fixture.root, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertEqual(data.train, binary.train)
        XCTAssertEqual(data.test, binary.test)
        // Fixtures are not the published files.
        let report = try CIFAR10Report(dataDirectory: dir, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertFalse(report.official)
        XCTAssertTrue(report.officialReason.contains("data_batch_1"), report.officialReason)
    }

    func testUnexpectedPicklesAreErrors() {
        let n = Fixture.recordsPerFile
        func check(_ name: String, _ fragments: [String], records: Int = n) {
            let path = Fixture.path("bad-py/" + name)
            assertThrows([path] + fragments) { _ = try CIFAR10.readPythonBatch(path: path, expectedRecords: records) }
        }
        check("wrong_shape", ["u8 array of shape [5, 3000]", "expected", "[5, 3072]"])
        check("label_out_of_range", ["labels[2]", "10", "expected an integer 0-9"])
        check("missing_labels", ["fine_labels", "expected a dict with 'data'"])
        check("foreign_global", ["os", "system"])
        check("label_out_of_range", ["shape [5, 3072]", "expected", "[10000, 3072]"], records: 10_000)
        // A binary file is no pickle.
        let binary = Fixture.path("cifar-10-batches-bin/data_batch_1.bin")
        assertThrows([binary]) { _ = try CIFAR10.readPythonBatch(path: binary, expectedRecords: n) }
    }
}
