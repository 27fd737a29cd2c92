import XCTest
import Models
import Formats
import NN
import Support
@testable import Defenses
import Training
import TestSupport

final class MaskFileTests: XCTestCase {
    func testWritesTheReferenceFormatAndRoundTrips() throws {
        let scores = MaskFile.scores(layers: ["bn1", "layer1.0.bn1"], masks: [[1, 0.123456], [0, 0.99996]])
        let expected = "No \t Layer Name \t Neuron Idx \t Mask Score \n"
            + "0 \t bn1 \t 0 \t 1.0000 \n"
            + "1 \t bn1 \t 1 \t 0.1235 \n"
            + "2 \t layer1.0.bn1 \t 0 \t 0.0000 \n"
            + "3 \t layer1.0.bn1 \t 1 \t 1.0000 \n"
        XCTAssertEqual(MaskFile.text(scores), expected)

        let path = NSTemporaryDirectory() + "mask-\(UUID().uuidString)/mask_values.txt"
        try MaskFile.write(scores, to: path)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), expected)
        let read = try MaskFile.read(path: path)
        XCTAssertEqual(read.map(\.layer), ["bn1", "bn1", "layer1.0.bn1", "layer1.0.bn1"])
        XCTAssertEqual(read.map(\.index), [0, 1, 0, 1])
        XCTAssertEqual(read.map(\.value), [1, 0.1235, 0, 1])
        XCTAssertEqual(MaskFile.text(read), expected)
    }

    func testBadLinesAreNamed() {
        let text = "No \t Layer Name \t Neuron Idx \t Mask Score \n0 \t bn1 \t 0 \t 0.5000 \n1 \t bn1 \t x \t 0.2 \n"
        XCTAssertThrowsError(try MaskFile.parse(text, path: "m.txt")) { error in
            XCTAssertTrue("\(error)".hasPrefix("m.txt: line 3:"), "\(error)")
        }
        XCTAssertThrowsError(try MaskFile.parse("0 \t bn1 \t 0 \t 0.5\n", path: "m.txt")) { error in
            XCTAssertTrue("\(error)".contains("line 1: expected the header"), "\(error)")
        }
        XCTAssertThrowsError(try MaskFile.read(path: "/nonexistent/mask_values.txt"))
    }
}

final class PruningTests: XCTestCase {
    func testPruningZeroesExactlyTheChosenBatchNormWeights() throws {
        let model = try ResNet18.model(width: 4, seed: 2, on: testBackend)
        var generator = SeededGenerator(seed: 3)
        for bn in model.batchNorms {  // no zeros to start with, non-zero biases
            try bn.weight.setPlainValues((0..<bn.channels).map { _ in 0.5 + generator.nextFloat() })
            try bn.bias.setPlainValues((0..<bn.channels).map { _ in 0.5 + generator.nextFloat() })
        }
        let before = try model.stateDict()
        let chosen = [NeuronScore(layer: "bn1", index: 2, value: 0), NeuronScore(layer: "layer2.0.shortcut.1", index: 7, value: 0.1),
                      NeuronScore(layer: "layer4.1.bn2", index: 31, value: 0.05), NeuronScore(layer: "bn1", index: 0, value: 0.2)]
        try Pruning.prune(model, neurons: chosen)
        let after = try model.stateDict()
        XCTAssertEqual(Set(before.keys), Set(after.keys))
        for (name, tensor) in before {
            let layer = chosen.first { $0.layer + ".weight" == name }
            if layer == nil {
                XCTAssertEqual(after[name], tensor, "\(name) must not change")
                continue
            }
            var expected = try tensor.floats()
            for neuron in chosen where neuron.layer + ".weight" == name { expected[neuron.index] = 0 }
            XCTAssertEqual(try after[name]!.floats(), expected, name)
        }
        XCTAssertThrowsError(try Pruning.prune(model, neurons: [NeuronScore(layer: "bn1", index: 4, value: 0)]))
        XCTAssertThrowsError(try Pruning.validate([NeuronScore(layer: "layer9.bn1", index: 0, value: 0)], for: model,
                                                  source: "m.txt")) { error in
            XCTAssertTrue("\(error)".contains("layer9.bn1 is not a BatchNorm layer"), "\(error)")
        }
    }

    func testThresholdsAreNumpyArange() {
        XCTAssertEqual(Pruning.thresholds(max: 0.9, step: 0.05).map { "\($0)" },
                       ["0.0", "0.05", "0.1", "0.15000000000000002", "0.2", "0.25", "0.30000000000000004",
                        "0.35000000000000003", "0.4", "0.45", "0.5", "0.55", "0.6000000000000001", "0.65",
                        "0.7000000000000001", "0.75", "0.8", "0.8500000000000001", "0.9"])
        XCTAssertEqual(Pruning.thresholds(max: 0.3, step: 0.1).map { "\($0)" }, ["0.0", "0.1", "0.2", "0.30000000000000004"])
    }

    /// Counts zeroed BN weights as the "evaluation", so each row shows what was pruned by then.
    func zeroCount(_ model: Model) throws -> BackdoorMetrics {
        let zeros = try model.batchNorms.reduce(0) { $0 + (try $1.weight.plainValues()).filter { $0 == 0 }.count }
        return BackdoorMetrics(poisonLoss: Double(zeros), poisonAccuracy: 0.5, cleanLoss: 1.23456, cleanAccuracy: 0.9)
    }

    func scores() -> [NeuronScore] {
        [NeuronScore(layer: "bn1", index: 0, value: 0.3), NeuronScore(layer: "bn1", index: 1, value: 0.0),
         NeuronScore(layer: "bn1", index: 2, value: 1.0), NeuronScore(layer: "layer1.0.bn1", index: 0, value: 0.1),
         NeuronScore(layer: "layer1.0.bn1", index: 1, value: 0.0), NeuronScore(layer: "layer1.0.bn1", index: 2, value: 0.15)]
    }

    func testThresholdSweepFollowsTheReference() throws {
        let model = try ResNet18.model(width: 4, seed: 1, on: testBackend)
        let rows = try Pruning.sweep(model, scores: scores(), mode: .threshold, max: 0.2, step: 0.1, evaluate: zeroCount)
        // Thresholds 0, 0.1, 0.2, 0.30000000000000004: 2, 3, 4, 5 neurons at or below.
        XCTAssertEqual(rows.map(\.pruned), [2, 3, 4, 5])
        XCTAssertEqual(rows.map(\.metrics.poisonLoss), [2, 3, 4, 5])
        // The reference names the first neuron left unpruned.
        XCTAssertEqual(rows.map(\.layer), ["layer1.0.bn1", "layer1.0.bn1", "bn1", "bn1"])
        XCTAssertEqual(rows.map(\.index), [0, 2, 0, 2])
        let text = Pruning.sweepText(rows, mode: .threshold)
        let lines = text.split(separator: "\n")
        XCTAssertEqual(lines[0], "No \t Layer Name \t Neuron Idx \t Mask \t PoisonLoss \t PoisonACC \t CleanLoss \t CleanACC")
        XCTAssertEqual(lines[1], "2.00 \t layer1.0.bn1 \t 0 \t 0.0 \t 2.0000 \t 0.5000 \t 1.2346 \t 0.9000")
        XCTAssertEqual(lines[4], "5.00 \t bn1 \t 2 \t 0.30000000000000004 \t 5.0000 \t 0.5000 \t 1.2346 \t 0.9000")
        XCTAssertEqual(try model.batchNorms[0].weight.plainValues()[2], 1, "mask 1.0 stays")
    }

    func testNumberSweepPrunesStepNeuronsPerRow() throws {
        let model = try ResNet18.model(width: 4, seed: 1, on: testBackend)
        let rows = try Pruning.sweep(model, scores: scores(), mode: .number, max: 4, step: 2, evaluate: zeroCount)
        // Rows after 2, 4 and 6 neurons (starts 0, 2, 4 <= max 4), naming the last pruned neuron.
        XCTAssertEqual(rows.map(\.pruned), [2, 4, 6])
        XCTAssertEqual(rows.map(\.metrics.poisonLoss), [2, 4, 6])
        XCTAssertEqual(rows.map(\.layer), ["layer1.0.bn1", "layer1.0.bn1", "bn1"])
        XCTAssertEqual(rows.map(\.mask), [0.0, 0.15, 1.0])
        XCTAssertEqual(rows[1].line(mode: .number), "4 \t layer1.0.bn1 \t 2 \t 0.15 \t 4.0000 \t 0.5000 \t 1.2346 \t 0.9000\n")
    }

    /// Issue 12, case 10: a mask file must list every BatchNorm neuron of the model in order; a
    /// file cut short, reordered or made for another width is refused at its first mismatch.
    func testMaskFileMustMatchTheModelsNeurons() throws {
        let model = try ResNet18.model(width: 4, seed: 2, on: testBackend)
        let all = model.batchNorms.flatMap { layer in (0..<layer.channels).map { NeuronScore(layer: layer.name, index: $0, value: 0.5) } }
        XCTAssertNoThrow(try Pruning.validate(all, for: model, source: "m.txt"))
        assertMessage(try Pruning.validate(Array(all.dropLast(3)), for: model, source: "m.txt"),
                      ["m.txt: ends after \(all.count - 3) neurons", "has \(all.count)", "the next would be \(all[all.count - 3].layer) \(all[all.count - 3].index)"])
        var swapped = all
        swapped.swapAt(5, 6)
        assertMessage(try Pruning.validate(swapped, for: model, source: "m.txt"),
                      ["neuron 6 is \(all[6].layer) \(all[6].index), expected \(all[5].layer) \(all[5].index)"])
        let wider = try ResNet18.model(width: 8, seed: 2, on: testBackend)
        assertMessage(try Pruning.validate(all, for: wider, source: "m.txt"), ["width 8"])
        assertMessage(try Pruning.validate(all + [all[0]], for: model, source: "m.txt"), ["one too many"])
    }

    /// The fuzzer's saved mask-file inputs (Tests/Fuzz) parse or are refused, never crash.
    func testSavedFuzzInputsReplay() throws {
        let inputs = try FuzzInputs.inputs(target: "mask")
        for input in inputs { _ = try? MaskFile.parse(String(decoding: input, as: UTF8.self), path: "fuzz") }
        XCTAssertGreaterThan(inputs.count, 0)
    }

    private func assertMessage(_ body: @autoclosure () throws -> Void, _ fragments: [String], line: UInt = #line) {
        XCTAssertThrowsError(try body(), line: line) { error in
            for fragment in fragments { XCTAssertTrue("\(error)".contains(fragment), "\(error) lacks \(fragment)", line: line) }
        }
    }
}

