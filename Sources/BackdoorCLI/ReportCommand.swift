import ArgumentParser
import Foundation
import Reports

/// `backdoor report DIR`: rebuilds report.html, report.md and plots/*.svg from a run folder.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Rebuild report.html and report.md (with plots/*.svg) from a run folder.",
        discussion: "The run folder layout is described in docs/run-folder.md. Missing or unreadable files become notes in the report; they are also listed on standard error.")

    @Argument(help: "The run folder (as written by `backdoor run`).")
    var runDirectory: String

    func run() throws {
        let written = try ReportBuilder.write(runDirectory: runDirectory)
        for problem in written.problems {
            FileHandle.standardError.write(Data("note: \(problem)\n".utf8))
        }
        print(written.htmlPath)
        print(written.markdownPath)
    }
}
