import Foundation

/// Appends one JSON object per line to a log file (machine-readable twin of a human log).
public final class JSONLinesWriter {
    private let handle: FileHandle
    public let path: String

    public init(path: String, truncate: Bool) throws {
        self.path = path
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if truncate || !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: nil)
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw FileError(path, "cannot open for appending")
        }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    public func append(_ object: [String: Any]) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        data.append(0x0A)
        handle.write(data)
    }

    deinit { try? handle.close() }
}

public enum JSONOutput {
    /// Pretty, key-sorted JSON text of a dictionary, for `--json` outputs and config files.
    public static func string(_ object: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data, as: UTF8.self)
    }
}

/// Appends human-readable lines to a log file (the text twin of `JSONLinesWriter`).
public final class TextLogWriter {
    private let handle: FileHandle

    public init(path: String, truncate: Bool) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if truncate || !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw FileError(path, "cannot create the log file") }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw FileError(path, "cannot open the log file for appending") }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    public func append(_ line: String) { handle.write(Data((line + "\n").utf8)) }

    deinit { try? handle.close() }
}
