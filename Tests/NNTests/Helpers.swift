import XCTest
import Formats
import Support
@testable import NN
import Backend
import TestSupport

enum Fixture {
    static func load(_ relativePath: String) throws -> SafeTensors {
        try SafeTensors.read(path: SharedData.packageRoot() + "/Fixtures/" + relativePath)
    }
}

extension SafeTensors {
    func f(_ name: String) throws -> [Float] {
        guard let t = tensors[name] else { throw ShapeError("fixture has no tensor \(name)") }
        return try t.floats()
    }
    func shape(_ name: String) -> [Int] { tensors[name]?.shape ?? [] }
}

/// |a - b| <= atol + rtol * |b| elementwise, reporting the worst element.
func assertClose(_ a: [Float], _ b: [Float], rtol: Float = 1e-4, atol: Float = 1e-5, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(what): count", file: file, line: line)
    var worst = 0, worstExcess: Float = -1
    for i in 0..<min(a.count, b.count) {
        let excess = abs(a[i] - b[i]) - (atol + rtol * abs(b[i]))
        if excess > worstExcess { worstExcess = excess; worst = i }
    }
    if worstExcess > 0 {
        XCTFail("\(what): element \(worst) is \(a[worst]), expected \(b[worst])", file: file, line: line)
    }
}

/// A plain tensor converted into `like`'s layout.
func tensor(_ values: [Float], shape: [Int], like: Tensor? = nil) throws -> Tensor {
    let t = try testBackend.upload(values, shape: shape)
    return try like.map { try t.relayout(to: $0.layout) } ?? t
}

/// A forward pass for one layer's call.
func forwardPass(_ mode: Mode = .evaluation) -> ForwardPass {
    ForwardPass(mode: mode, transients: TensorPool(backend: testBackend))
}

/// A backward pass for one layer's call.
func backwardPass(weightGradients: Bool = true) -> BackwardPass {
    BackwardPass(weightGradients: weightGradients, pool: TensorPool(backend: testBackend))
}

/// Compares `analytic` with central differences (f(v + h e_i) - f(v - h e_i)) / 2h at `samples`
/// random coordinates, within `tolerance` times the largest analytic magnitude.
func assertMatchesFiniteDifferences(_ what: String, values: [Float], analytic: [Float], samples: Int = 12,
                                    step: Float = 1e-2, tolerance: Float = 2e-2, generator: inout SeededGenerator,
                                    file: StaticString = #filePath, line: UInt = #line,
                                    _ f: ([Float]) throws -> Double) throws {
    XCTAssertEqual(values.count, analytic.count, what, file: file, line: line)
    let scale = max(analytic.map(abs).max() ?? 0, 1e-3)
    for _ in 0..<samples {
        let i = Int(generator.next() % UInt64(values.count))
        var plus = values, minus = values
        plus[i] += step
        minus[i] -= step
        let numeric = Float((try f(plus) - f(minus)) / Double(2 * step))
        XCTAssertEqual(analytic[i], numeric, accuracy: tolerance * scale, "\(what)[\(i)]", file: file, line: line)
    }
}
