import Foundation
import XCTest
@testable import Formats

final class NPYTests: XCTestCase {
    private func path(_ name: String) -> String { FixturePaths.formats("npy/\(name)") }

    private func fileBytes(_ name: String) throws -> [UInt8] {
        try [UInt8](Data(contentsOf: URL(fileURLWithPath: path(name))))
    }

    func testReadsNumpyFilesAndWritesThemByteForByte() throws {
        let expected: [(String, HostTensor)] = [
            ("images_u8.npy", HostTensor(uint8s: (0..<96).map { UInt8($0 * 13 % 256) }, shape: [2, 4, 4, 3])),
            ("labels_i8.npy", HostTensor(int64s: [3, 0, -1, 1 << 40], shape: [4])),
            ("values_i4.npy", HostTensor(int32s: [-7, .max], shape: [1, 2])),
            ("values_f4.npy", HostTensor(floats: (0..<6).map { Float($0) / 7 }, shape: [2, 3])),
            ("values_f8.npy", HostTensor(doubles: [.pi, -1e-300, 0], shape: [3])),
            ("mask_b1.npy", HostTensor(bools: [true, false, false, true], shape: [4])),
            ("scalar_f8.npy", HostTensor(doubles: [2.5], shape: [])),
            ("empty_f4.npy", HostTensor(floats: [], shape: [0, 5])),
        ]
        for (name, tensor) in expected {
            XCTAssertEqual(try NPY.read(path: path(name)), tensor, name)
            XCTAssertEqual(NPY.encode(tensor), try fileBytes(name), name)
        }
        XCTAssertEqual(try NPY.read(path: path("version2_i8.npy")), HostTensor(int64s: [0, 1, 2, 3, 4], shape: [5]))
    }

    func testAtomicWriteRoundTrip() throws {
        let directory = try FixturePaths.temporaryDirectory(self)
        let tensor = HostTensor(uint8s: (0..<(5 * 32 * 32 * 3)).map { UInt8(truncatingIfNeeded: $0 &* 31) }, shape: [5, 32, 32, 3])
        try NPY.write(tensor, path: directory + "/sub/data.npy")
        XCTAssertEqual(try NPY.read(path: directory + "/sub/data.npy", expecting: .u8, shape: [nil, 32, 32, 3]), tensor)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory + "/sub"), ["data.npy"])
    }

    func testLargeHeaderSwitchesToVersion2() throws {
        // A 40000-dimensional shape does not fit a 16-bit header length.
        let tensor = HostTensor(uint8s: [], shape: [Int](repeating: 1, count: 39_999) + [0])
        let bytes = NPY.encode(tensor)
        XCTAssertEqual(bytes[6], 2)
        XCTAssertEqual(try NPY.decode(bytes, path: "big.npy"), tensor)
    }

    func testWrongDtypeOrShapeNamesFileFoundAndExpected() {
        assertThrows(try NPY.read(path: path("labels_i8.npy"), expecting: .u8, shape: [nil, 32, 32, 3]),
                     mentioning: ["labels_i8.npy", "expected a |u1 array of shape (N, 32, 32, 3)", "found <i8 of shape (4,)"])
        assertThrows(try NPY.read(path: path("images_u8.npy"), expecting: .u8, shape: [nil, 32, 32, 3]),
                     mentioning: ["images_u8.npy", "found |u1 of shape (2, 4, 4, 3)"])
    }

    func testUnsupportedFilesAreRefusedClearly() {
        let cases: [(String, [String])] = [
            ("bad_fortran.npy", ["fortran_order is True"]),
            ("bad_bigendian.npy", ["big-endian", ">f4"]),
            ("bad_structured.npy", ["structured dtypes"]),
            ("bad_truncated.npy", ["(4,)", "needs 32 data bytes", "has 29"]),
        ]
        for (name, fragments) in cases {
            assertThrows(try NPY.read(path: path(name)), mentioning: [name] + fragments)
        }
        assertThrows(try NPY.decode(Array("hello world, not numpy".utf8), path: "x.npy"), mentioning: ["x.npy", "not an npy file"])
        assertThrows(try NPY.read(path: "/nonexistent/label.npy"), mentioning: ["/nonexistent/label.npy"])
    }

    func testEveryTruncationIsAnError() throws {
        let bytes = try fileBytes("values_f4.npy")
        for length in 0..<bytes.count {
            XCTAssertThrowsError(try NPY.decode(Array(bytes[..<length]), path: "cut.npy"))
        }
    }
}
