import ArgumentParser
import Attacks

/// The Input-aware dynamic attack's flags (BackdoorBench's names: lr_G, lr_M, lambda_div, ...).
struct InputAwareOptions: ParsableArguments {
    @Option(name: .customLong("lr-G"), help: "Input-aware: Adam learning rate of the pattern generator.") var lrG = 0.01
    @Option(name: .customLong("lr-M"), help: "Input-aware: Adam learning rate of the mask generator.") var lrM = 0.01
    @Option(name: .customLong("schedulerG-milestones"), help: "Input-aware: epochs at which the pattern generator's learning rate x 0.1, comma-separated.")
    var schedulerGMilestones = "200,300,400,500"
    @Option(name: .customLong("schedulerM-milestones"), help: "Input-aware: mask pretraining epochs at which its learning rate x 0.1, comma-separated.")
    var schedulerMMilestones = "10,20"
    @Option(help: "Input-aware: weight of the diversity loss.") var lambdaDiv = 1.0
    @Option(help: "Input-aware: weight of the mask norm loss in the mask pretraining.") var lambdaNorm = 100.0
    @Option(help: "Input-aware: mask density the norm loss allows for free.") var maskDensity = 0.032
    @Option(parsing: .unconditional, help: "Input-aware: mask generator pretraining epochs before the joint training.") var cleanTrainEpochs = 25
    @Option(parsing: .unconditional, help: "Input-aware: first width of both generators (the reference's 32; narrower for CPU runs).")
    var generatorWidth = 32

    /// The settings, with `--cross-ratio` (cross-trigger images per backdoor image, default 1 here).
    func settings(crossRatio: Double?) throws -> InputAwareSettings {
        var s = InputAwareSettings()
        (s.lrG, s.lrM, s.lambdaDiv, s.lambdaNorm, s.maskDensity) = (lrG, lrM, lambdaDiv, lambdaNorm, maskDensity)
        (s.maskEpochs, s.generatorWidth) = (cleanTrainEpochs, generatorWidth)
        s.crossRatio = crossRatio ?? s.crossRatio
        s.milestonesG = try Self.milestones(schedulerGMilestones, flag: "--schedulerG-milestones")
        s.milestonesM = try Self.milestones(schedulerMMilestones, flag: "--schedulerM-milestones")
        return s
    }

    static func milestones(_ text: String, flag: String) throws -> [Int] {
        let values = try AttackOptions.integers(text, flag: flag)
        guard values.allSatisfy({ $0 >= 0 }) else { throw ValidationError("\(flag) must be epoch numbers >= 0, got \"\(text)\"") }
        return values
    }

    var resultSettings: [String: String] {
        ["--lr-G": "\(lrG)", "--lr-M": "\(lrM)", "--schedulerG-milestones": schedulerGMilestones, "--schedulerM-milestones": schedulerMMilestones,
         "--lambda-div": "\(lambdaDiv)", "--lambda-norm": "\(lambdaNorm)", "--mask-density": "\(maskDensity)",
         "--clean-train-epochs": "\(cleanTrainEpochs)", "--generator-width": "\(generatorWidth)"]
    }
}
