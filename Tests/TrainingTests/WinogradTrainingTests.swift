import XCTest
import Datasets
import NN
import OneDNNBackend
import Training
import TestSupport

/// Training with the backend's Winograd convolutions learns as training with oneDNN's direct
/// ones does: a short real run on the shared CIFAR-10 copy (skipped outside the workplace).
final class WinogradTrainingTests: XCTestCase {
    func testShortRunReachesDirectsAccuracyWithinNoise() throws {
        // On AVX-512 CPUs too: width 8's 8-channel stage is where oneDNN's fused add+ReLU on our
        // nChw8c tensors wrote out of bounds (issue 19; `AddReLULayoutTests`).
        guard let directory = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        let cifar = try CIFAR10.load(directory: directory + "/cifar10")
        let train = cifar.train.subset(Array(0..<2000)), test = cifar.test.subset(Array(0..<1000))
        var config = TrainingConfig()
        config.epochs = 2
        config.width = 8
        config.batchSize = 64
        config.learningRate = 0.05
        config.milestones = [2]
        func run(_ algorithm: ConvolutionAlgorithm, seed: UInt64) throws -> EpochRecord {
            config.seed = seed
            let backend = try OneDNN(.init(convolutionAlgorithm: algorithm))
            let trainer = try Trainer(config: config, trainSet: train, cleanTest: test, poisonTest: nil,
                                      outputDirectory: NSTemporaryDirectory() + "winograd-\(UUID().uuidString)",
                                      backend: backend)
            trainer.quiet = true
            let records = try trainer.run()
            let used = try backend.convolutionImplementations().keys
            XCTAssertEqual(used.contains { $0.contains("winograd") }, algorithm == .winograd, "\(used.sorted())")
            XCTAssertLessThan(records.last!.trainLoss, records[0].trainLoss, "\(algorithm) seed \(seed): the loss falls")
            // Chance is 0.1, with a standard deviation of about 0.01 on 1,000 images.
            XCTAssertGreaterThan(records.last!.cleanAcc, 0.15, "\(algorithm) seed \(seed) learns")
            return records.last!
        }
        // Same seed and data, the two runs differ only by rounding, which grows chaotically over the
        // steps: measured over 15 seeds, the final accuracies of such a pair differ by 0.036 (standard
        // deviation; up to 0.08), the final losses by 0.027, with no mean difference (0.008, 0.005).
        // Means over three seeds: differences have a standard deviation near 0.021 and 0.016, so
        // the bounds below are about three of them.
        let seeds: [UInt64] = [5, 6, 7]
        let direct = try seeds.map { try run(.direct, seed: $0) }, winograd = try seeds.map { try run(.winograd, seed: $0) }
        func mean(_ records: [EpochRecord], _ value: (EpochRecord) -> Double) -> Double {
            records.map(value).reduce(0, +) / Double(records.count)
        }
        XCTAssertEqual(mean(winograd, \.cleanAcc), mean(direct, \.cleanAcc), accuracy: 0.06)
        XCTAssertEqual(mean(winograd, \.trainLoss), mean(direct, \.trainLoss), accuracy: 0.05)
        print("direct \(direct.map(\.cleanAcc)) loss \(direct.map(\.trainLoss)); winograd \(winograd.map(\.cleanAcc)) loss \(winograd.map(\.trainLoss))")
    }
}
