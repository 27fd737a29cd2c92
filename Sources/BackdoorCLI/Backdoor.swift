import ArgumentParser

@main
struct Backdoor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backdoor",
        abstract: "Backdoor attacks on image classifiers and Adversarial Neuron Pruning, on oneDNN.",
        subcommands: [
            // Each subcommand lives in its own file of this folder.
            DataCommand.self, PoisonCommand.self, CleanLabelCommand.self, TrainCommand.self, EvalCommand.self,
            BenchCommand.self, ConvertCommand.self, InspectCommand.self, ReportCommand.self,
            ANPCommand.self, PruneCommand.self, RunCommand.self, SweepCommand.self,
        ])
}
