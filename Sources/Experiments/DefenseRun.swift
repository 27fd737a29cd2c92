import Attacks
import Datasets
import Defenses
import Formats
import Foundation
import Models
import NN
import Support

/// result.json of a defense (`backdoor defend` and the runner's defense stages): its one schema,
/// shared by the writer and every reader (the leaderboard).
public struct DefenseResult: Codable, Equatable {
    public struct PrunedChannel: Codable, Equatable {
        public var layer: String
        public var index: Int
        public var value: Double
    }

    public var defense: String
    public var settings: [String: Double]
    public var checkpoint: String
    public var model: String
    public var cleanImages: Int
    public var testImages: Int
    public var seconds: Double
    public var before: DefenseMetrics
    public var after: DefenseMetrics
    public var pruned: [PrunedChannel]
    /// The model passes the defense ran (its `seconds`' work), by kind and batch size (nil in
    /// files written before they were counted).
    public var passes: [PassLedger.Entry]?

    public static let fileName = "result.json"

    enum CodingKeys: String, CodingKey {
        case defense, settings, checkpoint, model, seconds, before, after, pruned, passes
        case cleanImages = "clean_images", testImages = "test_images"
    }

    public static func read(path: String) throws -> DefenseResult {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read the defense result") }
        do { return try JSONDecoder().decode(DefenseResult.self, from: data) } catch {
            throw FileError(path, "is not a defense result.json: \(error)")
        }
    }

    /// Writes the result with `decision`: what else the defense chose and how (free-form, per defense).
    func write(path: String, decision: [String: Any]) throws {
        var object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(self)) as! [String: Any]
        object["decision"] = decision
        try AtomicFile.write(try JSONOutput.string(object) + "\n", to: path)
    }
}

/// One defense on one backdoored model, judged before and after on the test set: clean accuracy,
/// ASR and robust accuracy (triggered non-target test images against their true labels). Writes
/// `model.safetensors`, `defend_log.txt`/`.jsonl` and `result.json` into `directory`.
public enum DefenseRun {
    public static func run(_ defense: Defense, checkpoint: String, model: Model, clean: ImageSet, cleanSource: String,
                           test: ImageSet, triggerInfo info: TriggerInfo?, directory: String,
                           quiet: Bool = false) throws -> DefenseResult {
        try record(defense: defense.name, settings: defense.settings, checkpoint: checkpoint, model: model, cleanImages: clean.count,
                   uses: "\(clean.count) clean images from \(cleanSource)", test: test, triggerInfo: info, directory: directory,
                   quiet: quiet) { _, log in (model, try defense.repair(model, clean: clean, log: log)) }
    }

    /// The poisoned test set (ASR) and the triggered one (robust accuracy) of `test`.
    public static func testSets(_ test: ImageSet, triggerInfo info: TriggerInfo?) throws -> (poison: ImageSet?, triggered: ImageSet?) {
        (try info.map { try Poisoning.testSet(test, trigger: $0.trigger, target: $0.target) },
         try info.map { try Poisoning.triggeredTestSet(test, trigger: $0.trigger, target: $0.target) })
    }

    /// What every defense runs in: the logs, `model` judged before, `repair` (given the test sets
    /// and the log; it returns the defended model: `model` repaired in place, or, for a
    /// training-time defense, a model it trained), the defended model judged after, saved, and
    /// result.json. `uses` says in the log what the defense learns from.
    public static func record(defense name: String, settings: [String: Double], checkpoint: String, model: Model,
                              cleanImages: Int, uses: String, test: ImageSet, triggerInfo info: TriggerInfo?,
                              directory: String, quiet: Bool,
                              repair: (_ testSets: (poison: ImageSet?, triggered: ImageSet?), _ log: (String) throws -> Void)
                                  throws -> (Model, DefenseDecision)) throws -> DefenseResult {
        try Folder.create(directory)
        let sets = try testSets(test, triggerInfo: info)
        let text = try TextLogWriter(path: (directory as NSString).appendingPathComponent("defend_log.txt"), truncate: true)
        let json = try JSONLinesWriter(path: (directory as NSString).appendingPathComponent("defend_log.jsonl"), truncate: true)
        func log(_ line: String) throws {
            if !quiet { print(line) }
            text.append(line)
            try json.append(["time": ISO8601DateFormatter().string(from: Date()), "message": line])
        }
        try log("\(name) on \(checkpoint) (\(model.description)), \(uses), " + model.backend.summary)
        let before = try DefenseMetrics.evaluate(model, clean: test, poison: sets.poison, triggered: sets.triggered)
        try log("before: " + describe(before))
        PassLedger.reset()
        let start = Date()
        let (defended, decision) = try repair(sets, log)
        let seconds = Date().timeIntervalSince(start)
        let passes = PassLedger.entries
        let after = try DefenseMetrics.evaluate(defended, clean: test, poison: sets.poison, triggered: sets.triggered)
        try log("after: " + describe(after) + String(format: " (%.1f s)", seconds))

        let modelPath = (directory as NSString).appendingPathComponent("model.safetensors")
        try Checkpoint.save(defended, to: modelPath, extraMetadata: ["defense": name, "defended_checkpoint": checkpoint])
        let result = DefenseResult(defense: name, settings: settings, checkpoint: checkpoint, model: modelPath,
                                   cleanImages: cleanImages, testImages: test.count, seconds: seconds,
                                   before: before, after: after,
                                   pruned: decision.pruned.map { .init(layer: $0.layer, index: $0.index, value: $0.value) },
                                   passes: passes)
        for (file, image) in decision.images.sorted(by: { $0.key < $1.key }) {
            try PNG.write(image, path: (directory as NSString).appendingPathComponent(file))
        }
        try result.write(path: (directory as NSString).appendingPathComponent(DefenseResult.fileName), decision: decision.details)
        try log("wrote \(modelPath) and result.json (\(decision.pruned.count) channels pruned)")
        return result
    }

    public static func describe(_ m: DefenseMetrics) -> String {
        String(format: "clean accuracy %.2f%%", 100 * m.cleanAccuracy)
            + (m.attackSuccessRate.map { String(format: ", ASR %.2f%%", 100 * $0) } ?? "")
            + (m.robustAccuracy.map { String(format: ", robust accuracy %.2f%%", 100 * $0) } ?? "")
    }
}
