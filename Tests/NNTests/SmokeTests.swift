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
