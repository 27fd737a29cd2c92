import Foundation
import Support

/// Alias for the tensor type of safetensors files, which is the module's `HostTensor`.
public typealias SafeTensor = HostTensor

/// A safetensors file: named tensors plus a string-to-string metadata map. The format is an
/// 8-byte little-endian header length, a JSON header (`dtype`, `shape`, `data_offsets` per tensor,
/// optional `__metadata__`), then the raw little-endian tensor bytes.
public struct SafeTensors: Equatable {
    public var tensors: [String: HostTensor]
    public var metadata: [String: String]

    public init(tensors: [String: HostTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Tensor names in file order (sorted), for listings.
    public var names: [String] { tensors.keys.sorted() }

    /// Reads and validates a safetensors file; every problem is a `FileError` naming the file.
    /// The file is memory-mapped, so only the tensors' own bytes are copied.
    public static func read(path: String) throws -> SafeTensors {
        let data = try InputFile.map(path, what: "safetensors file")
        return try data.withUnsafeBytes { try decode($0, path: path) }
    }

    /// Parses safetensors bytes; `path` only names the source in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws -> SafeTensors {
        try bytes.withUnsafeBytes { try decode($0, path: path) }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, path: String) throws -> SafeTensors {
        let header = try Header.decode(bytes, fileSize: bytes.count, path: path)
        var result = SafeTensors(metadata: header.metadata)
        for entry in header.entries {
            let start = header.dataStart + entry.begin
            result.tensors[entry.name] = HostTensor(dtype: entry.dtype, shape: entry.shape,
                                                    data: Array(bytes[start..<(header.dataStart + entry.end)]))
        }
        return result
    }

    /// One tensor as the header describes it: where its bytes lie in the data section.
    public struct Entry: Equatable, Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var begin: Int
        public var end: Int
        public var byteCount: Int { end - begin }
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// The JSON header of a safetensors file, checked against the file's size: enough to list
    /// a file (`inspect`) without reading its data.
    public struct Header: Equatable, Sendable {
        /// Sorted by name.
        public var entries: [Entry]
        public var metadata: [String: String]
        /// File offset of the first data byte.
        public var dataStart: Int

        /// The reference reader's bound on the JSON header (100 MB); a longer one is damage.
        static let maximumLength: UInt64 = 100_000_000

        /// Reads only the length prefix and the header of the file at `path`.
        public static func read(path: String) throws -> Header {
            let handle = try InputFile.open(path, what: "safetensors file")
            defer { try? handle.close() }
            let size = try InputFile.size(of: handle, path: path)
            let prefix = try InputFile.read(handle, count: min(8, size), path: path)
            var bytes = prefix
            if prefix.count == 8 {
                let length = lengthPrefix(prefix)
                if length <= maximumLength, length <= UInt64(size - 8) {
                    bytes += try InputFile.read(handle, count: Int(length), path: path)
                }
            }
            return try bytes.withUnsafeBytes { try decode($0, fileSize: size, path: path) }
        }

        static func lengthPrefix<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
            var length: UInt64 = 0
            for (i, byte) in bytes.prefix(8).enumerated() { length |= UInt64(byte) << (8 * UInt64(i)) }
            return length
        }

        /// Parses a header; `bytes` start at the beginning of a file of `fileSize` bytes and
        /// hold at least the length prefix and the JSON header.
        static func decode(_ bytes: UnsafeRawBufferPointer, fileSize: Int, path: String) throws -> Header {
            func fail(_ message: String) -> FileError { FileError(path, "safetensors: " + message) }
            guard fileSize >= 8, bytes.count >= 8 else {
                throw fail("file is \(fileSize) bytes, shorter than the 8-byte header length")
            }
            let headerLength = lengthPrefix(bytes)
            guard headerLength <= UInt64(fileSize - 8) else {
                throw fail("header length \(headerLength) reaches beyond the end of the file (\(fileSize) bytes)")
            }
            guard headerLength <= maximumLength else {
                throw fail("header length \(headerLength) exceeds the format's limit of \(maximumLength) bytes")
            }
            let dataStart = 8 + Int(headerLength)
            guard bytes.count >= dataStart else { throw fail("header of \(headerLength) bytes was not read whole") }
            let json: Any
            do {
                json = try JSONSerialization.jsonObject(with: Data(bytes[8..<dataStart]))
            } catch {
                throw fail("header is not valid JSON (\(headerLength) bytes)")
            }
            guard let object = json as? [String: Any] else { throw fail("header is not a JSON object") }
            let dataSize = fileSize - dataStart

            var header = Header(entries: [], metadata: [:], dataStart: dataStart)
            for (name, value) in object {
                if name == "__metadata__" {
                    guard let map = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                    for (key, item) in map {
                        guard let text = item as? String else { throw fail("__metadata__ value of \"\(key)\" is not a string") }
                        header.metadata[key] = text
                    }
                    continue
                }
                guard let entry = value as? [String: Any] else { throw fail("entry \"\(name)\" is not an object") }
                guard let dtypeName = entry["dtype"] as? String else { throw fail("tensor \"\(name)\" has no dtype string") }
                guard let dtype = DType(safetensorsName: dtypeName) else {
                    throw fail("tensor \"\(name)\" has unsupported dtype \(dtypeName)")
                }
                guard let shape = integers(entry["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                    throw fail("tensor \"\(name)\" has no valid shape (expected a list of non-negative integers)")
                }
                guard let offsets = integers(entry["data_offsets"]), offsets.count == 2 else {
                    throw fail("tensor \"\(name)\" has no valid data_offsets (expected [begin, end])")
                }
                let (begin, end) = (offsets[0], offsets[1])
                guard 0 <= begin, begin <= end, end <= dataSize else {
                    throw fail("tensor \"\(name)\" data_offsets [\(begin), \(end)] out of range of the \(dataSize) data bytes")
                }
                var count = 1
                for dimension in shape {
                    let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                    guard !overflow else { throw fail("tensor \"\(name)\" shape \(shape) overflows") }
                    count = product
                }
                let (expectedBytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
                guard !overflow, expectedBytes == end - begin else {
                    throw fail("tensor \"\(name)\" is \(end - begin) bytes, but shape \(shape) of \(dtypeName) needs \(count) x \(dtype.byteSize)")
                }
                header.entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
            }
            let spans = header.entries.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
            for (previous, next) in zip(spans, spans.dropFirst()) where next.begin < previous.end {
                throw fail("tensors \"\(previous.name)\" [\(previous.begin), \(previous.end)] and \"\(next.name)\" [\(next.begin), \(next.end)] overlap")
            }
            // Bytes no tensor claims are damage or a hidden payload (the reference reader refuses them too).
            let used = spans.last?.end ?? 0
            guard used == dataSize else {
                throw fail("\(dataSize - used) trailing bytes after the last tensor's data (the data section is \(dataSize) bytes, tensors use \(used))")
            }
            header.entries.sort { $0.name < $1.name }
            return header
        }
    }

    /// The file bytes: tensors sorted by name, header padded with spaces to a multiple of 8 bytes
    /// (as the reference writer does, so the data stays aligned).
    public func encoded() -> [UInt8] {
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for name in names {
            let tensor = tensors[name]!
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(name)):{\"dtype\":\"\(tensor.dtype.safetensorsName)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.data.count)]}")
            offset += tensor.data.count
        }
        var headerBytes = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count + offset)
        let length = UInt64(headerBytes.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: length >> (8 * UInt64(i)))) }
        out += headerBytes
        for name in names { out += tensors[name]!.data }
        return out
    }

    /// Writes the file atomically.
    public func write(path: String) throws {
        try AtomicFile.write(Data(encoded()), to: path)
    }

    private static func integers(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any] else { return nil }
        var result: [Int] = []
        for item in list {
            // JSONSerialization yields NSNumber; reject non-integral numbers.
            guard let number = item as? NSNumber else { return nil }
            let double = number.doubleValue
            guard double == double.rounded(), abs(double) < 9e15 else { return nil }
            result.append(number.intValue)
        }
        return result
    }
}

/// A JSON string literal (quotes, backslashes and control characters escaped).
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
