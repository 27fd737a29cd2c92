import Foundation
import Support

/// One file of a run folder as the report sees it: read, absent, or present but unreadable.
/// A report is built from whatever is there, so absence and damage are values, not errors.
public enum Piece<Value> {
    case present(Value)
    /// The path relative to the run folder.
    case missing(String)
    /// The relative path and what is wrong with the file.
    case unreadable(String, String)

    public var value: Value? {
        if case .present(let value) = self { return value }
        return nil
    }

    /// A sentence for the report when the value is not there.
    public var problem: String? {
        switch self {
        case .present: return nil
        case .missing(let path): return "Missing: \(path)"
        case .unreadable(let path, let message): return "Could not read \(path): \(message)"
        }
    }

    static func load(_ relativePath: String, in directory: String, _ parse: (String) throws -> Value) -> Piece {
        let path = directory + "/" + relativePath
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            return .missing(relativePath)
        }
        do {
            return .present(try parse(path))
        } catch let error as FileError {
            return .unreadable(relativePath, error.message)
        } catch {
            return .unreadable(relativePath, String(describing: error))
        }
    }
}

/// The files of one attack's stages (`<attack>/train`, `<attack>/anp`, `<attack>/prune`).
public struct AttackRun {
    public var name: String
    public var trainingLog: Piece<[LogRecord]>
    /// `train/config.json`, pretty-printed with sorted keys.
    public var trainingConfiguration: Piece<String>
    /// `train/samples.png`: a grid of clean and triggered examples.
    public var samples: Piece<EmbeddedPNG>
    public var maskValues: Piece<MaskValues>
    public var anpLog: Piece<[LogRecord]>
    public var pruningByThreshold: Piece<PruningTable>
    public var pruningByNumber: Piece<PruningTable>
    public var pruneResult: Piece<PruneResult>

    public static let stageFolders = ["train", "anp", "prune"]

    public static func load(name: String, runDirectory: String) -> AttackRun {
        func piece<T>(_ file: String, _ parse: (String) throws -> T) -> Piece<T> {
            Piece.load("\(name)/\(file)", in: runDirectory, parse)
        }
        return AttackRun(
            name: name,
            trainingLog: piece("train/train_log.jsonl", LogFile.loadTraining),
            trainingConfiguration: piece("train/config.json") { try JSONOutput.string(try RunFileReader.jsonObject($0).object) },
            samples: piece("train/samples.png", EmbeddedPNG.load),
            maskValues: piece("anp/mask_values.txt", MaskValues.load),
            anpLog: piece("anp/anp_log.jsonl", LogFile.loadANP),
            pruningByThreshold: piece("prune/pruning_by_threshold.txt", PruningTable.load),
            pruningByNumber: piece("prune/pruning_by_number.txt", PruningTable.load),
            pruneResult: piece("prune/result.json", PruneResult.load))
    }
}

/// A PNG file's bytes and size (from its IHDR chunk), for embedding as a data URI.
public struct EmbeddedPNG: Equatable {
    public var data: Data
    public var width: Int
    public var height: Int

    public static func load(path: String) throws -> EmbeddedPNG {
        let data = try InputFile.map(path, what: "PNG file")
        let bytes = [UInt8](data.prefix(24))
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard bytes.count == 24, Array(bytes[0..<8]) == signature, Array(bytes[12..<16]) == Array("IHDR".utf8) else {
            throw FileError(path, "is not a PNG file (no PNG signature and IHDR header)")
        }
        func bigEndian(_ offset: Int) -> Int {
            bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        return EmbeddedPNG(data: data, width: bigEndian(16), height: bigEndian(20))
    }
}

/// Everything a report shows, read from a run folder.
public struct RunFolder {
    public var directory: String
    public var summary: Piece<RunSummary>
    public var attacks: [AttackRun]
    public var sweep: Piece<SweepTable>
    public var leaderboard: Piece<Leaderboard>

    /// Attack folders in the runner's order first, then any others alphabetically (Reports cannot
    /// see PoisonType; ExperimentConfigTests checks that this is PoisonType.experimentAttacks).
    public static let knownAttacks = ["badnets", "blend", "clean-label", "sig", "wanet", "bpp", "ftrojan", "trojannn", "inputaware"]

    public static func load(directory: String) throws -> RunFolder {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw FileError(directory, "run folder does not exist")
        }
        guard isDirectory.boolValue else { throw FileError(directory, "is not a folder (expected a run folder)") }

        let summary = Piece.load("summary.json", in: directory, RunSummary.load)
        // Attacks: those the summary names and every folder holding a stage folder.
        var names = Set(summary.value?.attacks.keys.map { $0 } ?? [])
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for entry in entries where !entry.hasPrefix(".") {
            let hasStage = AttackRun.stageFolders.contains { stage in
                var isFolder: ObjCBool = false
                return FileManager.default.fileExists(atPath: "\(directory)/\(entry)/\(stage)", isDirectory: &isFolder)
                    && isFolder.boolValue
            }
            if hasStage { names.insert(entry) }
        }
        let ordered = knownAttacks.filter(names.contains) + names.subtracting(knownAttacks).sorted()
        return RunFolder(
            directory: directory,
            summary: summary,
            attacks: ordered.map { AttackRun.load(name: $0, runDirectory: directory) },
            sweep: Piece.load("sweep/sweep.json", in: directory, SweepTable.load),
            leaderboard: Piece.load(Leaderboard.jsonFileName, in: directory, Leaderboard.read))
    }
}
