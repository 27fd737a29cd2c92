import Datasets
import Foundation
import Formats
import Support

/// The rules for reusing a training output folder: a fresh run refuses a folder holding an
/// earlier run (unless told to overwrite it, which clears that run's files); a resumed run must
/// have every result-changing setting of the stored one; `manifest.json`, written after each
/// epoch's files, names the consistent set with their checksums.
public struct TrainingFolder {
    public let path: String
    public init(path: String) { self.path = path }

    public static let manifestName = "manifest.json"
    public static let resumeStateName = "resume_state.safetensors"
    public static let modelName = "model_last.safetensors"
    /// Every file a training run writes: the trainer's own and those the train command writes
    /// beside them (trigger information, the seeded split, ABL's result and log). `--overwrite` removes them all, so
    /// a benign run does not leave an earlier attack's `trigger_info.*` behind.
    public static let runFiles = [
        "model_init.safetensors", modelName, resumeStateName, manifestName, "train_log.txt", "train_log.jsonl",
        "trigger_info.safetensors", "trigger_info.json", "split_permutation.txt", "abl_result.json", "abl_log.txt",
    ]
    /// Metadata keys of the resume state.
    static let settingsKey = "settings", checksumKey = "payload_md5"

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// The files of an earlier run present in the folder.
    public var existingRunFiles: [String] {
        Self.runFiles.filter { FileManager.default.fileExists(atPath: file($0)) }
    }

    /// Before a run without `--resume`: refuses a folder with an earlier run, or with
    /// `overwrite` removes that run's files.
    public func prepareFresh(overwrite: Bool) throws {
        let existing = existingRunFiles
        guard !existing.isEmpty else { return }
        guard overwrite else {
            throw FileError(path, "holds an earlier training run (\(existing.joined(separator: ", "))); "
                + "pass --resume to continue it, --overwrite to replace it, or choose another --output-dir")
        }
        for name in existing {
            guard unlink(file(name)) == 0 else {
                throw FileError(file(name), "cannot remove the earlier run's file: \(SystemError.describe(errno))")
            }
        }
        AtomicFile.removeStaleTemporaries(in: path)
    }

    /// Before a run with `--resume`: the folder must be writable, temporaries of a killed run
    /// go, and a stored resume state must have been written with the same `config` (epochs
    /// aside) and `settings`. Checked from the state's header alone, before anything is written.
    public func prepareResume(config: TrainingConfig, settings: [String: String]) throws {
        guard FileManager.default.fileExists(atPath: path) else { return }
        try Folder.checkWritable(path)
        AtomicFile.removeStaleTemporaries(in: path)
        let state = file(Self.resumeStateName)
        guard FileManager.default.fileExists(atPath: state) else { return }
        try Self.checkSameSettings(stored: try SafeTensors.Header.read(path: state).metadata, config: config,
                                   settings: settings, source: state)
    }

    /// The first setting whose stored value differs, named with its value in both runs.
    static func checkSameSettings(stored metadata: [String: String], config: TrainingConfig, settings: [String: String],
                                  source: String) throws {
        guard let text = metadata["config"],
              let saved = try? JSONDecoder().decode(TrainingConfig.self, from: Data(text.utf8)) else {
            throw FileError(source, "no training configuration in the resume state")
        }
        var storedSettings = saved.comparable
        var currentSettings = config.comparable
        guard let settingsText = metadata[settingsKey] else {
            if !settings.isEmpty {
                throw FileError(source, "was written before the attack settings were recorded, so resuming cannot check "
                    + "them; pass --overwrite to start again")
            }
            return try compare(storedSettings, currentSettings, source: source)
        }
        guard let stored = try? JSONDecoder().decode([String: String].self, from: Data(settingsText.utf8)) else {
            throw FileError(source, "the recorded settings are not a JSON object of strings")
        }
        storedSettings.merge(stored) { first, _ in first }
        currentSettings.merge(settings) { first, _ in first }
        try compare(storedSettings, currentSettings, source: source)
    }

    private static func compare(_ stored: [String: String], _ current: [String: String], source: String) throws {
        for key in Set(stored.keys).union(current.keys).sorted() where stored[key] != current[key] {
            throw FileError(source, "was written with \(key) \(stored[key] ?? "(not set)"), this run has \(key) "
                + "\(current[key] ?? "(not set)"); resume with the same settings, or pass --overwrite or another --output-dir")
        }
    }

    // MARK: Checksums and the manifest

    /// MD5 over what a resume state restores (tensors by name, then metadata by key): stored in
    /// its metadata, so a flipped byte is found before the state is used.
    static func payloadChecksum(tensors: [String: HostTensor], metadata: [String: String]) -> String {
        var md5 = MD5()
        for name in tensors.keys.sorted() {
            md5.update(Array(name.utf8) + [0])
            md5.update(tensors[name]!.data)
        }
        for key in metadata.keys.sorted() where key != checksumKey {
            md5.update(Array(key.utf8) + [0] + Array(metadata[key]!.utf8) + [0])
        }
        return md5.finalize()
    }

    /// Adds the checksum to a resume state's metadata.
    static func sealed(_ state: SafeTensors) -> SafeTensors {
        var state = state
        state.metadata[checksumKey] = payloadChecksum(tensors: state.tensors, metadata: state.metadata)
        return state
    }

    /// Refuses a resume state whose contents do not match its checksum.
    static func verify(_ state: SafeTensors, source: String) throws {
        guard let stored = state.metadata[checksumKey] else { return }  // written before checksums
        let actual = payloadChecksum(tensors: state.tensors, metadata: state.metadata)
        guard actual == stored else {
            throw FileError(source, "is damaged: its contents have MD5 \(actual), the state recorded \(stored) "
                + "(a changed byte); resume from a copy, or pass --overwrite to start again")
        }
    }

    /// Written last after an epoch: the epoch and the checksums of the model and resume state
    /// written for it. A kill before it leaves the previous manifest, naming the previous
    /// epoch's files; a reader compares checksums to know which files belong together.
    func writeManifest(completedEpochs: Int) throws {
        var files: [String: Any] = [:]
        for name in [Self.modelName, Self.resumeStateName] {
            files[name] = ["md5": try MD5.hex(ofFile: file(name))]
        }
        try AtomicFile.write(try JSONOutput.string(["completed_epochs": completedEpochs, "files": files]) + "\n",
                             to: file(Self.manifestName))
    }

    /// The epoch the manifest records, when the named file still has the recorded checksum.
    public func manifestEpoch(matching name: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: file(Self.manifestName)),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let epoch = object["completed_epochs"] as? Int,
              let files = object["files"] as? [String: Any], let entry = files[name] as? [String: Any],
              let md5 = entry["md5"] as? String, (try? MD5.hex(ofFile: file(name))) == md5 else { return nil }
        return epoch
    }
}

extension TrainingConfig {
    /// The settings a resumed run must share, by flag name where a flag sets them (epochs may
    /// grow). Read from the stored properties, so a field added later is compared too.
    var comparable: [String: String] {
        let flags = ["batchSize": "--batch-size", "learningRate": "--lr", "milestones": "--milestones", "width": "--width", "architecture": "--model",
                     "seed": "--seed", "augment": "augmentation", "weightDecay": "weight decay"]
        var out: [String: String] = [:]
        for child in Mirror(reflecting: self).children {
            guard let label = child.label, label != "epochs" else { continue }
            let value = (child.value as? [Int]).map { $0.map(String.init).joined(separator: ",") } ?? "\(child.value)"
            out[flags[label] ?? label] = value
        }
        return out
    }
}
