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
        config.seed = 5
        func run(_ algorithm: ConvolutionAlgorithm) throws -> [EpochRecord] {
            let backend = try OneDNN(.init(convolutionAlgorithm: algorithm))
            let trainer = try Trainer(config: config, trainSet: train, cleanTest: test, poisonTest: nil,
                                      outputDirectory: NSTemporaryDirectory() + "winograd-\(UUID().uuidString)",
                                      backend: backend)
            trainer.quiet = true
            let records = try trainer.run()
            let used = try backend.convolutionImplementations().keys
            XCTAssertEqual(used.contains { $0.contains("winograd") }, algorithm == .winograd, "\(used.sorted())")
            return records
        }
        let direct = try run(.direct), winograd = try run(.winograd)
        // Same seed and data: the runs differ only by rounding, which grows chaotically over the
        // steps (first-epoch mean losses here: 0.3% and 1.8% apart in two runs); both must learn
        // (chance is 0.1, with a standard deviation of about 0.01 on 1,000 images).
        for (name, records) in [("direct", direct), ("winograd", winograd)] {
            XCTAssertLessThan(records.last!.trainLoss, records[0].trainLoss, "\(name): the training loss falls")
            XCTAssertGreaterThan(records.last!.cleanAcc, 0.2, "\(name) learns")
        }
        // Two accuracies on 1,000 images near 0.25 differ by chance with a standard deviation of
        // about 0.019; 0.06 is about three of them.
        XCTAssertEqual(winograd.last!.cleanAcc, direct.last!.cleanAcc, accuracy: 0.06)
        print("direct \(direct.map(\.cleanAcc)) loss \(direct.map(\.trainLoss)); winograd \(winograd.map(\.cleanAcc)) loss \(winograd.map(\.trainLoss))")
    }
}
