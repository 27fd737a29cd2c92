import Foundation
import Support

/// Typed access to one decoded JSON object, with errors that name the file, the line (for JSON
/// lines) and the key, so a malformed log points at the exact place to look.
struct JSONFields {
    let object: [String: Any]
    let path: String
    let line: Int?

    init(_ object: [String: Any], path: String, line: Int? = nil) {
        self.object = object
        self.path = path
        self.line = line
    }

    private var place: String { line.map { "line \($0): " } ?? "" }

    func error(_ message: String) -> FileError {
        FileError(path, place + message)
    }

    /// A finite number, or nil when the key is absent or null; an error for any other type.
    func optionalNumber(_ key: String) throws -> Double? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let number = JSONFields.number(value) else {
            throw error("\"\(key)\" should be a number, found \(JSONFields.describe(value))")
        }
        guard number.isFinite else { throw error("\"\(key)\" is not finite (\(number))") }
        return number
    }

    func number(_ key: String) throws -> Double {
        guard let value = try optionalNumber(key) else { throw error("missing number \"\(key)\"") }
        return value
    }

    func integer(_ key: String) throws -> Int {
        let value = try number(key)
        guard value == value.rounded(), abs(value) < 1e15 else {
            throw error("\"\(key)\" should be a whole number, found \(value)")
        }
        return Int(value)
    }

    func optionalObject(_ key: String) throws -> [String: Any]? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let dictionary = value as? [String: Any] else {
            throw error("\"\(key)\" should be an object, found \(JSONFields.describe(value))")
        }
        return dictionary
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let string = value as? String else {
            throw error("\"\(key)\" should be a string, found \(JSONFields.describe(value))")
        }
        return string
    }

    /// JSON numbers arrive as NSNumber (JSON booleans do too; they are accepted as 0/1, since
    /// telling them apart is not portable between Foundation implementations).
    static func number(_ value: Any) -> Double? {
        (value as? NSNumber)?.doubleValue
    }

    static func describe(_ value: Any) -> String {
        switch value {
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        default: return JSONFields.number(value) == nil ? "\(type(of: value))" : "a number"
        }
    }
}

/// File reading shared by the parsers: a clear error for a missing or unreadable file.
enum RunFileReader {
    static func text(_ path: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else { throw FileError(path, "does not exist") }
        // Names a folder or FIFO in the way (a FIFO would block the read forever).
        let data = try InputFile.map(path, what: "run file")
        guard let text = String(data: data, encoding: .utf8) else {
            throw FileError(path, "is not UTF-8 text")
        }
        return text
    }

    /// The top-level JSON object of a whole-file JSON document.
    static func jsonObject(_ path: String) throws -> JSONFields {
        let text = try text(path)
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        } catch {
            throw FileError(path, "is not valid JSON (\(error.localizedDescription))")
        }
        guard let object = value as? [String: Any] else {
            throw FileError(path, "should hold a JSON object, found \(JSONFields.describe(value))")
        }
        return JSONFields(object, path: path)
    }

    /// One JSON object per non-blank line, with its 1-based line number.
    static func jsonLines(_ path: String) throws -> [JSONFields] {
        var records: [JSONFields] = []
        for (index, line) in try lines(path).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let value: Any
            do {
                value = try JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: [.fragmentsAllowed])
            } catch {
                throw FileError(path, "line \(index + 1): not valid JSON: \(trimmed.prefix(60))")
            }
            guard let object = value as? [String: Any] else {
                throw FileError(path, "line \(index + 1): should be a JSON object, found \(JSONFields.describe(value))")
            }
            records.append(JSONFields(object, path: path, line: index + 1))
        }
        return records
    }

    /// Lines without their terminators (a trailing newline gives no extra empty line).
    static func lines(_ path: String) throws -> [String] {
        var lines = try text(path).components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        return lines.map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
    }
}
