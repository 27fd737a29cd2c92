import CZLibSystem
import Foundation

/// Read-only ZIP archive over bytes in memory, with every offset and length checked, so a
/// damaged or hostile checkpoint can only produce an error. (ZIPFoundation's in-memory reader
/// traps on some malformed archives, which the fuzz test found.) Stored and deflated entries,
/// ZIP64 sizes and offsets; no encryption, no multi-disk archives.
struct ZipArchive {
    struct Entry {
        let path: String
        let method: UInt16
        let crc: UInt32
        let compressedSize: Int
        let uncompressedSize: Int
        let localHeaderOffset: Int
    }

    /// Memory-mapped for files: only the entries read are paged in (a whole-file copy doubled
    /// the memory `inspect` needed).
    let bytes: Data
    /// Entries by path (the first of duplicate paths wins).
    private(set) var entries: [String: Entry] = [:]

    init(bytes: Data) throws {
        // Offsets below are from the file's start: a slice is rebased to index 0.
        self.bytes = bytes.startIndex == 0 ? bytes : Data(bytes)
        let eocd = try findEndOfCentralDirectory()
        var count = Int(u16(eocd + 10))
        var directorySize = Int(u32(eocd + 12))
        var directoryOffset = Int(u32(eocd + 16))
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            // The ZIP64 locator sits right before the classic record and points at the ZIP64 record.
            let locator = eocd - 20
            guard locator >= 0, u32(locator) == 0x0706_4B50 else { throw error("ZIP64 archive without a ZIP64 locator") }
            let record = try offset(u64(locator + 8), "ZIP64 end of central directory")
            guard record <= bytes.count - 56, u32(record) == 0x0606_4B50 else { throw error("ZIP64 end of central directory is damaged") }
            count = try offset(u64(record + 32), "entry count")
            directorySize = try offset(u64(record + 40), "central directory size")
            directoryOffset = try offset(u64(record + 48), "central directory offset")
        }
        guard directoryOffset <= bytes.count, directorySize <= bytes.count - directoryOffset else {
            throw error("central directory (\(directorySize) bytes at \(directoryOffset)) lies outside the \(bytes.count)-byte file")
        }
        var position = directoryOffset
        for _ in 0..<count {
            guard position <= bytes.count - 46, u32(position) == 0x0201_4B50 else {
                throw error("central directory entry at \(position) is damaged")
            }
            let flags = u16(position + 8)
            let method = u16(position + 10)
            let crc = u32(position + 16)
            var compressed = UInt64(u32(position + 20))
            var uncompressed = UInt64(u32(position + 24))
            let nameLength = Int(u16(position + 28)), extraLength = Int(u16(position + 30)), commentLength = Int(u16(position + 32))
            var local = UInt64(u32(position + 42))
            let nameStart = position + 46
            guard nameLength + extraLength + commentLength <= bytes.count - nameStart else {
                throw error("central directory entry at \(position) runs past the end of the file")
            }
            let path = String(decoding: bytes[nameStart..<(nameStart + nameLength)], as: UTF8.self)
            // ZIP64 extra field: 64-bit values for whichever 32-bit fields are saturated.
            var extra = nameStart + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = u16(extra), size = Int(u16(extra + 2))
                guard extra + 4 + size <= extraEnd else { break }
                if id == 0x0001 {
                    var field = extra + 4
                    func next() throws -> UInt64 {
                        guard field + 8 <= extra + 4 + size else { throw self.error("ZIP64 field of \(path) is too short") }
                        defer { field += 8 }
                        return u64(field)
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if local == 0xFFFF_FFFF { local = try next() }
                }
                extra += 4 + size
            }
            guard flags & 1 == 0 else { throw error("entry \(path) is encrypted") }
            let entry = Entry(path: path, method: method, crc: crc,
                              compressedSize: try offset(compressed, "size of \(path)"),
                              uncompressedSize: try offset(uncompressed, "size of \(path)"),
                              localHeaderOffset: try offset(local, "offset of \(path)"))
            if entries[path] == nil { entries[path] = entry }
            position = extraEnd + commentLength
        }
    }

    /// The entry's content, decompressed and CRC-checked.
    func read(_ entry: Entry) throws -> [UInt8] {
        let header = entry.localHeaderOffset
        guard header <= bytes.count - 30, u32(header) == 0x0403_4B50 else {
            throw error("local header of \(entry.path) is damaged")
        }
        let start = header + 30 + Int(u16(header + 26)) + Int(u16(header + 28))
        guard start <= bytes.count, entry.compressedSize <= bytes.count - start else {
            throw error("entry \(entry.path) (\(entry.compressedSize) bytes) runs past the end of the file")
        }
        let stored = bytes[start..<(start + entry.compressedSize)]
        let content: [UInt8]
        switch entry.method {
        case 0:
            guard entry.compressedSize == entry.uncompressedSize else { throw error("stored entry \(entry.path) has two different sizes") }
            content = Array(stored)
        case 8:
            content = try inflate(Array(stored), expected: entry.uncompressedSize, path: entry.path)
        default:
            throw error("entry \(entry.path) uses unsupported compression method \(entry.method)")
        }
        let crc = content.withUnsafeBufferPointer { buffer in
            UInt32(crc32(0, buffer.baseAddress, uInt(buffer.count)))
        }
        guard crc == entry.crc else { throw error("entry \(entry.path) is corrupt (CRC mismatch)") }
        return content
    }

    private func inflate(_ input: [UInt8], expected: Int, path: String) throws -> [UInt8] {
        guard expected <= max(1 << 20, input.count * 1100) else {
            throw error("entry \(path) claims \(expected) bytes, beyond any deflate ratio")
        }
        var output = [UInt8](repeating: 0, count: expected)
        var stream = z_stream()
        guard inflateInit2_(&stream, -MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw error("zlib could not start inflating \(path)")
        }
        defer { inflateEnd(&stream) }
        var input = input
        let status: Int32 = input.withUnsafeMutableBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                stream.next_in = source.baseAddress
                stream.avail_in = uInt(source.count)
                stream.next_out = destination.baseAddress
                stream.avail_out = uInt(destination.count)
                return zlib_inflate(&stream)
            }
        }
        guard status == Z_STREAM_END, Int(stream.total_out) == expected else {
            throw error("entry \(path) does not inflate to its \(expected) bytes")
        }
        return output
    }

    private func findEndOfCentralDirectory() throws -> Int {
        guard bytes.count >= 22 else { throw error("file is \(bytes.count) bytes, too short for a zip archive (truncated?)") }
        let lowest = max(0, bytes.count - 22 - 0xFFFF)
        var position = bytes.count - 22
        while position >= lowest {
            if u32(position) == 0x0605_4B50 { return position }
            position -= 1
        }
        throw error("no end of central directory record; the archive is truncated or not a zip file")
    }

    private func offset(_ value: UInt64, _ what: String) throws -> Int {
        guard value <= UInt64(bytes.count) else { throw error("\(what) (\(value)) exceeds the \(bytes.count)-byte file") }
        return Int(value)
    }

    private func error(_ message: String) -> CheckpointError { CheckpointError("zip: " + message) }

    private func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
    private func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
    private func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
}

/// zlib's `inflate` with Z_FINISH, named apart from `ZipArchive.inflate`.
private func zlib_inflate(_ stream: UnsafeMutablePointer<z_stream>) -> Int32 {
    inflate(stream, Z_FINISH)
}
