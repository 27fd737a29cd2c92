import XCTest
import Formats
import Support
@testable import NN
import DNNL

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

/// A plain tensor reordered into `like`'s layout.
func tensor(_ values: [Float], shape: [Int], like: Tensor? = nil) throws -> Tensor {
    let t = try Tensor(shape: shape, values: values)
    return try like.map { try t.reordered(to: $0.desc) } ?? t
}
