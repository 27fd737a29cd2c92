import ArgumentParser
import Defenses
import Foundation

/// `defend --defense nc` flags: BackdoorBench's `config/defense/nc` keys; unset ones take the
/// reference's value, or the quick setting's with --nc-quick.
struct NCOptions: ParsableArguments {
    @Flag(help: "NC: the quick setting (8 reversal epochs on 160 images in batches of 16, 10 unlearning epochs) for flags not given.")
    var ncQuick = false
    @Option(help: "NC: Adam learning rate of the mask and pattern (default 0.1).") var maskLr: Float?
    @Option(help: "NC: initial weight of the mask's L1 norm (default 0.001).") var initCost: Float?
    @Option(help: "NC: attack success (percent) an epoch needs to count as reaching the target (default 98).")
    var atkSuccThreshold: Double?
    @Option(help: "NC: epochs at or below the threshold before the cost moves (default 5).") var patience: Int?
    @Option(help: "NC: cost multiplier up (down by its power 1.5; default 2).") var costMultiplier: Float?
    @Option(help: "NC: early stop when the best norm stays above this fraction of its best (default 0.99)...")
    var earlyStopThreshold: Double?
    @Option(help: "NC: ... for this many epochs (default 25).") var earlyStopPatience: Int?
    @Option(help: "NC: reverse-engineering epochs per class (default 80).") var ncEpoch: Int?
    @Option(help: "NC: reverse-engineer on the first N defender images only (default: all).") var ncImages: Int?
    @Option(help: "NC: flag classes whose anomaly index exceeds this (default 2).") var anomalyThreshold: Double?
    @Option(help: "NC: share of the defender's images stamped with a flagged trigger for unlearning (default 0.2).")
    var unlearningRatio: Double?

    func config(seed: UInt64) -> NCConfig {
        var c = ncQuick ? NCConfig.quick : NCConfig()
        c.seed = seed
        if let maskLr { c.maskLearningRate = maskLr }
        if let initCost { c.initCost = initCost }
        if let atkSuccThreshold { c.attackSuccessThreshold = atkSuccThreshold / 100 }
        if let patience { c.patience = patience }
        if let costMultiplier { c.costMultiplier = costMultiplier }
        if let earlyStopThreshold { c.earlyStopThreshold = earlyStopThreshold }
        if let earlyStopPatience { c.earlyStopPatience = earlyStopPatience }
        if let ncEpoch { c.epochs = ncEpoch }
        if let ncImages { c.imageLimit = ncImages }
        if let anomalyThreshold { c.anomalyThreshold = anomalyThreshold }
        if let unlearningRatio { c.unlearningRatio = unlearningRatio }
        return c
    }
}

/// `defend --defense rnp` flags: the authors' `main.py` names and defaults.
struct RNPOptions: ParsableArguments {
    @Option(help: "RNP: weight of the recovering loss (default 0.2).") var alpha: Float?
    @Option(help: "RNP: stop unlearning once the training accuracy is at most this (default 0.2).") var cleanThreshold: Double?
    @Option(help: "RNP: unlearning (gradient ascent) SGD learning rate (default 0.01).") var unlearningLr: Float?
    @Option(help: "RNP: mask-recovery SGD learning rate (default 0.2).") var recoveringLr: Float?
    @Option(help: "RNP: unlearning epochs (default 20; epochs 0 to N run).") var unlearningEpochs: Int?
    @Option(help: "RNP: mask-recovery epochs (default 20).") var recoveringEpochs: Int?
    @Option(help: "RNP: unlearning learning rate x0.1 at these epochs, comma-separated (default 10,20).")
    var schedule: String?
    @Option(help: "RNP: prune by mask threshold or by number of neurons (default threshold).") var pruningBy: Pruning.Mode?
    @Option(help: "RNP: sweep end, the largest threshold or the most neurons (default 0.9).") var pruningMax: Double?
    @Option(help: "RNP: sweep step (default 0.05).") var pruningStep: Double?
    @Option(help: "RNP: keep the most pruning whose defender clean accuracy stays within this relative drop (default 0.1).")
    var accRatio: Double?
    @Option(help: "RNP: prune at this fixed threshold or number instead of choosing on the defender's images.")
    var pruningNumber: Double?

    func config(seed: UInt64) throws -> RNPConfig {
        var c = RNPConfig()
        c.seed = seed
        if let alpha { c.alpha = alpha }
        if let cleanThreshold { c.cleanThreshold = cleanThreshold }
        if let unlearningLr { c.unlearningLearningRate = unlearningLr }
        if let recoveringLr { c.recoveringLearningRate = recoveringLr }
        if let unlearningEpochs { c.unlearningEpochs = unlearningEpochs }
        if let recoveringEpochs { c.recoveringEpochs = recoveringEpochs }
        if let schedule {
            let epochs = schedule.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !epochs.isEmpty, epochs.allSatisfy({ $0 != nil }) else {
                throw ValidationError("--schedule \(schedule) is invalid: expected comma-separated epochs, e.g. 10,20")
            }
            c.schedule = epochs.map { $0! }
        }
        if let pruningBy { c.pruningBy = pruningBy }
        if let pruningMax { c.pruningMax = pruningMax }
        if let pruningStep { c.pruningStep = pruningStep }
        if let accRatio { c.accRatio = accRatio }
        if let pruningNumber { c.pruningNumber = pruningNumber }
        return c
    }
}
