import CZLibSystem
import Foundation
import Support

/// A reader of `.tar.gz` archives (ustar, GNU long names, pax paths) that lists members and
/// extracts only the members asked for. Any member whose path is absolute or climbs out with
/// `..` makes the whole archive an error: a genuine data set archive never has one.
public enum TarGzip {
    public enum Kind: Equatable { case file, directory, other(UInt8) }

    public struct Member: Equatable {
        public let name: String
        public let size: Int
        public let kind: Kind

        public init(name: String, size: Int, kind: Kind) {
            self.name = name
            self.size = size
            self.kind = kind
        }
    }

    /// All members, in archive order.
    public static func list(path: String) throws -> [Member] {
        var members = [Member]()
        try walk(path: path, progress: nil) { member, reader in
            members.append(member)
            try reader.skip(member.size)
        }
        return members
    }

    /// Extracts the regular files named in `members` (archive paths, e.g.
    /// `cifar-10-batches-bin/data_batch_1.bin`) to `directory/<name>`, ignoring every other
    /// member. Throws, naming the archive, when one is missing, repeated or not a regular file,
    /// and when the archive is corrupt or truncated. `progress` gets (compressed bytes read, total).
    /// Returns the sizes of the extracted files by name.
    @discardableResult
    public static func extract(path: String, members wanted: [String], into directory: String,
                               progress: ((Int, Int) -> Void)? = nil) throws -> [String: Int] {
        let wantedSet = Set(wanted.map(normalized))
        var written = [String: Int]()
        try walk(path: path, progress: progress) { member, reader in
            guard wantedSet.contains(member.name) else { return try reader.skip(member.size) }
            guard member.kind == .file else {
                throw FileError(path, "member \(member.name) is not a regular file (\(member.kind)); expected a file")
            }
            guard written[member.name] == nil else {
                throw FileError(path, "member \(member.name) appears twice; expected it once")
            }
            // The output path is built from the caller's name, already checked to stay inside.
            let target = (directory as NSString).appendingPathComponent(member.name)
            try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: target, contents: nil),
                  let handle = FileHandle(forWritingAtPath: target) else {
                throw FileError(target, "cannot create file while extracting \(path)")
            }
            defer { try? handle.close() }
            try reader.read(member.size) { chunk in handle.write(Data(chunk)) }
            written[member.name] = member.size
        }
        let missing = wanted.map(normalized).filter { written[$0] == nil }
        if !missing.isEmpty {
            throw FileError(path, "archive lacks \(missing.joined(separator: ", ")); expected members \(wanted.joined(separator: ", "))")
        }
        return written
    }

    static func normalized(_ name: String) -> String {
        var name = name
        while name.hasPrefix("./") { name.removeFirst(2) }
        while name.hasSuffix("/") { name.removeLast() }
        return name
    }

    static func isSafe(_ name: String) -> Bool {
        !name.hasPrefix("/") && !name.split(separator: "/").contains("..") && !name.contains("\0")
    }

    /// Calls `body` for each member with the reader positioned at its data; `body` must consume
    /// exactly `member.size` bytes (the padding to 512 is handled here).
    static func walk(path: String, progress: ((Int, Int) -> Void)?,
                     _ body: (Member, GzipReader) throws -> Void) throws {
        let reader = try GzipReader(path: path, progress: progress)
        var longName: String?
        var paxPath: String?
        while true {
            guard let header = try reader.readBlockOrEnd() else { break }
            if header.allSatisfy({ $0 == 0 }) { break }  // end-of-archive marker
            try verifyChecksum(header, path: path)
            let size = try parseSize(header, path: path)
            let type = header[156]
            switch type {
            case UInt8(ascii: "L"):  // GNU long name for the next member
                longName = cString(try reader.readData(size))
                try reader.skip(padding(size))
                continue
            case UInt8(ascii: "x"):  // pax extended header: only the path matters here
                paxPath = parsePaxPath(try reader.readData(size)) ?? paxPath
                try reader.skip(padding(size))
                continue
            case UInt8(ascii: "g"):
                try reader.skip(size + padding(size))
                continue
            default:
                break
            }
            var name = cString(header[0..<100])
            let magic = cString(header[257..<262])
            let prefix = magic == "ustar" ? cString(header[345..<500]) : ""
            if !prefix.isEmpty { name = prefix + "/" + name }
            if let long = paxPath ?? longName { name = long }
            longName = nil
            paxPath = nil
            guard isSafe(name) else {
                throw FileError(path, "member \"\(name)\" would land outside the extraction folder (absolute path or ..); refusing the archive")
            }
            let kind: Kind = (type == 0 || type == UInt8(ascii: "0")) ? .file
                : type == UInt8(ascii: "5") ? .directory : .other(type)
            let member = Member(name: normalized(name), size: kind == .file ? size : (kind == .directory ? 0 : size), kind: kind)
            try body(member, reader)
            try reader.skip(padding(member.size))
        }
    }

    static func padding(_ size: Int) -> Int { (512 - size % 512) % 512 }

    static func cString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    static func parseSize(_ header: [UInt8], path: String) throws -> Int {
        let field = header[124..<136]
        if field.first! & 0x80 != 0 {  // GNU base-256 for sizes of 8 GiB and more
            return field.dropFirst().reduce(Int(field.first! & 0x7F)) { $0 << 8 | Int($1) }
        }
        let text = cString(field).trimmingCharacters(in: .whitespaces)
        guard let size = Int(text.isEmpty ? "0" : text, radix: 8), size >= 0 else {
            throw FileError(path, "tar header with size field \"\(text)\"; expected an octal number")
        }
        return size
    }

    static func verifyChecksum(_ header: [UInt8], path: String) throws {
        let stored = Int(cString(header[148..<156]).trimmingCharacters(in: .whitespaces), radix: 8)
        var sum = 0
        for (i, byte) in header.enumerated() { sum += (148..<156).contains(i) ? 32 : Int(byte) }
        guard stored == sum else {
            throw FileError(path, "corrupt tar header (checksum \(stored.map(String.init) ?? "unreadable"), computed \(sum))")
        }
    }

    /// The `path` record of a pax header ("<len> path=<value>\n" records).
    static func parsePaxPath(_ data: Data) -> String? {
        for record in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let space = record.firstIndex(of: " ") else { continue }
            let keyValue = record[record.index(after: space)...]
            if keyValue.hasPrefix("path=") { return String(keyValue.dropFirst(5)) }
        }
        return nil
    }
}

/// Streams the decompressed bytes of a gzip file.
final class GzipReader {
    private let path: String
    private let handle: FileHandle
    private var stream = z_stream()
    private var input = [UInt8]()
    private var inputOffset = 0
    private var output = [UInt8](repeating: 0, count: 1 << 20)
    private var outputStart = 0, outputEnd = 0
    private var finished = false
    private let totalInput: Int
    private var consumedInput = 0
    private let progress: ((Int, Int) -> Void)?

    init(path: String, progress: ((Int, Int) -> Void)?) throws {
        self.path = path
        self.progress = progress
        guard let handle = FileHandle(forReadingAtPath: path) else { throw FileError(path, "cannot open archive") }
        self.handle = handle
        totalInput = ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.intValue ?? 0
        // 15 + 16: a gzip wrapper is required.
        let status = inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw FileError(path, "zlib initialisation failed (\(status))") }
    }

    deinit {
        inflateEnd(&stream)
        try? handle.close()
    }

    /// Decompresses more into the output buffer; false at the end of the gzip stream.
    private func fill() throws -> Bool {
        if finished { return false }
        outputStart = 0
        outputEnd = 0
        while outputEnd == 0 {
            if inputOffset == input.count {
                input = [UInt8](handle.readData(ofLength: 1 << 20))
                inputOffset = 0
                consumedInput += input.count
                progress?(consumedInput, totalInput)
                if input.isEmpty {
                    throw FileError(path, "truncated: the compressed stream ends early (after \(consumedInput) bytes); expected a complete gzip file")
                }
            }
            let status: Int32 = input.withUnsafeMutableBufferPointer { inBytes in
                output.withUnsafeMutableBufferPointer { outBytes in
                    stream.next_in = inBytes.baseAddress! + inputOffset
                    stream.avail_in = UInt32(inBytes.count - inputOffset)
                    stream.next_out = outBytes.baseAddress!
                    stream.avail_out = UInt32(outBytes.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
            }
            inputOffset = input.count - Int(stream.avail_in)
            outputEnd = output.count - Int(stream.avail_out)
            if status == Z_STREAM_END {
                finished = true
                return outputEnd > 0
            }
            guard status == Z_OK || status == Z_BUF_ERROR else {
                let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                throw FileError(path, "corrupt gzip data: \(message); expected a valid .tar.gz archive")
            }
        }
        return true
    }

    /// Hands exactly `count` bytes to `body` in chunks.
    func read(_ count: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var remaining = count
        while remaining > 0 {
            if outputStart == outputEnd, try !fill() {
                throw FileError(path, "truncated: the archive ends inside a member (\(remaining) bytes missing)")
            }
            let take = min(remaining, outputEnd - outputStart)
            try output.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[outputStart..<outputStart + take])) }
            outputStart += take
            remaining -= take
        }
    }

    func readData(_ count: Int) throws -> Data {
        var data = Data(capacity: count)
        try read(count) { data.append(contentsOf: $0) }
        return data
    }

    func skip(_ count: Int) throws { try read(count) { _ in } }

    /// The next 512-byte block, or nil when the stream ends cleanly at a block boundary.
    func readBlockOrEnd() throws -> [UInt8]? {
        if outputStart == outputEnd, try !fill() { return nil }
        var block = [UInt8]()
        block.reserveCapacity(512)
        try read(512) { block.append(contentsOf: $0) }
        return block
    }
}
