import Attacks
import Defenses
import Foundation
import Models
import NN
import Training

extension Experiment {
    /// One ANP stage per alpha under `RUN/sweep/`, pruning at each threshold; writes sweep/sweep.json
    /// and the report.
    public func sweep(attack: PoisonType, alphas: [Double], thresholds: [Double]) throws {
        let model = try trainedModel(attack)
        let trainFolder = model.stage
        let sets = try evaluationSets(trainFolder: trainFolder.path)
        var rows: [[String: Any]] = []
        let modelRan = upstreamRan
        for alpha in alphas {
            upstreamRan = modelRan  // the alpha stages are siblings: one running does not rerun the next
            let anp = try optimizeMasks(attack, folderName: "alpha-\(alpha)", alpha: alpha, upstream: trainFolder,
                                        attackFolder: "sweep")
            let scores = try MaskFile.read(path: anp.file(MaskFile.fileName))
            for threshold in thresholds {
                let (pruned, _) = try Checkpoint.load(model.modelPath, on: inference)
                let chosen = Pruning.neurons(scores, atOrBelow: threshold)
                try Pruning.prune(pruned, neurons: chosen)
                let metrics = try BackdoorMetrics.evaluate(pruned, clean: sets.clean, poison: sets.poison)
                log.say(String(format: "alpha %g, threshold %g: %d neurons pruned, clean accuracy %.2f%%, ASR %.2f%%",
                               alpha, threshold, chosen.count, 100 * metrics.cleanAccuracy, 100 * metrics.poisonAccuracy))
                rows.append(["anp_alpha": alpha, "threshold": threshold, "pruned_neurons": chosen.count,
                             "clean_acc": metrics.cleanAccuracy, "asr": metrics.poisonAccuracy])
            }
        }
        try writeJSON(["attack": attack.rawValue, "rows": rows],
                      (root as NSString).appendingPathComponent("sweep/sweep.json"))
        try writeReport()
    }
}
