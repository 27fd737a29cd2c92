import XCTest
import Models
@testable import NN
import Support
import TestSupport

final class SmokeTests: XCTestCase {
    func testForwardBackwardRuns() throws {
        let model = try ResNet18.model(width: 4, seed: 1, on: testBackend)
        var g = SeededGenerator(seed: 3)
        let n = 4
        let x = (0..<(n * 3 * 32 * 32)).map { _ in g.nextGaussian() }
        let labels: [Int32] = [0, 1, 2, 3]
        let logits = try model.forward(images: x, count: n, mode: .training)
        XCTAssertEqual(logits.count, n * 10)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: 10)
        let gx = try model.backward(logitsGradient: ce.logitsGradient, weightGradients: true, wantInputGradient: true)
        XCTAssertEqual(gx?.count, x.count)
        print("loss", ce.meanLoss, "params", model.parameterCount)
    }
}

final class PassLedgerTests: XCTestCase {
    /// Each backward is counted with the forward before it; forwards without one alone.
    func testPassesAreCountedByKindAndBatch() throws {
        let model = try ResNet18.model(width: 4, seed: 1, on: testBackend)
        var g = SeededGenerator(seed: 3)
        func images(_ n: Int) -> [Float] { (0..<(n * 3 * 32 * 32)).map { _ in g.nextGaussian() } }
        PassLedger.reset()
        for _ in 0..<2 {
            _ = try model.forward(images: images(4), count: 4, mode: .training)
            try model.backward(logitsGradient: [Float](repeating: 0.1, count: 40), weightGradients: true, wantInputGradient: false)
        }
        _ = try model.forward(images: images(3), count: 3, mode: .evaluation)
        _ = try model.forward(images: images(2), count: 2, mode: .evaluation)
        try model.backward(logitsGradient: [Float](repeating: 0.1, count: 20), weightGradients: false, wantInputGradient: true)
        let kind = { (mode: String, batch: Int, backward: String, input: Bool) in
            PassLedger.Kind(mode: mode, batch: batch, backward: backward, inputGradient: input)
        }
        XCTAssertEqual(Set(PassLedger.entries.map { "\($0.kind.mode)/\($0.kind.batch)/\($0.kind.backward)/\($0.kind.inputGradient)/\($0.count)" }),
                       ["train/4/weights/false/2", "eval/3/none/false/1", "eval/2/activations/true/1"])
        XCTAssertEqual(PassLedger.entries.first { $0.kind == kind("train", 4, "weights", false) }?.count, 2)
        let json = try JSONEncoder().encode(PassLedger.entries)
        XCTAssertEqual(try JSONDecoder().decode([PassLedger.Entry].self, from: json), PassLedger.entries, "flat JSON round trip")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: json) as? [[String: Any]])
        XCTAssertEqual(Set(object[0].keys), ["mode", "batch", "backward", "input_gradient", "count"])
        PassLedger.reset()
        XCTAssertEqual(PassLedger.entries, [])
    }
}
