import Attacks
import Datasets
import Models
import NN
import XCTest
import TestSupport

/// The quick width-8 models of Fixtures/defenses (scripts/fixtures/make_backdoored_fixtures.sh)
/// with the real data a defense sees: the defender's first 1% of the reference split, and
/// the first test images clean, triggered with the target label (ASR) and triggered with their
/// true labels (robust accuracy).
struct QuickFixture {
    var model: Model
    var defender: ImageSet
    var test: ImageSet
    var poison: ImageSet
    var triggered: ImageSet

    static func load(_ kind: String, cleanFrac: Double = 0.01, testImages: Int = 1000) throws -> QuickFixture {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let folder = SharedData.packageRoot() + "/Fixtures/defenses/\(kind)_w8"
        let (model, _) = try Checkpoint.load(folder + "/model.safetensors", on: testBackend)
        let data = try CIFAR10.load(directory: shared + "/cifar10")
        let permutation = try Permutation.read(path: shared + "/anp/cifar_shuffle.txt")
        let defender = data.train.subset(DataSplit(permutation: permutation, valFrac: cleanFrac).defender)
        let test = data.test.subset(Array(0..<testImages))
        // The benign model is judged against the BadNets trigger too (it should not respond to it).
        let info = try TriggerInfo.read(path: SharedData.packageRoot() + "/Fixtures/defenses/badnets_w8/trigger_info.safetensors")
        return QuickFixture(model: model, defender: defender, test: test,
                            poison: try Poisoning.testSet(test, trigger: info.trigger, target: info.target),
                            triggered: try Poisoning.triggeredTestSet(test, trigger: info.trigger, target: info.target))
    }
}
