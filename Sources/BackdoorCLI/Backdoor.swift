import ArgumentParser
import Foundation

@main
struct Backdoor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backdoor",
        abstract: "Backdoor attacks on image classifiers and Adversarial Neuron Pruning, on oneDNN.",
        subcommands: [
            // Each subcommand lives in its own file of this folder.
            DataCommand.self, PoisonCommand.self, CleanLabelCommand.self, TrainCommand.self, EvalCommand.self,
            BenchCommand.self, ConvertCommand.self, InspectCommand.self, ReportCommand.self,
            ANPCommand.self, PruneCommand.self, DefendCommand.self, DetectCommand.self, RunCommand.self, SweepCommand.self,
        ])

    /// OpenMP threads that spin while idle steal the cores from any other process (and from
    /// each other when two runs share a machine). libgomp reads OMP_WAIT_POLICY when it loads,
    /// before `main`, so the tool re-executes itself once with the passive policy unless the
    /// user chose one.
    static func main() {
        if getenv("OMP_WAIT_POLICY") == nil {
            setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
            execv("/proc/self/exe", CommandLine.unsafeArgv)
            // exec failed: carry on with the default policy.
        }
        main(nil)
    }
}
