import XCTest
import Models
import Formats
import NN
import Support
import TestSupport

enum Fixture {
    static func load(_ relativePath: String) throws -> SafeTensors {
        try SafeTensors.read(path: SharedData.packageRoot() + "/Fixtures/" + relativePath)
    }

    /// The width-4 ResNet-18 (`init.*`) and the batch of Fixtures/nn/resnet18_w4.safetensors.
    static func goldenModel() throws -> (model: Model, images: [Float], labels: [Int32]) {
        let file = try load("nn/resnet18_w4.safetensors")
        var state: [String: HostTensor] = [:]
        for (name, t) in file.tensors where name.hasPrefix("init.") { state[String(name.dropFirst(5))] = t }
        let model = try ResNet18.model(width: 4, on: directBackend)
        try model.load(stateDict: state)
        return (model, try file.f("x"), try file.tensors["labels"]!.int64s().map { Int32($0) })
    }
}

extension SafeTensors {
    func f(_ name: String) throws -> [Float] {
        guard let t = tensors[name] else { throw ShapeError("fixture has no tensor \(name)") }
        return try t.floats()
    }

    /// Per-BN tensors `<prefix>.<bn>` in the model's BN order.
    func perLayer(_ prefix: String, _ layers: [BatchNorm2d]) throws -> [[Float]] {
        try layers.map { try f(prefix + "." + $0.name) }
    }
}

/// |a - b| <= tolerance * max|b| + 1e-6 for every element: the fixture README's comparison
/// (tolerance relative to the tensor's largest magnitude).
func assertTensorClose(_ a: [Float], _ b: [Float], _ what: String, tolerance: Float = 1e-4,
                       file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(what): count", file: file, line: line)
    let bound = tolerance * (b.map(abs).max() ?? 0) + 1e-6
    var worst = -1, worstError: Float = 0
    for i in 0..<min(a.count, b.count) where abs(a[i] - b[i]) > worstError {
        worstError = abs(a[i] - b[i])
        worst = i
    }
    if worstError > bound {
        XCTFail("\(what): element \(worst) is \(a[worst]), expected \(b[worst]) (error \(worstError) > \(bound))",
                file: file, line: line)
    }
}
