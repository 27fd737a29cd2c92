import ArgumentParser
import Attacks
import Foundation

/// `backdoor run`: every stage from attack to pruned model for each attack, then the report.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Attack, train, evaluate, ANP and prune for each attack, then write summary.json and the report.",
        discussion: """
            For each attack, in its own folder of --output-dir: (clean-label only: clean/, the clean model the \
            PGD attacks) poison/ -> train/ (backdoored model, per-epoch log, samples.png) -> eval/ (whole test \
            set) -> anp/ (mask_values.txt) -> prune/ (sweeps by threshold and number, result.json at \
            --threshold). Each stage folder holds config.json, exactly what it ran with; --resume skips the \
            stages finished with the same configuration, continues an interrupted one, and reruns a changed \
            stage and all after it. summary.json and report.html/report.md go to the run folder. \
            Presets: quick (width 16, 6 epochs on 10,000 images without augmentation, 100 ANP iterations; \
            minutes per attack on an idle 2-core CPU) and homework (the assignment: width 64, 50 epochs, 2000 ANP iterations; days on \
            a CPU). Any flag overrides the preset.
            """)

    @OptionGroup var options: ExperimentOptions
    @Option(help: "Attacks to run, comma-separated: badnets, blend, clean-label, sig, wanet, bpp, ftrojan.") var attacks = "badnets"

    func validate() throws {
        _ = try PoisonType.parseList(attacks)
    }

    func run() throws {
        let experiment = try Experiment(settings: try options.settings(), root: options.outputDir,
                                        dataDirectory: options.dataDir, splitFile: options.splitFile,
                                        resume: options.resume, quiet: options.quiet,
                                        training: options.compute.backend(for: .training),
                                        inference: options.compute.backend(for: .inference))
        try experiment.run(attacks: try PoisonType.parseList(attacks))
    }
}
