import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Formats
import Support

/// Downloads an official CIFAR-10 archive, verifies its MD5, and extracts only the expected
/// members into a temporary folder that is renamed into place: after a failure the data
/// directory holds no partial data set (and no partial archive).
public enum CIFAR10Fetch {
    public static let officialBinaryURL = URL(string: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz")!
    public static let officialPythonURL = URL(string: "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")!

    public static func officialURL(_ layout: CIFAR10.Layout) -> URL {
        layout == .binary ? officialBinaryURL : officialPythonURL
    }

    public struct Outcome {
        /// The layout folder now in place.
        public let folder: String
        public let archiveMD5: String
        /// True when the folder was already there and nothing was downloaded.
        public let alreadyPresent: Bool
    }

    /// Fetches `layout` into `dataDirectory` from `url` (default: the official archive),
    /// requiring the archive's MD5 to be `md5` (default: the official one).
    public static func fetch(into dataDirectory: String, layout: CIFAR10.Layout = .binary, url: URL? = nil,
                             md5 expectedMD5: String? = nil, quiet: Bool = false) throws -> Outcome {
        let url = url ?? officialURL(layout)
        let expectedMD5 = (expectedMD5 ?? CIFAR10Checksums.officialArchiveMD5(layout)).lowercased()
        let fileManager = FileManager.default
        let final = (dataDirectory as NSString).appendingPathComponent(layout.folderName)
        if fileManager.fileExists(atPath: final) {
            let record = FetchRecord.read(folder: final)
            return Outcome(folder: final, archiveMD5: record?.archiveMD5 ?? "", alreadyPresent: true)
        }
        let createdDirectory = !fileManager.fileExists(atPath: dataDirectory)
        try fileManager.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        removeLeftovers(in: dataDirectory, layout: layout)
        let tag = "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let archive = (dataDirectory as NSString).appendingPathComponent(".\(layout.folderName).download-\(tag).tar.gz")
        let staging = (dataDirectory as NSString).appendingPathComponent(".\(layout.folderName).extract-\(tag)")
        var succeeded = false
        defer {
            try? fileManager.removeItem(atPath: archive)
            try? fileManager.removeItem(atPath: staging)
            // A failed first fetch leaves no empty data directory behind either.
            if !succeeded, createdDirectory, (try? fileManager.contentsOfDirectory(atPath: dataDirectory))?.isEmpty == true {
                try? fileManager.removeItem(atPath: dataDirectory)
            }
        }

        let md5 = try download(url, to: archive, quiet: quiet)
        guard md5 == expectedMD5 else {
            throw FileError(url.absoluteString, "checksum mismatch: the download's MD5 is \(md5), expected \(expectedMD5) "
                + "(a corrupt or different file); nothing was written to \(dataDirectory)")
        }

        let members = layout.expectedFiles.map { layout.folderName + "/" + $0 }
        let bar = ProgressBar(total: 1000, label: "extract ", quiet: quiet)
        try TarGzip.extract(path: archive, members: members, into: staging) { done, total in
            bar.update(to: total > 0 ? done * 1000 / total : 0)
        }
        bar.finish()
        let extracted = (staging as NSString).appendingPathComponent(layout.folderName)
        var fileMD5 = [String: String]()
        for name in layout.expectedFiles {
            fileMD5[name] = try MD5.hex(ofFile: (extracted as NSString).appendingPathComponent(name))
        }
        let record = FetchRecord(url: url.absoluteString, archiveMD5: md5, fileMD5: fileMD5)
        try record.write(folder: extracted)
        guard rename(extracted, final) == 0 else {
            throw FileError(final, "could not move the extracted data set into place: \(String(cString: strerror(errno)))")
        }
        succeeded = true
        return Outcome(folder: final, archiveMD5: md5, alreadyPresent: false)
    }

    /// Removes the partial download and extraction of a fetch that was killed (its process is
    /// gone, so no `defer` ran); those of a fetch still running are left alone.
    static func removeLeftovers(in dataDirectory: String, layout: CIFAR10.Layout) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dataDirectory)) ?? []
        for name in names {
            for marker in [".\(layout.folderName).download-", ".\(layout.folderName).extract-"] where name.hasPrefix(marker) {
                guard let pid = Int32(name.dropFirst(marker.count).prefix { $0 != "-" }) else { continue }
                if kill(pid, 0) != 0 && errno == ESRCH {
                    try? FileManager.default.removeItem(atPath: (dataDirectory as NSString).appendingPathComponent(name))
                }
            }
        }
    }

    /// Downloads `url` to `path` with a progress bar; returns the MD5 of what arrived.
    /// Throws on HTTP errors, network errors and bodies shorter than announced.
    public static func download(_ url: URL, to path: String, quiet: Bool = false) throws -> String {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw FileError(path, "cannot create the download file")
        }
        defer { try? handle.close() }
        let receiver = Receiver(url: url, handle: handle, quiet: quiet)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 60
        let session = URLSession(configuration: configuration, delegate: receiver, delegateQueue: nil)
        session.dataTask(with: url).resume()
        receiver.done.wait()
        session.finishTasksAndInvalidate()
        if let error = receiver.failure { throw error }
        return receiver.md5.finalize()
    }

    /// Streams the body into the file and the MD5 as it arrives. Callbacks come one at a time
    /// on the session's serial queue and the caller reads the state only after `done`.
    final class Receiver: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let url: URL
        let handle: FileHandle
        let quiet: Bool
        var md5 = MD5()
        var received = 0
        var expected: Int64 = -1
        var bar: ProgressBar?
        var failure: Error?
        let done = DispatchSemaphore(value: 0)

        init(url: URL, handle: FileHandle, quiet: Bool) {
            self.url = url
            self.handle = handle
            self.quiet = quiet
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            if let http = response as? HTTPURLResponse, !(200..<300).contains(http.statusCode) {
                failure = FileError(url.absoluteString, "HTTP status \(http.statusCode); expected 200 with the archive")
                completionHandler(.cancel)
                return
            }
            expected = response.expectedContentLength
            bar = ProgressBar(total: expected > 0 ? Int(expected) : 1, label: "download", quiet: quiet)
            completionHandler(.allow)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            guard failure == nil else { return }
            handle.write(data)
            md5.update(data)
            received += data.count
            bar?.update(to: received)
            bar?.suffix = String(format: "%.1f MB", Double(received) / 1e6)
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            bar?.finish()
            if failure == nil, let error {
                failure = FileError(url.absoluteString, "download failed after \(received) bytes: \(error.localizedDescription)")
            }
            if failure == nil, expected >= 0, Int64(received) != expected {
                failure = FileError(url.absoluteString, "download interrupted: received \(received) of \(expected) bytes")
            }
            done.signal()
        }
    }
}

/// What `data fetch` saw: the archive's MD5 and each extracted file's MD5, kept next to the
/// files so `data check` can tell the official files for the binary layout (whose per-file
/// checksums are not published).
public struct FetchRecord: Codable, Equatable {
    public static let fileName = "fetch-record.json"
    public let url: String
    public let archiveMD5: String
    public let fileMD5: [String: String]

    public init(url: String, archiveMD5: String, fileMD5: [String: String]) {
        self.url = url
        self.archiveMD5 = archiveMD5
        self.fileMD5 = fileMD5
    }

    public static func read(folder: String) -> FetchRecord? {
        let path = (folder as NSString).appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(FetchRecord.self, from: data)
    }

    public func write(folder: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(try encoder.encode(self), to: (folder as NSString).appendingPathComponent(Self.fileName))
    }
}
