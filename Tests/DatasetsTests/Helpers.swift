import Datasets
import Foundation
import Support
import XCTest
import TestSupport

/// Fixture paths and scratch folders shared by the Datasets tests.
enum Fixture {
    static let root = SharedData.packageRoot() + "/Fixtures/cifar"
    static func path(_ name: String) -> String { root + "/" + name }

    /// fixtures.json written by scripts/fixtures/make_cifar_fixtures.py.
    static var info: [String: Any] {
        let data = FileManager.default.contents(atPath: path("fixtures.json"))!
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
    static var recordsPerFile: Int { info["records_per_file"] as! Int }
    static func labels(_ batch: String) -> [Int] { (info["labels"] as! [String: [Int]])[batch]! }
    static var trainLabels: [Int] { (1...5).flatMap { labels("data_batch_\($0)") } }

    /// The shared real data folder, or skip.
    static func sharedData() throws -> String {
        guard let dir = try SharedData.directory() else { throw XCTSkip("shared data (../shared/data) not present") }
        return dir
    }
}

/// A fresh temporary folder removed at the end of the test.
func temporaryFolder(_ test: XCTestCase) throws -> String {
    let path = NSTemporaryDirectory() + "datasets-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Asserts that `body` throws an error whose description contains every fragment.
func assertThrows(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch {
        let text = "\(error)"
        for fragment in fragments where !text.contains(fragment) {
            XCTFail("error \"\(text)\" does not mention \"\(fragment)\"", file: file, line: line)
        }
    }
}

/// A random image set for tests that need no real pixels.
func randomImageSet(count: Int, seed: UInt64) -> ImageSet {
    var generator = SeededGenerator(seed: seed)
    let pixels = (0..<count * ImageSet.pixelsPerImage).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
    let labels = (0..<count).map { _ in Int(generator.next() % 10) }
    return ImageSet(pixels: pixels, labels: labels)
}
