import XCTest
import Formats
import Models
import NN
@testable import Defenses
import TestSupport

/// CLP against numpy's computation of the same definition (Fixtures/defenses/clp_w4.safetensors,
/// scripts/fixtures/make_clp_fixtures.py): the per-channel bounds and the pruned channels.
final class CLPTests: XCTestCase {
    func testBoundsAndPrunedChannelsMatchNumpy() throws {
        let fixture = try Fixture.load("defenses/clp_w4.safetensors")
        var state: [String: HostTensor] = [:]
        for (name, t) in fixture.tensors where name.hasPrefix("model.") { state[String(name.dropFirst(6))] = t }
        let model = try ResNet18.model(width: 4, on: testBackend)
        try model.load(stateDict: state)
        let layers = try CLP.channelBounds(model)
        XCTAssertEqual(layers.map(\.layer), model.batchNorms.map(\.name), "every BatchNorm follows a convolution")
        for layer in layers {
            let expected = try fixture.f("lips." + layer.layer).map(Double.init)
            for (a, e) in zip(layer.bounds, expected) { XCTAssertEqual(a, e, accuracy: 1e-5 * e, layer.layer) }
        }
        for u in [1.0, 3.0] {
            let chosen = CLP.select(layers, u: u)
            var expected: [String] = []
            for layer in layers {
                for (i, flag) in try fixture.f("pruned_u\(Int(u))." + layer.layer).enumerated() where flag == 1 {
                    expected.append("\(layer.layer)[\(i)]")
                }
            }
            XCTAssertEqual(chosen.map { "\($0.layer)[\($0.index)]" }, expected, "u = \(u)")
            XCTAssertFalse(expected.isEmpty, "the fixture prunes something at u = \(u)")
        }

        let before = try model.stateDict()
        let pruned = try CLP.prune(model, u: 3)
        let after = try model.stateDict()
        let chosen = Set(pruned.map { "\($0.layer)[\($0.index)]" })
        for bn in model.batchNorms {
            for key in ["weight", "bias"] {
                let old = try before[bn.name + "." + key]!.floats(), new = try after[bn.name + "." + key]!.floats()
                for c in 0..<bn.channels {
                    XCTAssertEqual(new[c], chosen.contains("\(bn.name)[\(c)]") ? 0 : old[c], "\(bn.name).\(key)[\(c)]")
                }
            }
        }
    }

    func testLargestSingularValueOfKnownMatrices() {
        // diag(3, 1) padded with a zero row: sigma_max 3; a rank-one matrix u v^T: |u| |v|.
        XCTAssertEqual(CLP.largestSingularValue([3, 0, 0, 1, 0, 0], rows: 3, columns: 2), 3, accuracy: 1e-12)
        let u = [1.0, 2, 2], v = [3.0, 4]
        let m = u.flatMap { a in v.map { a * $0 } }
        XCTAssertEqual(CLP.largestSingularValue(m, rows: 3, columns: 2), 15, accuracy: 1e-12)
    }
}
