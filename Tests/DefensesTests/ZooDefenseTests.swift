import XCTest
import Models
import NN
import Support
@testable import Defenses
import TestSupport

/// ANP's mask optimisation and pruning on every zoo model: they see only the tree's BatchNorm
/// list, so a few steps and a prune on a narrow instance of each show the names and the
/// plumbing hold (the numbers are checked against PyTorch on ResNet-18 in MaskOptimizerTests).
final class ZooDefenseTests: XCTestCase {
    func testMaskOptimisationAndPruningWorkOnEveryModel() throws {
        for architecture in Architecture.allCases where architecture != .resnet18 {
            let name = architecture.rawValue
            let model = try architecture.model(width: 4, seed: 7, on: testBackend)
            let bnNames = model.batchNorms.map(\.name)
            let stateNames = Set(model.stateDictLayout().map(\.name))
            XCTAssertFalse(bnNames.isEmpty, name)
            XCTAssertTrue(bnNames.allSatisfy { stateNames.contains($0 + ".running_var") }, "\(name): state_dict names")

            var config = ANPConfig()
            config.learningRate = 5  // large steps, so a few iterations move masks to both bounds
            let anp = try MaskOptimizer(model: model, config: config)
            XCTAssertEqual(anp.layers.map(\.name), bnNames, name)
            var generator = SeededGenerator(seed: 11)
            let images = (0..<(4 * 3072)).map { _ in generator.nextGaussian() }
            for _ in 0..<3 {
                let result = try anp.step(images: images, labels: [0, 3, 5, 9], generator: &generator)
                XCTAssertTrue(result.loss.isFinite && result.robustLoss >= 0, "\(name): loss \(result.loss)")
            }
            let masks = try anp.masks
            XCTAssertEqual(masks.map(\.count), model.batchNorms.map(\.channels), name)
            let values = masks.joined()
            XCTAssertTrue(values.allSatisfy { $0 >= 0 && $0 <= 1 }, name)
            XCTAssertTrue(values.contains { $0 < 1 }, "\(name): the masks moved")
            anp.detach()
            XCTAssertEqual(Set(model.stateDictLayout().map(\.name)), stateNames, "\(name): detached")

            // mask_values.txt as the reference writes it, then pruning the 5 lowest neurons.
            let scores = MaskFile.scores(layers: bnNames, masks: masks)
            let read = try MaskFile.parse(MaskFile.text(scores), path: "mask_values.txt")
            try Pruning.validate(read, for: model, source: "mask_values.txt")
            let lowest = Array(Pruning.sorted(read).prefix(5))
            let before = try model.forward(images: images, count: 4, mode: .evaluation)
            try Pruning.prune(model, neurons: lowest)
            let state = try model.stateDict()
            for neuron in lowest {
                XCTAssertEqual(try state[neuron.layer + ".weight"]!.floats()[neuron.index], 0, "\(name) \(neuron.layer)")
            }
            let after = try model.forward(images: images, count: 4, mode: .evaluation)
            XCTAssertTrue(after.allSatisfy(\.isFinite), name)
            XCTAssertNotEqual(after, before, "\(name): pruning changes the logits")
        }
    }
}
