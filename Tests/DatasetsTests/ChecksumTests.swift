import Datasets
import Foundation
import XCTest

final class ChecksumTests: XCTestCase {
    /// RFC 1321, appendix A.5.
    func testRFC1321Vectors() {
        let vectors = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (String(repeating: "1234567890", count: 8), "57edf4a22be3c955ac49da2e2107b67a"),
        ]
        for (text, digest) in vectors {
            XCTAssertEqual(MD5.hex(Array(text.utf8)), digest, "MD5(\"\(text)\")")
        }
    }

    /// Feeding in odd-sized pieces (across the 64-byte blocks and the 56-byte padding edge)
    /// gives the one-shot digest.
    func testChunkedUpdatesMatchOneShot() {
        for length in [55, 56, 63, 64, 65, 119, 120, 1000] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            var md5 = MD5()
            var offset = 0
            for piece in [1, 7, 13, 64, 3, 1000] where offset < length {
                let end = min(offset + piece, length)
                md5.update(bytes[offset..<end])
                offset = end
            }
            if offset < length { md5.update(bytes[offset...]) }
            XCTAssertEqual(md5.finalize(), MD5.hex(bytes), "length \(length)")
        }
    }

    /// The fixture archive's MD5 as Python's hashlib computed it.
    func testFileDigestMatchesHashlib() throws {
        let archive = Fixture.info["archive"] as! [String: Any]
        XCTAssertEqual(try MD5.hex(ofFile: Fixture.path(archive["file"] as! String)), archive["md5"] as? String)
        let fileMD5 = Fixture.info["file_md5"] as! [String: String]
        for (name, digest) in fileMD5 {
            XCTAssertEqual(try MD5.hex(ofFile: Fixture.path("cifar-10-batches-bin/" + name)), digest, name)
        }
    }
}
