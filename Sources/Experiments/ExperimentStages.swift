import Foundation
import Support

/// One stage folder of a run (`RUN/<attack>/<stage>/`) and the rule that decides whether it runs:
/// `config.json` holds exactly what the stage runs with (its own settings and, under "input",
/// the configuration of the stage it reads from, so a change upstream changes every later
/// configuration); `done.json` is written when the stage finished. With `--resume` a finished
/// stage with the same configuration is skipped; an unfinished one with the same configuration
/// continues (training and ANP pick up their state files); anything else starts afresh.
struct StageFolder {
    static let configFile = "config.json"
    static let doneFile = "done.json"

    let path: String
    /// The configuration as written: pretty-printed, keys sorted.
    let configText: String
    let config: [String: Any]

    init(path: String, config: [String: Any]) throws {
        self.path = path
        self.config = config
        configText = try JSONOutput.string(config) + "\n"
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    var recordedConfig: String? {
        FileManager.default.contents(atPath: file(Self.configFile)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Seconds the finished stage took, or nil when it has not finished.
    var finishedSeconds: Double? {
        guard let data = FileManager.default.contents(atPath: file(Self.doneFile)),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return (object["seconds"] as? NSNumber)?.doubleValue
    }

    enum Plan: Equatable {
        case skip(seconds: Double)
        /// Same configuration, not finished: the stage may continue from its state files.
        case `continue`
        case fresh
    }

    /// What to do with this stage; `outputs` are files that must exist for a skip.
    func plan(resume: Bool, upstreamRan: Bool, outputs: [String]) -> Plan {
        guard resume, !upstreamRan, recordedConfig == configText else { return .fresh }
        if let seconds = finishedSeconds, outputs.allSatisfy({ FileManager.default.fileExists(atPath: file($0)) }) {
            return .skip(seconds: seconds)
        }
        return .continue
    }

    /// Clears the folder (unless continuing) and records the configuration.
    func begin(_ plan: Plan) throws {
        if plan == .fresh, FileManager.default.fileExists(atPath: path) {
            try FileManager.default.removeItem(atPath: path)
        }
        try Folder.create(path)
        if FileManager.default.fileExists(atPath: file(Self.doneFile)) {
            try FileManager.default.removeItem(atPath: file(Self.doneFile))
        }
        try AtomicFile.write(configText, to: file(Self.configFile))
    }

    func finish(seconds: Double) throws {
        try AtomicFile.write(try JSONOutput.string(["seconds": seconds]) + "\n", to: file(Self.doneFile))
    }
}

/// The run's own log: a human line on standard output (unless quiet) and in `run_log.txt`, and a
/// JSON object per event in `run_log.jsonl`.
final class ExperimentLog {
    private let text: TextLogWriter
    private let json: JSONLinesWriter
    let quiet: Bool

    init(directory: String, quiet: Bool, append: Bool) throws {
        text = try TextLogWriter(path: (directory as NSString).appendingPathComponent("run_log.txt"), truncate: !append)
        json = try JSONLinesWriter(path: (directory as NSString).appendingPathComponent("run_log.jsonl"), truncate: !append)
        self.quiet = quiet
    }

    func say(_ line: String) {
        if !quiet { print(line) }
        text.append(line)
    }

    func event(_ fields: [String: Any]) throws {
        var fields = fields
        fields["time"] = ISO8601DateFormatter().string(from: Date())
        try json.append(fields)
    }
}
