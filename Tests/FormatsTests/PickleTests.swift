import Foundation
import XCTest
@testable import Formats

final class PickleTests: XCTestCase {
    private func load(_ name: String) throws -> [UInt8] {
        try [UInt8](Data(contentsOf: URL(fileURLWithPath: FixturePaths.formats(name))))
    }

    func testReadsPython2StyleCifarBatch() throws {
        let root = try Pickle.read(path: FixturePaths.formats("cifar_py2_style.pkl"), allowedGlobals: Pickle.numpyGlobals)
        XCTAssertEqual(root["batch_label"]?.stringValue, "testing batch 1 of 1")
        XCTAssertEqual(root["labels"]?.elements?.compactMap(\.intValue), [6, 9, 0])
        XCTAssertEqual(root["filenames"]?.elements?.compactMap(\.stringValue), ["img0.png", "img1.png", "img2.png"])
        let data = try NumpyPickle.array(try XCTUnwrap(root["data"]))
        XCTAssertEqual(data.dtype, .u8)
        XCTAssertEqual(data.shape, [3, 3072])
        XCTAssertEqual(data.data, (0..<(3 * 3072)).map { UInt8($0 * 7 % 256) })
    }

    func testReadsNumpyPicklesOfProtocols2To5() throws {
        for protocolVersion in [2, 4, 5] {
            let name = "numpy_p\(protocolVersion).pkl"
            let root = try Pickle.parse(try load(name), allowedGlobals: Pickle.numpyGlobals)
            func array(_ key: String) throws -> HostTensor { try NumpyPickle.array(try XCTUnwrap(root[key], "\(name) \(key)")) }

            let u8 = try array("u8")
            XCTAssertEqual(u8.shape, [2, 3, 4], name)
            XCTAssertEqual(try u8.uint8s(), (0..<24).map { UInt8($0 * 11 % 256) }, name)
            let f32 = try array("f32")
            XCTAssertEqual(f32.shape, [3, 2], name)
            XCTAssertEqual(try f32.floats().map(\.bitPattern), (0..<6).map { Float($0) / 3 - 1 }.map(\.bitPattern), name)
            XCTAssertEqual(try array("f64").doubles(), [.pi, -1e-300], name)
            XCTAssertEqual(try array("i64").int64s(), [-(1 << 40), 5, 1 << 62], name)
            let i32 = try array("i32")
            XCTAssertEqual(i32.shape, [2, 1], name)
            XCTAssertEqual(try i32.int32s(), [-7, .max], name)
            XCTAssertEqual(try array("b1").bools(), [true, false, true], name)
            let target = try array("target")
            XCTAssertEqual(target.shape, [], name)
            XCTAssertEqual(try target.int64s(), [3], name)
            XCTAssertEqual(try array("alpha").floats(), [Float(0.2)], name)
            XCTAssertEqual(try array("empty").shape, [0, 2], name)

            let plain = try XCTUnwrap(root["plain"]?.elements, name)
            XCTAssertEqual(plain.count, 9, name)
            XCTAssertEqual(plain[0], .int(1), name)
            XCTAssertEqual(plain[1], .int(-2), name)
            XCTAssertEqual(plain[2], .bigInt([0, 0, 0, 0, 0, 0, 0, 0, 0x40]), name)
            XCTAssertEqual(plain[3], .float(1.5), name)
            XCTAssertEqual(plain[4], .string("text"), name)
            XCTAssertEqual(plain[5].bytesValue, Array("raw".utf8), name)
            XCTAssertEqual(plain[6], .none, name)
            XCTAssertEqual(plain[7], .bool(true), name)
            XCTAssertEqual(plain[8], .tuple([.int(1), .int(2)]), name)
        }
    }

    func testRefusesGlobalsOutsideTheAllowList() throws {
        let marker = "/tmp/backdoorlab-pickle-pwned"
        try? FileManager.default.removeItem(atPath: marker)
        assertThrows(try Pickle.read(path: FixturePaths.formats("evil_os_system.pkl"), allowedGlobals: Pickle.numpyGlobals),
                     mentioning: ["evil_os_system.pkl", "refusing global posix.system"])
        assertThrows(try Pickle.parse(try load("evil_eval.pkl"), allowedGlobals: Pickle.numpyGlobals),
                     mentioning: ["refusing global builtins.eval"])
        // An empty allow-list refuses even numpy.
        assertThrows(try Pickle.parse(try load("numpy_p4.pkl"), allowedGlobals: []), mentioning: ["refusing global numpy"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
    }

    func testUnknownOpcodeIsNamedWithItsOffset() {
        assertThrows(try Pickle.parse([0x80, 0x04, 0x8F, 0x2E], allowedGlobals: []),
                     mentioning: ["unsupported opcode 0x8F (EMPTY_SET)", "at byte 2"])
        assertThrows(try Pickle.parse([0x80, 0x02, 0xFF], allowedGlobals: []), mentioning: ["unsupported opcode 0xFF"])
    }

    func testEveryTruncationIsReportedAsSuch() throws {
        let bytes = try load("numpy_p4.pkl")
        for length in 0..<bytes.count {
            assertThrows(try Pickle.parse(Array(bytes[..<length]), allowedGlobals: Pickle.numpyGlobals), mentioning: ["truncated"])
        }
    }

    func testMemoReferencesSeeLaterMutations() throws {
        // EMPTY_LIST, BINPUT 0, MARK, 1, 2, APPENDS, BINGET 0, TUPLE2, STOP: the list is filled after memoizing.
        let value = try Pickle.parse([0x80, 0x02, 0x5D, 0x71, 0x00, 0x28, 0x4B, 0x01, 0x4B, 0x02, 0x65, 0x68, 0x00, 0x86, 0x2E],
                                     allowedGlobals: [])
        XCTAssertEqual(value, .tuple([.list([.int(1), .int(2)]), .list([.int(1), .int(2)])]))
    }

    func testSelfReferenceAndDeepNestingAreErrors() {
        // EMPTY_LIST, BINPUT 0, BINGET 0, APPEND: a list containing itself.
        assertThrows(try Pickle.parse([0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E], allowedGlobals: []),
                     mentioning: ["self-referencing"])
        let deep = [UInt8](repeating: 0x5D, count: 5000) + [UInt8](repeating: 0x61, count: 4999) + [0x2E]
        assertThrows(try Pickle.parse(deep, allowedGlobals: []), mentioning: ["nests deeper"])
    }

    func testMalformedStacksAreErrors() {
        assertThrows(try Pickle.parse([0x61, 0x2E], allowedGlobals: []), mentioning: ["APPEND", "stack is empty"])
        assertThrows(try Pickle.parse([0x65, 0x2E], allowedGlobals: []), mentioning: ["APPENDS without a MARK"])
        assertThrows(try Pickle.parse([0x68, 0x07, 0x2E], allowedGlobals: []), mentioning: ["memo key 7"])
        assertThrows(try Pickle.parse([0x4E, 0x4E, 0x2E], allowedGlobals: []), mentioning: ["2 values on the stack"])
        assertThrows(try Pickle.parse([0x80, 0x09], allowedGlobals: []), mentioning: ["protocol 9"])
        // A mark hides what is below it: REDUCE after MARK has no operands.
        assertThrows(try Pickle.parse([0x4E, 0x4E, 0x28, 0x52, 0x2E], allowedGlobals: []), mentioning: ["REDUCE", "stack is empty"])
    }

    func testNonArrayNodeIsRejectedByNumpyHelper() {
        assertThrows(try NumpyPickle.array(.list([])), mentioning: ["not a pickled numpy array"])
    }
}
