import Foundation
import XCTest

/// The committed synthetic run folder (made by scripts/fixtures/make_report_fixtures.py).
enum ReportFixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let run = root.appendingPathComponent("Fixtures/reports/run").path

    /// A fresh temporary directory removed when the test ends.
    static func temporaryDirectory(_ test: XCTestCase) throws -> String {
        let path = NSTemporaryDirectory() + "reports-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// A writable copy of the fixture run folder.
    static func copyOfRun(_ test: XCTestCase) throws -> String {
        let path = try temporaryDirectory(test) + "/run"
        try FileManager.default.copyItem(atPath: run, toPath: path)
        return path
    }

    /// The fixture's summary.json read directly, independently of the parser under test.
    static func summaryJSON() throws -> [String: [String: Double]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let attacks = try XCTUnwrap(root["attacks"] as? [String: [String: Any]])
        return attacks.mapValues { $0.compactMapValues { ($0 as? NSNumber)?.doubleValue } }
    }
}

/// Asserts that `body` throws an error whose description contains every fragment.
func assertThrows<T>(_ body: @autoclosure () throws -> T, mentioning fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch {
        let text = String(describing: error)
        for fragment in fragments where !text.contains(fragment) {
            XCTFail("error \"\(text)\" does not mention \"\(fragment)\"", file: file, line: line)
        }
    }
}

/// Every match of `pattern`'s first capture group in `text`.
func captures(_ pattern: String, in text: String) -> [String] {
    let regex = try! NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators])
    let range = NSRange(text.startIndex..., in: text)
    return regex.matches(in: text, range: range).map { match in
        String(text[Range(match.range(at: 1), in: text)!])
    }
}

/// The cell texts of each body row of the HTML table with this id.
func htmlTableRows(id: String, in html: String) -> [[String]] {
    guard let table = captures("<table id=\"\(id)\">(.*?)</table>", in: html).first,
          let body = captures("<tbody>(.*?)</tbody>", in: table).first else { return [] }
    return captures("<tr>(.*?)</tr>", in: body).map { captures("<td>(.*?)</td>", in: $0) }
}

/// Number of points of each `<polyline class="series">` of an SVG.
func polylinePointCounts(_ svg: String) -> [Int] {
    captures("<polyline class=\"series\"[^>]* points=\"([^\"]*)\"", in: svg).map {
        $0.split(separator: " ").count
    }
}

func write(_ text: String, to path: String) throws {
    try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path,
                                            withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}
