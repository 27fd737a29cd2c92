import Foundation
import Support

/// MD5 (RFC 1321), enough to check downloads against the data set's published checksums.
/// Not for security: the published values are MD5, so that is what we compare.
public struct MD5 {
    private var state: (UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476)
    private var pending = [UInt8]()
    private var length: UInt64 = 0

    public init() { pending.reserveCapacity(64) }

    private static let shifts: [UInt32] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
        5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
        6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ]
    /// floor(abs(sin(i + 1)) * 2^32)
    private static let constants: [UInt32] = (0..<64).map { UInt32(truncatingIfNeeded: Int64(abs(sin(Double($0 + 1))) * 4_294_967_296.0)) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var offset = 0
        if !pending.isEmpty {
            let take = min(64 - pending.count, bytes.count)
            pending.append(contentsOf: bytes[0..<take])
            offset = take
            if pending.count == 64 {
                pending.withUnsafeBytes { compress($0.baseAddress!) }
                pending.removeAll(keepingCapacity: true)
            }
        }
        while bytes.count - offset >= 64 {
            compress(bytes.baseAddress! + offset)
            offset += 64
        }
        if offset < bytes.count { pending.append(contentsOf: bytes[offset...]) }
    }

    public mutating func update<D: DataProtocol>(_ data: D) {
        for region in data.regions { region.withUnsafeBytes { update($0) } }
    }

    public mutating func finalize() -> String {
        let bitLength = length &* 8
        var tail: [UInt8] = [0x80]
        while (pending.count + tail.count) % 64 != 56 { tail.append(0) }
        for i in 0..<8 { tail.append(UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(i)))) }
        let savedLength = length
        tail.withUnsafeBytes { update($0) }
        length = savedLength
        precondition(pending.isEmpty)
        var digest = [UInt8]()
        for word in [state.0, state.1, state.2, state.3] {
            for i in 0..<4 { digest.append(UInt8(truncatingIfNeeded: word >> (8 * UInt32(i)))) }
        }
        return digest.map { String(format: "%02x", $0) }.joined()
    }

    private mutating func compress(_ block: UnsafeRawPointer) {
        @inline(__always) func word(_ g: Int) -> UInt32 {
            UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4 * g, as: UInt32.self))
        }
        var (a, b, c, d) = state
        Self.constants.withUnsafeBufferPointer { k in
            Self.shifts.withUnsafeBufferPointer { s in
                // The four rounds written out, so the loop bodies carry no switch.
                @inline(__always) func step(_ f: UInt32, _ i: Int, _ g: Int) {
                    let sum = f &+ a &+ k[i] &+ word(g)
                    a = d; d = c; c = b
                    b = b &+ ((sum << s[i]) | (sum >> (32 - s[i])))
                }
                for i in 0..<16 { step((b & c) | (~b & d), i, i) }
                for i in 16..<32 { step((d & b) | (~d & c), i, (5 &* i &+ 1) & 15) }
                for i in 32..<48 { step(b ^ c ^ d, i, (3 &* i &+ 5) & 15) }
                for i in 48..<64 { step(c ^ (b | ~d), i, (7 &* i) & 15) }
            }
        }
        state = (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d)
    }

    /// Hex digest of a byte sequence.
    public static func hex<D: DataProtocol>(_ data: D) -> String {
        var md5 = MD5()
        md5.update(data)
        return md5.finalize()
    }

    /// Hex digest of a file, read in chunks so large archives do not sit in memory.
    public static func hex(ofFile path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw FileError(path, "cannot open for reading")
        }
        defer { try? handle.close() }
        var md5 = MD5()
        while true {
            let chunk = handle.readData(ofLength: 4 << 20)
            if chunk.isEmpty { break }
            md5.update(chunk)
        }
        return md5.finalize()
    }
}
