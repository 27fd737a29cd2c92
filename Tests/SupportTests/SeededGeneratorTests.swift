import XCTest
@testable import Support

final class SeededGeneratorTests: XCTestCase {
    func testSameSeedSameStreamDifferentSeedDifferentStream() {
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42), c = SeededGenerator(seed: 43)
        let xs = (0..<8).map { _ in a.next() }
        XCTAssertEqual(xs, (0..<8).map { _ in b.next() })
        XCTAssertNotEqual(xs, (0..<8).map { _ in c.next() })
        var d = SeededGenerator(seed: 42, stream: "augment")
        XCTAssertNotEqual(xs, (0..<8).map { _ in d.next() })
    }

    func testUniformAndGaussianMoments() {
        var g = SeededGenerator(seed: 7)
        let n = 100_000
        var sum = 0.0, sumSq = 0.0, gSum = 0.0, gSq = 0.0
        for _ in 0..<n {
            let u = Double(g.nextFloat())
            XCTAssert(u >= 0 && u < 1)
            sum += u; sumSq += u * u
            let z = Double(g.nextGaussian())
            gSum += z; gSq += z * z
        }
        XCTAssertEqual(sum / Double(n), 0.5, accuracy: 0.01)
        XCTAssertEqual(sumSq / Double(n) - 0.25, 1.0 / 12.0, accuracy: 0.01)
        XCTAssertEqual(gSum / Double(n), 0, accuracy: 0.02)
        XCTAssertEqual(gSq / Double(n), 1, accuracy: 0.02)
    }

    func testCodableRoundTripContinuesTheStream() throws {
        var g = SeededGenerator(seed: 1)
        _ = g.next()
        let data = try JSONEncoder().encode(g)
        var h = try JSONDecoder().decode(SeededGenerator.self, from: data)
        XCTAssertEqual(g.next(), h.next())
    }

    func testAtomicWriteReplacesWholeFile() throws {
        let dir = NSTemporaryDirectory() + "atomic-\(UUID().uuidString)"
        let path = dir + "/sub/file.txt"
        try AtomicFile.write("first", to: path)
        try AtomicFile.write("second", to: path)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "second")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir + "/sub")
        XCTAssertEqual(leftovers, ["file.txt"])
    }
}
