import Foundation

/// Appends one JSON object per line to a log file (machine-readable twin of a human log).
public final class JSONLinesWriter {
    private let handle: FileHandle
    public let path: String

    public init(path: String, truncate: Bool) throws {
        self.path = path
        handle = try AppendFile.open(path, truncate: truncate)
    }

    public func append(_ object: [String: Any]) throws {
        var data = try JSONSerialization.data(withJSONObject: JSONOutput.finite(object), options: [.sortedKeys])
        data.append(0x0A)
        do {
            try handle.write(contentsOf: data)
        } catch {
            throw FileError(path, "cannot append to the log: \(SystemError.describe(error))")
        }
    }

    deinit { try? handle.close() }
}

public enum JSONOutput {
    /// Pretty, key-sorted JSON text of a dictionary, for `--json` outputs and config files.
    public static func string(_ object: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: finite(object), options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data, as: UTF8.self)
    }

    /// JSON has no NaN or infinity (JSONSerialization refuses them with error 3840 and the
    /// result is lost): they become null, and a top-level object gains `"nan": true` and
    /// `"nan_fields"`, the dotted paths of the values replaced.
    public static func finite(_ object: Any) -> Any {
        var replaced: [String] = []
        let cleaned = finite(object, path: "", replaced: &replaced)
        guard !replaced.isEmpty, var top = cleaned as? [String: Any] else { return cleaned }
        top["nan"] = true
        top["nan_fields"] = replaced.sorted()
        return top
    }

    private static func finite(_ value: Any, path: String, replaced: inout [String]) -> Any {
        func child(_ key: String) -> String { path.isEmpty ? key : path + "." + key }
        switch value {
        case let number as Double where !number.isFinite:
            replaced.append(path)
            return NSNull()
        case let number as Float where !number.isFinite:
            replaced.append(path)
            return NSNull()
        case let number as NSNumber where !number.doubleValue.isFinite:
            replaced.append(path)
            return NSNull()
        case let map as [String: Any]:
            return map.reduce(into: [String: Any]()) { $0[$1.key] = finite($1.value, path: child($1.key), replaced: &replaced) }
        case let list as [Any]:
            return list.enumerated().map { finite($1, path: child(String($0)), replaced: &replaced) }
        default:
            return value
        }
    }
}

/// Appends human-readable lines to a log file (the text twin of `JSONLinesWriter`).
public final class TextLogWriter {
    private let handle: FileHandle

    public init(path: String, truncate: Bool) throws {
        handle = try AppendFile.open(path, truncate: truncate)
    }

    /// A line that cannot be written (disk full) is dropped: the caller's next checkpoint write
    /// fails with the reason, and a log line is not worth a crash.
    public func append(_ line: String) { try? handle.write(contentsOf: Data((line + "\n").utf8)) }

    deinit { try? handle.close() }
}
