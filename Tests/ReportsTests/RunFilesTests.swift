import Foundation
import XCTest
@testable import Reports

/// The run-folder parsers, on the fixture and on malformed files.
final class RunFilesTests: XCTestCase {
    func testSummaryMatchesTheJSON() throws {
        let summary = try RunSummary.load(path: ReportFixtures.run + "/summary.json")
        let json = try ReportFixtures.summaryJSON()
        XCTAssertEqual(Set(summary.attacks.keys), ["badnets", "blend"])
        let badnets = try XCTUnwrap(summary.attacks["badnets"])
        XCTAssertEqual(badnets.cleanAccuracyBefore, json["badnets"]?["clean_acc_before"])
        XCTAssertEqual(badnets.attackSuccessRateAfter, json["badnets"]?["asr_after"])
        XCTAssertEqual(badnets.prunedNeurons, 23)
        XCTAssertEqual(summary.preset, "quick")
        XCTAssertTrue(try XCTUnwrap(summary.configurationJSON).contains("\"anp_eps\" : 0.4"))
    }

    func testTrainingLog() throws {
        let log = try LogFile.loadTraining(path: ReportFixtures.run + "/badnets/train/train_log.jsonl")
        XCTAssertEqual(log.map(\.step), Array(1...12))
        XCTAssertEqual(log.first?.learningRate, 0.1)
        XCTAssertEqual(log.last?.poisonAccuracy, 0.9962)
        XCTAssertEqual(log.last?.cleanAccuracy, 0.8143)
    }

    func testANPLogAndResult() throws {
        let log = try LogFile.loadANP(path: ReportFixtures.run + "/blend/anp/anp_log.jsonl")
        XCTAssertEqual(log.map(\.step), Array(stride(from: 20, through: 200, by: 20)))
        let result = try PruneResult.load(path: ReportFixtures.run + "/blend/prune/result.json")
        XCTAssertEqual(result.threshold, 0.2)
        XCTAssertEqual(result.prunedNeurons, 31)
    }

    func testMaskValuesKeepLayerOrder() throws {
        let masks = try MaskValues.load(path: ReportFixtures.run + "/badnets/anp/mask_values.txt")
        // Width-16 ResNet-18: 16 + 4*16 + 5*32 + 5*64 + 5*128 BN channels in 20 layers.
        XCTAssertEqual(masks.entries.count, 1200)
        XCTAssertEqual(masks.layers.count, 20)
        XCTAssertEqual(masks.layers.first, "bn1")
        XCTAssertEqual(masks.layers[7], "layer2.0.shortcut.1")
        XCTAssertEqual(masks.values(layer: "layer4.1.bn2").count, 128)
        XCTAssertTrue(masks.entries.allSatisfy { (0...1).contains($0.value) })
    }

    func testPruningTablesAgreeWithMasksAndResult() throws {
        let masks = try MaskValues.load(path: ReportFixtures.run + "/badnets/anp/mask_values.txt")
        let table = try PruningTable.load(path: ReportFixtures.run + "/badnets/prune/pruning_by_threshold.txt")
        XCTAssertEqual(table.rows.count, 19)
        for row in table.rows {
            XCTAssertEqual(row.pruned, masks.entries.filter { $0.value <= row.mask }.count, "threshold \(row.mask)")
        }
        let result = try PruneResult.load(path: ReportFixtures.run + "/badnets/prune/result.json")
        let chosen = try XCTUnwrap(table.rows.first { $0.mask == result.threshold })
        XCTAssertEqual(chosen.attackSuccessRate, result.attackSuccessRate)
        XCTAssertEqual(chosen.cleanAccuracy, result.cleanAccuracy)
        let byNumber = try PruningTable.load(path: ReportFixtures.run + "/badnets/prune/pruning_by_number.txt")
        XCTAssertEqual(byNumber.rows.map(\.pruned), Array(stride(from: 4, through: 80, by: 4)))
    }

    func testSweep() throws {
        let sweep = try SweepTable.load(path: ReportFixtures.run + "/sweep/sweep.json")
        XCTAssertEqual(sweep.rows.count, 20)
        XCTAssertEqual(Set(sweep.rows.map(\.alpha)), [0.1, 0.2, 0.5, 0.9])
        XCTAssertEqual(sweep.attack, "badnets")
    }

    /// The ANP reference code writes spaces around its tabs and the count as "12.00".
    func testReferenceSpacingIsAccepted() throws {
        let directory = try ReportFixtures.temporaryDirectory(self)
        try write("No \t Layer Name \t Neuron Idx \t Mask Score \n0 \tlayer1.0.bn1 \t0 \t0.9731 \n1 \tlayer1.0.bn1 \t1 \t0.0123 \n",
                  to: directory + "/mask_values.txt")
        let masks = try MaskValues.load(path: directory + "/mask_values.txt")
        XCTAssertEqual(masks.entries, [.init(layer: "layer1.0.bn1", neuron: 0, value: 0.9731),
                                       .init(layer: "layer1.0.bn1", neuron: 1, value: 0.0123)])
        try write("No \tLayer Name \tNeuron Idx \tMask \tPoisonLoss \tPoisonACC \tCleanLoss \tCleanACC\n12.00 \tlayer4.1.bn2 \t7 \t0.2000 \t3.1000 \t0.0310 \t0.5300 \t0.9012\n",
                  to: directory + "/pruning.txt")
        let table = try PruningTable.load(path: directory + "/pruning.txt")
        XCTAssertEqual(table.rows, [.init(pruned: 12, layer: "layer4.1.bn2", neuron: 7, mask: 0.2, poisonLoss: 3.1,
                                          attackSuccessRate: 0.031, cleanLoss: 0.53, cleanAccuracy: 0.9012)])
    }

    func testMalformedFilesNameFileAndLine() throws {
        let directory = try ReportFixtures.temporaryDirectory(self)
        let log = directory + "/train_log.jsonl"
        try write("{\"epoch\": 1, \"clean_acc\": 0.5}\n{\"epoch\": 2, \"clean_acc\": \"high\"}\n", to: log)
        assertThrows(try LogFile.loadTraining(path: log), mentioning: [log, "line 2", "clean_acc", "a string"])
        try write("{\"epoch\": 1}\nnot json\n", to: log)
        assertThrows(try LogFile.loadTraining(path: log), mentioning: [log, "line 2", "not valid JSON"])
        try write("{\"epoch\": 2}\n{\"epoch\": 1}\n", to: log)
        assertThrows(try LogFile.loadTraining(path: log), mentioning: ["line 2", "\"epoch\" 1 does not follow 2"])
        try write("{\"iteration\": 20}\n", to: log)
        assertThrows(try LogFile.loadTraining(path: log), mentioning: ["line 1", "missing number \"epoch\""])

        let masks = directory + "/mask_values.txt"
        try write("No\tLayer Name\tNeuron Idx\tMask Score\n0\tbn1\t0\t0.5\n1\tbn1\t1\tabc\n", to: masks)
        assertThrows(try MaskValues.load(path: masks), mentioning: [masks, "line 3", "mask score \"abc\""])
        try write("0\tbn1\t0\t0.5\n", to: masks)
        assertThrows(try MaskValues.load(path: masks), mentioning: [masks, "line 1", "header"])

        let pruning = directory + "/pruning_by_threshold.txt"
        try write(PruningTable.header.joined(separator: "\t") + "\n3\tbn1\t2\t0.1\t0.2\t93.5\t0.4\t0.9\n", to: pruning)
        assertThrows(try PruningTable.load(path: pruning), mentioning: [pruning, "line 2", "PoisonACC 93.5", "fraction"])
        try write(PruningTable.header.joined(separator: "\t") + "\n3\tbn1\t2\t0.1\n", to: pruning)
        assertThrows(try PruningTable.load(path: pruning), mentioning: ["line 2", "expected 8 tab-separated fields, found 4"])

        let summary = directory + "/summary.json"
        try write("{\"attacks\": {\"badnets\": {\"clean_acc_before\": 0.9}}}", to: summary)
        assertThrows(try RunSummary.load(path: summary), mentioning: [summary, "attacks.badnets", "asr_before"])
        try write("[1, 2]", to: summary)
        assertThrows(try RunSummary.load(path: summary), mentioning: [summary, "JSON object", "an array"])
        try write("{\"attacks\": ", to: summary)
        assertThrows(try RunSummary.load(path: summary), mentioning: [summary, "not valid JSON"])

        let sweep = directory + "/sweep.json"
        try write("{\"rows\": [{\"anp_alpha\": 0.2, \"threshold\": 0.2, \"clean_acc\": 0.8, \"asr\": 0.1, \"pruned_neurons\": 2.5}]}", to: sweep)
        assertThrows(try SweepTable.load(path: sweep), mentioning: [sweep, "rows[0]", "pruned_neurons", "whole number"])

        let image = directory + "/samples.png"
        try write("GIF89a not a png at all", to: image)
        assertThrows(try EmbeddedPNG.load(path: image), mentioning: [image, "not a PNG"])
        assertThrows(try LogFile.loadANP(path: directory + "/absent.jsonl"), mentioning: ["absent.jsonl", "does not exist"])
    }

    func testPNGSize() throws {
        let image = try EmbeddedPNG.load(path: ReportFixtures.run + "/badnets/train/samples.png")
        // 8 columns and 2 rows of 32-pixel images with 2-pixel gaps.
        XCTAssertEqual(image.width, 8 * 32 + 7 * 2)
        XCTAssertEqual(image.height, 2 * 32 + 2)
    }
}
