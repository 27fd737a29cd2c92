import Datasets
import Formats
import Foundation
import XCTest

/// A tiny HTTP server on 127.0.0.1 (Python's http.server) serving one folder:
/// `/NAME` sends the file, `/cut/NAME` announces the full length but stops halfway.
final class LocalHTTPServer {
    let process = Process()
    let port: Int

    static let script = """
    import http.server, os, sys
    root = sys.argv[1]
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def do_GET(self):
            cut = self.path.startswith("/cut/")
            path = os.path.join(root, os.path.basename(self.path))
            if not os.path.isfile(path):
                self.send_error(404); return
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if cut else data)
            if cut:
                self.wfile.flush(); self.close_connection = True
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """

    init(serving folder: String, test: XCTestCase) throws {
        let scriptPath = folder + "/.server.py"
        try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", scriptPath, folder]
        process.standardOutput = output
        try process.run()
        let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw XCTSkip("could not start python3 http.server (printed \"\(line)\")")
        }
        self.port = port
        let process = self.process
        test.addTeardownBlock { process.terminate(); process.waitUntilExit() }
    }

    func url(_ path: String) -> URL { URL(string: "http://127.0.0.1:\(port)/\(path)")! }
}

final class FetchTests: XCTestCase {
    let archiveName = "cifar-10-binary-fixture.tar.gz"
    var archiveMD5: String { (Fixture.info["archive"] as! [String: Any])["md5"] as! String }

    /// Serves a copy of the fixture archive plus a truncated copy.
    func startServer() throws -> LocalHTTPServer {
        let served = try temporaryFolder(self)
        let archive = FileManager.default.contents(atPath: Fixture.path(archiveName))!
        try archive.write(to: URL(fileURLWithPath: served + "/" + archiveName))
        try archive.prefix(archive.count * 2 / 3).write(to: URL(fileURLWithPath: served + "/truncated.tar.gz"))
        return try LocalHTTPServer(serving: served, test: self)
    }

    func contents(_ folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    }

    func testFetchVerifiesExtractsAndRecords() throws {
        let server = try startServer()
        let dataDir = try temporaryFolder(self) + "/data"
        let outcome = try CIFAR10Fetch.fetch(into: dataDir, url: server.url(archiveName), md5: archiveMD5, quiet: true)
        XCTAssertFalse(outcome.alreadyPresent)
        XCTAssertEqual(outcome.archiveMD5, archiveMD5)
        XCTAssertEqual(contents(dataDir), ["cifar-10-batches-bin"])  // no archive, no staging left
        // Only the expected members: the readme in the archive stays behind.
        XCTAssertEqual(contents(outcome.folder), (CIFAR10.Layout.binary.expectedFiles + [FetchRecord.fileName]).sorted())
        let data = try CIFAR10.load(directory: dataDir, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertEqual(data.train.labels, Fixture.trainLabels)
        let fixture = try CIFAR10.load(directory: Fixture.root, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertEqual(data.train, fixture.train)
        XCTAssertEqual(data.test, fixture.test)

        // The record holds what was verified; this archive is not the official one.
        let record = try XCTUnwrap(FetchRecord.read(folder: outcome.folder))
        XCTAssertEqual(record.archiveMD5, archiveMD5)
        XCTAssertEqual(record.fileMD5["data_batch_1.bin"], (Fixture.info["file_md5"] as! [String: String])["data_batch_1.bin"])
        let report = try CIFAR10Report(dataDirectory: dataDir, recordsPerFile: Fixture.recordsPerFile)
        XCTAssertFalse(report.official)
        XCTAssertTrue(report.officialReason.contains("not the official"), report.officialReason)

        // A second fetch finds it and downloads nothing.
        XCTAssertTrue(try CIFAR10Fetch.fetch(into: dataDir, url: server.url("nothing-here"), quiet: true).alreadyPresent)
    }

    func testWrongChecksumLeavesNothing() throws {
        let server = try startServer()
        let dataDir = try temporaryFolder(self)
        assertThrows(["checksum mismatch", archiveMD5, "expected \(CIFAR10Checksums.binaryArchiveMD5)", "nothing was written"]) {
            _ = try CIFAR10Fetch.fetch(into: dataDir, url: server.url(archiveName), quiet: true)
        }
        XCTAssertEqual(contents(dataDir), [])
    }

    /// A complete download of a truncated archive passes its (own) checksum but fails to extract.
    func testTruncatedArchiveLeavesNothing() throws {
        let server = try startServer()
        let dataDir = try temporaryFolder(self)
        let truncatedMD5 = MD5.hex(FileManager.default.contents(atPath: Fixture.path(archiveName))!.prefix(92936 * 2 / 3))
        XCTAssertEqual(try MD5.hex(ofFile: Fixture.path(archiveName)), archiveMD5)
        assertThrows(["truncated"]) {
            _ = try CIFAR10Fetch.fetch(into: dataDir, url: server.url("truncated.tar.gz"), md5: truncatedMD5, quiet: true)
        }
        XCTAssertEqual(contents(dataDir), [])
    }

    func testInterruptedDownloadAndHTTPErrorsLeaveNothing() throws {
        let server = try startServer()
        let dataDir = try temporaryFolder(self)
        assertThrows([server.url("cut/" + archiveName).absoluteString]) {
            _ = try CIFAR10Fetch.fetch(into: dataDir, url: server.url("cut/" + archiveName), md5: archiveMD5, quiet: true)
        }
        XCTAssertEqual(contents(dataDir), [])
        assertThrows(["HTTP status 404"]) {
            _ = try CIFAR10Fetch.fetch(into: dataDir, url: server.url("absent.tar.gz"), md5: archiveMD5, quiet: true)
        }
        XCTAssertEqual(contents(dataDir), [])
    }

    /// data check's verdict for the binary layout rests on the record a verified fetch leaves.
    func testOfficialVerdictFollowsTheFetchRecord() throws {
        let dataDir = try temporaryFolder(self)
        let folder = dataDir + "/cifar-10-batches-bin"
        try FileManager.default.copyItem(atPath: Fixture.path("cifar-10-batches-bin"), toPath: folder)
        func report() throws -> CIFAR10Report { try CIFAR10Report(dataDirectory: dataDir, recordsPerFile: Fixture.recordsPerFile) }
        XCTAssertFalse(try report().official)
        XCTAssertTrue(try report().officialReason.contains("no record of a verified download"))

        let fileMD5 = try Dictionary(uniqueKeysWithValues: CIFAR10.Layout.binary.expectedFiles.map {
            ($0, try MD5.hex(ofFile: folder + "/" + $0))
        })
        try FetchRecord(url: "test", archiveMD5: CIFAR10Checksums.binaryArchiveMD5, fileMD5: fileMD5).write(folder: folder)
        XCTAssertTrue(try report().official)
        var bytes = [UInt8](FileManager.default.contents(atPath: folder + "/test_batch.bin")!)
        bytes[100] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: folder + "/test_batch.bin"))
        XCTAssertFalse(try report().official)
        XCTAssertTrue(try report().officialReason.contains("test_batch.bin changed"))
    }

    func testReportCountsAndJSON() throws {
        let report = try CIFAR10Report(dataDirectory: Fixture.root, recordsPerFile: Fixture.recordsPerFile)
        let json = report.json
        let train = json["train"] as! [String: Any]
        XCTAssertEqual(train["count"] as? Int, 25)
        var perClass = [Int](repeating: 0, count: 10)
        for label in Fixture.trainLabels { perClass[label] += 1 }
        XCTAssertEqual(train["per_class"] as? [Int], perClass)
        XCTAssertEqual(json["official"] as? Bool, false)
        XCTAssertEqual((json["files"] as! [[String: Any]]).first?["size"] as? Int, 5 * 3073)
        XCTAssertTrue(JSONSerialization.isValidJSONObject(json))
    }
}

final class TarGzipTests: XCTestCase {
    func testListsMembers() throws {
        let members = try TarGzip.list(path: Fixture.path("cifar-10-binary-fixture.tar.gz"))
        XCTAssertEqual(members.first, TarGzip.Member(name: "cifar-10-batches-bin", size: 0, kind: .directory))
        XCTAssertTrue(members.contains(TarGzip.Member(name: "cifar-10-batches-bin/test_batch.bin", size: 5 * 3073, kind: .file)))
        XCTAssertTrue(members.contains { $0.name == "cifar-10-batches-bin/readme.html" })
        XCTAssertEqual(members.count, 9)
    }

    func testLongPaxNames() throws {
        let name = Fixture.info["long_name"] as! String
        XCTAssertEqual(try TarGzip.list(path: Fixture.path("longname.tar.gz")).map(\.name), [name])
        let dir = try temporaryFolder(self)
        try TarGzip.extract(path: Fixture.path("longname.tar.gz"), members: [name], into: dir)
        XCTAssertEqual(try String(contentsOfFile: dir + "/" + name, encoding: .utf8), "long\n")
    }

    func testPathTraversalIsRefused() throws {
        for archive in ["traversal.tar.gz", "absolute.tar.gz"] {
            let dir = try temporaryFolder(self)
            assertThrows([archive, "outside the extraction folder"]) {
                try TarGzip.extract(path: Fixture.path(archive), members: ["cifar-10-batches-bin/batches.meta.txt"], into: dir + "/x")
            }
            assertThrows([archive, "escape.txt"]) { _ = try TarGzip.list(path: Fixture.path(archive)) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/escape.txt"))
        }
    }

    func testMissingMemberAndCorruptDataAreErrors() throws {
        let dir = try temporaryFolder(self)
        assertThrows(["lacks cifar-10-batches-bin/nope"]) {
            try TarGzip.extract(path: Fixture.path("cifar-10-binary-fixture.tar.gz"), members: ["cifar-10-batches-bin/nope"], into: dir)
        }
        var bytes = [UInt8](FileManager.default.contents(atPath: Fixture.path("cifar-10-binary-fixture.tar.gz"))!)
        bytes[bytes.count / 2] ^= 0xFF
        bytes[bytes.count / 2 + 1] ^= 0xFF
        let corrupt = dir + "/corrupt.tar.gz"
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        assertThrows([corrupt]) { _ = try TarGzip.list(path: corrupt) }
        try Data("not gzip at all".utf8).write(to: URL(fileURLWithPath: corrupt))
        assertThrows([corrupt, "corrupt gzip data"]) { _ = try TarGzip.list(path: corrupt) }
    }
}

final class FetchLeftoverTests: XCTestCase {
    /// Partial files of a killed fetch are cleared; those of a live process stay.
    func testLeftoversOfDeadProcessesAreRemoved() throws {
        let dataDir = try temporaryFolder(self)
        let dead = dataDir + "/.cifar-10-batches-bin.download-2147483000-1.tar.gz"
        let deadStaging = dataDir + "/.cifar-10-batches-bin.extract-2147483000-1"
        let live = dataDir + "/.cifar-10-batches-bin.download-\(getpid())-1.tar.gz"
        for path in [dead, live] { XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data([1]))) }
        try FileManager.default.createDirectory(atPath: deadStaging, withIntermediateDirectories: true)
        // The fetch fails (nothing listens on port 9) but clears first.
        assertThrows(["download failed"]) {
            _ = try CIFAR10Fetch.fetch(into: dataDir, url: URL(string: "http://127.0.0.1:9/x.tar.gz")!, quiet: true)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dataDir), [(live as NSString).lastPathComponent])
    }

    func testFailedFirstFetchLeavesNoDataDirectory() throws {
        let dataDir = try temporaryFolder(self) + "/new/data"
        assertThrows(["127.0.0.1:9"]) {
            _ = try CIFAR10Fetch.fetch(into: dataDir, url: URL(string: "http://127.0.0.1:9/x.tar.gz")!, quiet: true)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dataDir))
    }
}
