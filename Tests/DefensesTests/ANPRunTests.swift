import XCTest
import Models
import Datasets
import NN
import Support
@testable import Defenses
import TestSupport

final class ANPRunTests: XCTestCase {
    func randomImages(_ count: Int, seed: UInt64) -> ImageSet {
        var generator = SeededGenerator(seed: seed)
        let pixels = (0..<(count * ImageSet.pixelsPerImage)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        return ImageSet(pixels: pixels, labels: (0..<count).map { _ in Int(generator.next() % 10) })
    }

    func config() -> ANPConfig {
        var config = ANPConfig()
        config.iterations = 4
        config.printEvery = 2
        config.batchSize = 8
        config.seed = 5
        return config
    }

    func testRunLogsRestoresTheModelAndResumesExactly() throws {
        let data = ANPData(defender: randomImages(20, seed: 1), cleanTest: randomImages(12, seed: 2),
                           poisonTest: randomImages(9, seed: 3))
        let model = try ResNet18.model(width: 4, seed: 4, on: testBackend)
        let before = try model.stateDict()
        var logged: [ANPLogEntry] = []
        let full = try ANP.optimizeMasks(model: model, data: data, config: config()) { logged.append($0) }
        XCTAssertEqual(try model.stateDict(), before, "ANP leaves the model's parameters and statistics as they were")
        XCTAssertFalse(model.batchNorms.contains { $0 is NoisyBatchNorm2d }, "ANP puts the model's own BatchNorms back")
        XCTAssertEqual(full.log, logged)
        XCTAssertEqual(full.log.map(\.iteration), [2, 4])
        XCTAssertNotNil(full.log[0].poisonAccuracy)
        XCTAssertTrue(full.log[0].line.hasPrefix("2 \t 0.200 \t "), full.log[0].line)
        XCTAssertEqual(full.masks.map(\.count), model.batchNorms.map(\.channels))
        XCTAssertTrue(full.masks.joined().allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertTrue(full.masks.joined().contains { $0 < 1 }, "four steps move some masks")
        XCTAssertEqual(full.scores.count, model.batchNorms.reduce(0) { $0 + $1.channels })

        // Interrupted after 2 iterations, then resumed to 4: the same masks.
        let statePath = NSTemporaryDirectory() + "anp-\(UUID().uuidString)/" + ANP.stateFileName
        var short = config()
        short.iterations = 2
        _ = try ANP.optimizeMasks(model: model, data: data, config: short, statePath: statePath)
        let resumed = try ANP.optimizeMasks(model: model, data: data, config: config(), statePath: statePath, resume: true)
        XCTAssertEqual(resumed.resumedAt, 2)
        XCTAssertEqual(resumed.log.map(\.iteration), [4])
        XCTAssertEqual(resumed.masks, full.masks)
        XCTAssertEqual(resumed.log[0].cleanLoss, full.log[1].cleanLoss, accuracy: 1e-6, "running statistics resumed too")

        var other = config()
        other.alpha = 0.5
        XCTAssertThrowsError(try ANP.optimizeMasks(model: model, data: data, config: other, statePath: statePath,
                                                   resume: true)) { error in
            XCTAssertTrue("\(error)".contains("cannot resume ANP"), "\(error)")
        }
    }
}
