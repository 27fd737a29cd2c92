import Foundation
import XCTest
@testable import Support

final class FileAndJSONTests: XCTestCase {
    /// Issue 12, case 8: `eval --json` with a NaN loss failed with NSCocoaErrorDomain 3840 and
    /// lost the result; NaN and infinities are written as null with a note.
    func testNonFiniteNumbersBecomeNullWithANote() throws {
        let text = try JSONOutput.string(["clean_loss": Double.nan, "clean_acc": 0.1,
                                          "after": ["asr": -Double.infinity], "rows": [1.0, Double.nan]] as [String: Any])
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        XCTAssertTrue(object["clean_loss"] is NSNull)
        XCTAssertEqual(object["clean_acc"] as? Double, 0.1)
        XCTAssertTrue((object["after"] as? [String: Any])?["asr"] is NSNull)
        XCTAssertEqual(object["nan"] as? Bool, true)
        XCTAssertEqual(object["nan_fields"] as? [String], ["after.asr", "clean_loss", "rows.1"])
        let finite = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try JSONOutput.string(["a": 1.5]).utf8)) as? [String: Any])
        XCTAssertNil(finite["nan"], "no note without a replaced value")
    }

    /// Issue 12, case 7: the atomic write leaves no temporary behind, and stale ones (ours and
    /// Foundation's `.dat.nosync*`) are removed on request, other hidden files kept.
    func testAtomicWriteAndStaleTemporaries() throws {
        let directory = NSTemporaryDirectory() + "support-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        try AtomicFile.write("one", to: directory + "/a.txt")
        try AtomicFile.write("two", to: directory + "/a.txt")
        XCTAssertEqual(try String(contentsOfFile: directory + "/a.txt", encoding: .utf8), "two")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["a.txt"])
        for name in [".a.txt.tmp-1-2", ".dat.nosyncABCD", ".keep"] {
            try Data("x".utf8).write(to: URL(fileURLWithPath: directory + "/" + name))
        }
        XCTAssertEqual(AtomicFile.removeStaleTemporaries(in: directory), [".a.txt.tmp-1-2", ".dat.nosyncABCD"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(), [".keep", "a.txt"])
    }

    /// Case 9: errno names in the messages (disk full said nothing of ENOSPC).
    func testSystemErrorsNameTheCause() {
        XCTAssertEqual(SystemError.describe(ENOSPC), "no space left on the device (ENOSPC)")
        XCTAssertEqual(SystemError.describe(EROFS), "the file system is read-only (EROFS)")
        XCTAssertEqual(SystemError.describe(NSError(domain: NSCocoaErrorDomain, code: NSFileWriteOutOfSpaceError)),
                       "no space left on the device (ENOSPC)")
    }

    /// Case 11: terminal control characters and bidi overrides are shown, not obeyed.
    func testTerminalTextEscapesControls() {
        XCTAssertEqual(TerminalText.escaped("a\u{1B}[31mb\nc\u{0}\u{9B}\u{202E}\\é"), "a\\u{1b}[31mb\\u{a}c\\u{0}\\u{9b}\\u{202e}\\\\é")
    }
}
