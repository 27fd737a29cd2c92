import Foundation
import Support

/// numpy's `.npy` files (versions 1.0, 2.0 and 3.0 read; 1.0/2.0 written exactly as `np.save`
/// writes them), C order only: the exchange format of poisoned data sets (data.npy, label.npy).
public enum NPY {
    /// Reads an `.npy` file; problems are `FileError`s naming the file.
    public static func read(path: String) throws -> HostTensor {
        try decode(try InputFile.bytes(path, what: "npy file"), path: path)
    }

    /// Reads an `.npy` file and checks its dtype and shape (nil dimensions match any size), so a
    /// wrong file is reported as "expected ..., found ...".
    public static func read(path: String, expecting dtype: DType, shape: [Int?]) throws -> HostTensor {
        let tensor = try read(path: path)
        let shapeMatches = tensor.shape.count == shape.count
            && zip(tensor.shape, shape).allSatisfy { expected in expected.1.map { $0 == expected.0 } ?? true }
        guard tensor.dtype == dtype, shapeMatches else {
            let expectedShape = "(" + shape.map { $0.map(String.init) ?? "N" }.joined(separator: ", ") + ")"
            throw FileError(path, "expected a \(descr(dtype)) array of shape \(expectedShape), found \(descr(tensor.dtype)) of shape \(pythonShape(tensor.shape))")
        }
        return tensor
    }

    /// Parses `.npy` bytes; `path` only names the source in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws -> HostTensor {
        func fail(_ message: String) -> FileError { FileError(path, "npy: " + message) }
        let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("not an npy file (no \\x93NUMPY magic)") }
        let major = bytes[6]
        let lengthBytes: Int
        switch major {
        case 1: lengthBytes = 2
        case 2, 3: lengthBytes = 4
        default: throw fail("unsupported npy version \(major).\(bytes[7])")
        }
        guard bytes.count >= 8 + lengthBytes else { throw fail("truncated header length") }
        let headerLength = (0..<lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        let headerStart = 8 + lengthBytes
        guard headerLength <= bytes.count - headerStart else {
            throw fail("header length \(headerLength) reaches beyond the end of the file (\(bytes.count) bytes)")
        }
        let dataStart = headerStart + headerLength
        guard let header = String(bytes: bytes[headerStart..<dataStart], encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw fail("header is not text")
        }
        let fields: [String: HeaderValue]
        do {
            var parser = HeaderParser(header)
            fields = try parser.dictionary()
        } catch let problem as HeaderParser.Problem {
            throw fail("cannot parse header \(header.trimmingCharacters(in: .whitespacesAndNewlines)): \(problem.message)")
        }
        guard case .string(let descr)? = fields["descr"] else {
            throw fail("header has no 'descr' string (structured dtypes are not supported)")
        }
        guard case .bool(let fortranOrder)? = fields["fortran_order"] else { throw fail("header has no 'fortran_order' flag") }
        guard case .shape(let shape)? = fields["shape"] else { throw fail("header has no 'shape' tuple") }
        guard !fortranOrder || shape.count <= 1 else {
            throw fail("fortran_order is True; only C-ordered arrays are supported (save with np.ascontiguousarray)")
        }
        let dtype = try parseDescr(descr, fail: fail)
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard dimension >= 0, !overflow else { throw fail("invalid shape \(pythonShape(shape))") }
            count = product
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, byteCount == bytes.count - dataStart else {
            throw fail("shape \(pythonShape(shape)) of \(descr) needs \(overflow ? "more than Int.max" : String(byteCount)) data bytes, the file has \(bytes.count - dataStart)")
        }
        return HostTensor(dtype: dtype, shape: shape, data: Array(bytes[dataStart...]))
    }

    /// The file bytes, identical to what `np.save` writes for the same array.
    public static func encode(_ tensor: HostTensor) -> [UInt8] {
        var header = "{'descr': '\(descr(tensor.dtype))', 'fortran_order': False, 'shape': \(pythonShape(tensor.shape)), }"
        // numpy leaves room for the first dimension to grow to 21 digits in place.
        if let first = tensor.shape.first { header += String(repeating: " ", count: 21 - String(first).count) }
        var version: UInt8 = 1
        var lengthBytes = 2
        var padded = pad(header, prefix: 10)
        if padded.utf8.count > 65535 {
            version = 2
            lengthBytes = 4
            padded = pad(header, prefix: 12)
        }
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        let length = padded.utf8.count
        for i in 0..<lengthBytes { out.append(UInt8(truncatingIfNeeded: length >> (8 * i))) }
        out += Array(padded.utf8)
        out += tensor.data
        return out
    }

    /// Writes an `.npy` file atomically.
    public static func write(_ tensor: HostTensor, path: String) throws {
        guard tensor.dtype.numpyCode != nil else {
            throw FileError(path, "npy cannot store dtype \(tensor.dtype.rawValue)")
        }
        try AtomicFile.write(Data(encode(tensor)), to: path)
    }

    /// The `descr` numpy writes for a dtype on a little-endian machine ("<f4", "|u1", ...).
    public static func descr(_ dtype: DType) -> String {
        let code = dtype.numpyCode ?? dtype.rawValue
        return (dtype.byteSize == 1 ? "|" : "<") + code
    }

    /// Pads the header with spaces and a newline so the data starts at a multiple of 64 bytes.
    private static func pad(_ header: String, prefix: Int) -> String {
        let used = prefix + header.utf8.count + 1
        return header + String(repeating: " ", count: 64 - used % 64) + "\n"
    }

    private static func pythonShape(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    private static func parseDescr(_ descr: String, fail: (String) -> FileError) throws -> DType {
        guard let order = descr.first, "<>|=".contains(order), let dtype = DType(numpyCode: String(descr.dropFirst())) else {
            throw fail("unsupported dtype '\(descr)' (supported: |u1, |b1, |i1, <i2, <i4, <i8, <f2, <f4, <f8)")
        }
        guard order != ">" || dtype.byteSize == 1 else { throw fail("big-endian dtype '\(descr)' is not supported") }
        return dtype
    }

    fileprivate enum HeaderValue {
        case string(String), bool(Bool), shape([Int])
        /// A list, e.g. the `descr` of a structured dtype; kept only to be refused by name.
        case list
    }

    /// Parses the Python dict literal of an npy header: string keys; string, bool or int-tuple values.
    fileprivate struct HeaderParser {
        struct Problem: Error { let message: String }
        var characters: [Character]
        var index = 0

        init(_ text: String) { characters = Array(text) }

        mutating func skipSpace() { while index < characters.count, characters[index].isWhitespace { index += 1 } }

        mutating func expect(_ character: Character) throws {
            skipSpace()
            guard index < characters.count, characters[index] == character else {
                throw Problem(message: "expected '\(character)' at character \(index)")
            }
            index += 1
        }

        mutating func peek() -> Character? {
            skipSpace()
            return index < characters.count ? characters[index] : nil
        }

        mutating func string() throws -> String {
            guard let quote = peek(), quote == "'" || quote == "\"" else { throw Problem(message: "expected a string at character \(index)") }
            index += 1
            let start = index
            while index < characters.count, characters[index] != quote { index += 1 }
            guard index < characters.count else { throw Problem(message: "unterminated string") }
            defer { index += 1 }
            return String(characters[start..<index])
        }

        mutating func value() throws -> HeaderValue {
            switch peek() {
            case "'", "\"": return .string(try string())
            case "[":
                var depth = 0
                repeat {
                    if characters[index] == "[" { depth += 1 } else if characters[index] == "]" { depth -= 1 }
                    index += 1
                } while depth > 0 && index < characters.count
                guard depth == 0 else { throw Problem(message: "unterminated list") }
                return .list
            case "(":
                index += 1
                var dimensions: [Int] = []
                while peek() != ")" {
                    let start = index
                    while index < characters.count, characters[index].isNumber { index += 1 }
                    // Python 2 numpy wrote long dimensions as "3L".
                    guard let dimension = Int(String(characters[start..<index])) else {
                        throw Problem(message: "expected an integer dimension at character \(start)")
                    }
                    if index < characters.count, characters[index] == "L" { index += 1 }
                    dimensions.append(dimension)
                    if peek() == "," { index += 1 } else { break }
                }
                try expect(")")
                return .shape(dimensions)
            default:
                for (word, flag) in [("True", true), ("False", false)] where characters[index...].starts(with: word) {
                    index += word.count
                    return .bool(flag)
                }
                throw Problem(message: "unexpected value at character \(index)")
            }
        }

        mutating func dictionary() throws -> [String: HeaderValue] {
            try expect("{")
            var result: [String: HeaderValue] = [:]
            while peek() != "}" {
                let key = try string()
                try expect(":")
                result[key] = try value()
                if peek() == "," { index += 1 } else { break }
            }
            try expect("}")
            return result
        }
    }
}
