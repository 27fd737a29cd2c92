import Foundation
import XCTest
@testable import Formats

final class SafeTensorsTests: XCTestCase {
    func testRoundTripKeepsTensorsAndMetadata() throws {
        let directory = try FixturePaths.temporaryDirectory(self)
        let original = SafeTensors(
            tensors: [
                "conv.weight": HostTensor(floats: [1.5, -2, .pi, 0, 1e-30, -0.0], shape: [1, 2, 3]),
                "bn.num_batches_tracked": HostTensor(int64s: [12345678901], shape: []),
                "labels": HostTensor(int32s: [-1, 7], shape: [2]),
                "pixels": HostTensor(uint8s: [0, 255, 128], shape: [3]),
                "double": HostTensor(doubles: [1.0 / 3.0], shape: [1]),
                "mask": HostTensor(bools: [true, false], shape: [2]),
                "empty": HostTensor(floats: [], shape: [0, 4]),
            ],
            metadata: ["epoch": "12", "quote\"and\\slash": "line\nbreak"])
        let path = directory + "/model.safetensors"
        try original.write(path: path)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(headerLength % 8, 0, "header padded to 8 bytes")
        let read = try SafeTensors.read(path: path)
        XCTAssertEqual(read, original)
        XCTAssertEqual(try read.tensors["conv.weight"]!.floats(), [1.5, -2, .pi, 0, 1e-30, -0.0])
        XCTAssertEqual(try read.tensors["bn.num_batches_tracked"]!.int64s(), [12345678901])
    }

    func testReadsPythonSafetensorsBitExactly() throws {
        let path = FixturePaths.formats("python.safetensors")
        let file = try SafeTensors.read(path: path)
        XCTAssertEqual(file.metadata, ["format": "np"])
        XCTAssertEqual(file.names, ["bias", "scalar", "weight"])
        let weight = try XCTUnwrap(file.tensors["weight"])
        XCTAssertEqual(weight.shape, [2, 3])
        let expected: [Float] = [Float(1.0 / 3.0), -0.0, Float(Double.pi), Float(1e-40), -2.5, .greatestFiniteMagnitude]
        XCTAssertEqual(try weight.floats().map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertEqual(try file.tensors["bias"]!.floats().map(\.bitPattern), [Float(0.1), Float(-0.2)].map(\.bitPattern))
        XCTAssertEqual(file.tensors["scalar"]!.shape, [])
        XCTAssertEqual(try file.tensors["scalar"]!.floats(), [7.25])
        // Same dtype everywhere and one metadata key: the Swift writer reproduces the reference bytes.
        XCTAssertEqual(file.encoded(), try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))))
    }

    func testReadsPythonMixedDtypes() throws {
        let file = try SafeTensors.read(path: FixturePaths.formats("python_mixed.safetensors"))
        XCTAssertEqual(file.metadata, [:])
        XCTAssertEqual(try file.tensors["f64"]!.doubles().map(\.bitPattern), [1.0 / 3.0, -1e300].map(\.bitPattern))
        XCTAssertEqual(try file.tensors["i64"]!.int64s(), [-1, 1 << 40, 3, -(1 << 62)])
        XCTAssertEqual(file.tensors["i64"]!.shape, [2, 2])
        XCTAssertEqual(try file.tensors["i32"]!.int32s(), [-7, Int32.max])
        XCTAssertEqual(try file.tensors["u8"]!.uint8s(), [250, 251, 252, 253, 254, 255])
        XCTAssertEqual(file.tensors["u8"]!.shape, [2, 3])
        XCTAssertEqual(file.tensors["empty"]!.shape, [0, 3])
        XCTAssertEqual(file.tensors["empty"]!.data, [])
    }

    func testWrongDtypeAccessorNamesBothDtypes() throws {
        let tensor = HostTensor(int64s: [1], shape: [1])
        assertThrows(try tensor.floats(), mentioning: ["i64", "f32"])
    }

    /// Builds a file from a header text and a data size, for the corruption cases.
    private func file(header: String, dataBytes: Int, declaredLength: UInt64? = nil) -> [UInt8] {
        let headerBytes = Array(header.utf8)
        let length = declaredLength ?? UInt64(headerBytes.count)
        return (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) } + headerBytes
            + [UInt8](repeating: 1, count: dataBytes)
    }

    func testCorruptFilesGiveErrorsNamingFileAndProblem() {
        let path = "/somewhere/bad.safetensors"
        let cases: [([UInt8], [String])] = [
            ([1, 2, 3], ["shorter than the 8-byte header length"]),
            (file(header: "{}", dataBytes: 0, declaredLength: 1000), ["header length 1000", "beyond the end"]),
            (file(header: "{\"a\": [", dataBytes: 0), ["not valid JSON"]),
            (file(header: "[1,2]", dataBytes: 0), ["not a JSON object"]),
            (file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, dataBytes: 4),
             ["\"a\"", "[0, 8]", "out of range"]),
            (file(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, dataBytes: 8),
             ["\"a\"", "8 bytes", "[3]", "F32"]),
            (file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, dataBytes: 12),
             ["overlap", "\"a\"", "\"b\""]),
            (file(header: #"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,2]}}"#, dataBytes: 2),
             ["unsupported dtype Q7"]),
            (file(header: #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, dataBytes: 0),
             ["\"a\"", "shape"]),
            (file(header: #"{"__metadata__":{"k":3}}"#, dataBytes: 0), ["__metadata__", "\"k\""]),
        ]
        for (bytes, fragments) in cases {
            assertThrows(try SafeTensors.decode(bytes, path: path), mentioning: [path] + fragments)
        }
    }

    func testMissingFileIsNamed() {
        assertThrows(try SafeTensors.read(path: "/nonexistent/x.safetensors"), mentioning: ["/nonexistent/x.safetensors"])
    }

    /// Issue 12, case 6: `inspect` read the whole file (3 GB: 17.6 s, 6.3 GB RSS). The header
    /// reader lists a 64 GiB sparse file, which a whole read could not even hold.
    func testHeaderIsReadWithoutTheData() throws {
        let path = try FixturePaths.temporaryDirectory(self) + "/huge.safetensors"
        let shape = [16, 1024, 1024, 1024]
        let dataBytes = shape.reduce(4, *)
        var header = Array("{\"w\":{\"dtype\":\"F32\",\"shape\":[16,1024,1024,1024],\"data_offsets\":[0,\(dataBytes)]}}".utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        let prefix = (0..<8).map { UInt8(truncatingIfNeeded: header.count >> (8 * $0)) }
        try Data(prefix + header).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(truncate(path, off_t(8 + header.count + dataBytes)), 0)
        let listing = try SafeTensors.Header.read(path: path)
        XCTAssertEqual(listing.entries, [SafeTensors.Entry(name: "w", dtype: .f32, shape: shape, begin: 0, end: dataBytes)])
        XCTAssertEqual(listing.dataStart, 8 + header.count)
        let summary = try TensorFile.list(path: path)
        XCTAssertEqual(summary.tensors.map(\.byteCount), [dataBytes])
    }

    /// Case 6: bytes after the last tensor are damage (or a payload), refused with the count.
    func testTrailingBytesAreRefused() throws {
        let path = try FixturePaths.temporaryDirectory(self) + "/trailing.safetensors"
        let bytes = SafeTensors(tensors: ["x": HostTensor(floats: [1, 2], shape: [2])]).encoded()
        try Data(bytes + [0, 0, 0]).write(to: URL(fileURLWithPath: path))
        assertThrows(try SafeTensors.read(path: path), mentioning: [path, "3 trailing bytes after the last tensor"])
        assertThrows(try SafeTensors.Header.read(path: path), mentioning: [path, "3 trailing bytes"])
        XCTAssertEqual(try SafeTensors.decode(bytes, path: "ok").tensors.count, 1)
    }

    /// Issue 12, case 9: a directory or FIFO given as the input file is named as such (not
    /// Foundation's "error 256"), and a FIFO is not opened (the read would block forever).
    func testInputThatIsNotARegularFileIsNamed() throws {
        let directory = try FixturePaths.temporaryDirectory(self)
        assertThrows(try SafeTensors.read(path: directory), mentioning: [directory, "is a directory; expected the safetensors file"])
        let fifo = directory + "/pipe"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        assertThrows(try TensorFile.read(path: fifo), mentioning: [fifo, "is a FIFO (named pipe)"])
        assertThrows(try TensorFile.list(path: fifo), mentioning: [fifo, "is a FIFO (named pipe)"])
        let missing = directory + "/absent.safetensors"
        assertThrows(try SafeTensors.read(path: missing), mentioning: [missing, "No such file or directory (ENOENT)"])
    }
}

