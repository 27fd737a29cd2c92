import ArgumentParser
import Experiments
import Attacks
import Defenses
import Foundation
import Models
import NN
import Support
import Training

/// `backdoor sweep`: the homework's questions on one backdoored model: ANP with several alphas,
/// pruning at several thresholds.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "ANP with several --alphas and pruning at several --thresholds on one backdoored model; writes sweep/sweep.json.",
        discussion: """
            Uses (or first makes, as `backdoor run` would) the backdoored model of --attack in --output-dir: \
            stages finished there with the same settings are reused. Runs ANP once per alpha \
            (sweep/alpha-A/), prunes at every threshold, evaluates on the whole test set, writes \
            sweep/sweep.json and rebuilds the report with the sweep section.
            """)

    @OptionGroup var options: ExperimentOptions
    @Option(help: "The backdoored model to sweep: badnets, blend or clean-label.") var attack = "badnets"
    @Option(help: "ANP alphas, comma-separated.") var alphas = "0.0,0.2,0.5,0.8,1.0"
    @Option(help: "Pruning thresholds, comma-separated.") var thresholds = "0.05,0.1,0.2,0.3,0.5,0.7"

    static func parseNumbers(_ text: String, flag: String, range: ClosedRange<Double>) throws -> [Double] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty else { throw ValidationError("--\(flag) is empty; expected comma-separated numbers") }
        return try parts.map { part in
            guard let value = Double(part), range.contains(value) else {
                throw ValidationError("--\(flag): \"\(part)\" is not a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }
    }

    func validate() throws {
        guard PoisonType(rawValue: attack).map(PoisonType.experimentAttacks.contains) == true else {
            throw ValidationError("--attack \(attack): expected one of " + PoisonType.experimentAttacks.map(\.rawValue).joined(separator: ", "))
        }
        _ = try Self.parseNumbers(alphas, flag: "alphas", range: 0...1)
        _ = try Self.parseNumbers(thresholds, flag: "thresholds", range: 0...1)
    }

    func run() throws {
        // The model's stages are reused whenever they match, so a sweep never retrains needlessly.
        let experiment = try Experiment(settings: try options.settings(), root: options.outputDir,
                                        dataDirectory: options.dataDir, resume: true, quiet: options.quiet,
                                        training: options.compute.backend(for: .training),
                                        inference: options.compute.backend(for: .inference))
        try experiment.sweep(attack: PoisonType(rawValue: attack)!,
                             alphas: try Self.parseNumbers(alphas, flag: "alphas", range: 0...1),
                             thresholds: try Self.parseNumbers(thresholds, flag: "thresholds", range: 0...1))
    }
}

