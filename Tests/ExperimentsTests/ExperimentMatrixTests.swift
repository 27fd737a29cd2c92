import Attacks
import Defenses
import Formats
import Foundation
import Reports
import TestSupport
import Training
import XCTest
@testable import Experiments

/// The attack x defense matrix on real CIFAR-10 at toy size (width 4, 512 images, one epoch):
/// the leaderboard equals the cells' result files and BackdoorBench's DER, a run interrupted
/// mid-matrix and resumed ends with the same leaderboard, and a changed defense setting reruns
/// only that defense's cells.
final class ExperimentMatrixTests: XCTestCase {
    private func tinySettings(_ extra: [String: Any] = [:]) throws -> ExperimentSettings {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 data not found") }
        let flags: [String: Any] = [
            "data.split_file": shared + "/anp/cifar_shuffle.txt", "data.train_limit": 512, "model.width": 4,
            "training.epochs": 1, "training.milestones": [1], "evaluation.test_limit": 100, "evaluation.eval_limit": 200,
            "matrix.attacks": ["badnets", "blend"], "matrix.defenses": ["clp", "anp"],
            "defense.settings": ["anp": ["iterations": 3]],
        ]
        return try ExperimentConfigFile.settings(preset: "quick", flags: flags.merging(extra) { $1 })
    }

    private func run(_ settings: ExperimentSettings, _ root: String, resume: Bool = false,
                     onEpoch: ((String, EpochRecord) throws -> Void)? = nil) throws -> Leaderboard {
        let data = try XCTUnwrap(try SharedData.directory()) + "/cifar10"
        let board = try ExperimentRunner.run(settings, root: root, dataDirectory: data, resume: resume, quiet: true,
                                             training: testBackend, inference: testBackend, onEpoch: onEpoch)
        return try XCTUnwrap(board)
    }

    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "matrix-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    private func modified(_ path: String) throws -> Date? {
        try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date
    }

    /// The leaderboard without the seconds (they differ between runs).
    private func numbers(_ board: Leaderboard) -> [[Double?]] {
        board.cells.map { [$0.cleanBefore, $0.asrBefore, $0.cleanAfter, $0.asrAfter, $0.robustBefore, $0.robustAfter] }
    }

    func testLeaderboardEqualsTheCellsAndSurvivesInterruptionAndSettingChanges() throws {
        let base = try temporaryDirectory()
        let settings = try tinySettings()
        let board = try run(settings, base + "/straight")

        // One row per attack x defense, each equal to its cell's result.json, DER as BackdoorBench's.
        XCTAssertEqual(board.rows.map { "\($0.attack)/\($0.defense)" }, ["badnets/clp", "badnets/anp", "blend/clp", "blend/anp"])
        for row in board.rows {
            let result = try DefenseResult.read(path: base + "/straight/\(row.attack)/defense-\(row.defense)/result.json")
            XCTAssertEqual(row.cleanAcc.mean, result.after.cleanAccuracy)
            XCTAssertEqual(row.asr.mean, try XCTUnwrap(result.after.attackSuccessRate))
            XCTAssertEqual(row.robustAcc?.mean, result.after.robustAccuracy)
            XCTAssertEqual(row.asrBefore.mean, try XCTUnwrap(result.before.attackSuccessRate))
            XCTAssertEqual(row.cleanAcc.std, 0, "one seed")
            let dASR = result.before.attackSuccessRate! - result.after.attackSuccessRate!
            let dACC = result.before.cleanAccuracy - result.after.cleanAccuracy
            XCTAssertEqual(row.der.mean, (max(0, dASR) - max(0, dACC) + 1) / 2, accuracy: 1e-12)
            XCTAssertEqual(result.testImages, 200)
        }
        XCTAssertEqual(try Leaderboard.read(path: base + "/straight/leaderboard.json"), board)
        let csv = try String(contentsOfFile: base + "/straight/leaderboard.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 5)
        XCTAssertEqual(String(csv[0]), Leaderboard.csvHeader)
        XCTAssertTrue(csv[1].hasPrefix("badnets,clp,resnet18,0,"), String(csv[1]))
        let report = try String(contentsOfFile: base + "/straight/report.md", encoding: .utf8)
        XCTAssertTrue(report.contains("## Leaderboard: attacks x defenses"))
        XCTAssertFalse(report.contains("Missing: summary.json"), "a matrix has no ANP chain to miss")
        XCTAssertFalse(report.contains("## ANP mask values"))
        XCTAssertTrue(report.contains("Run configuration (config.yaml)"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: base + "/straight/plots/leaderboard_asr_resnet18.svg"))
        // Both defenses of an attack ran on the same model, trained once.
        XCTAssertEqual(try DefenseResult.read(path: base + "/straight/badnets/defense-clp/result.json").before,
                       try DefenseResult.read(path: base + "/straight/badnets/defense-anp/result.json").before)

        // Interrupted in the second attack's training, then resumed: the same leaderboard.
        struct Interrupted: Error {}
        XCTAssertThrowsError(try run(settings, base + "/resumed") { stage, _ in
            if FileManager.default.fileExists(atPath: base + "/resumed/badnets/defense-anp/result.json") { throw Interrupted() }
        }) { XCTAssertTrue($0 is Interrupted, "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/resumed/blend/defense-clp"))
        let badnetsAt = try modified(base + "/resumed/badnets/defense-anp/result.json")
        let resumed = try run(settings, base + "/resumed", resume: true)
        XCTAssertEqual(numbers(resumed), numbers(board))
        XCTAssertEqual(try modified(base + "/resumed/badnets/defense-anp/result.json"), badnetsAt, "finished cells are kept")

        // A changed CLP setting reruns the CLP cells only.
        let anpAt = try modified(base + "/resumed/blend/defense-anp/result.json")
        let clpAt = try modified(base + "/resumed/blend/defense-clp/result.json")
        let changed = try tinySettings(["defense.settings": ["anp": ["iterations": 3], "clp": ["u": 1]]])
        let rerun = try run(changed, base + "/resumed", resume: true)
        XCTAssertEqual(try modified(base + "/resumed/blend/defense-anp/result.json"), anpAt)
        XCTAssertNotEqual(try modified(base + "/resumed/blend/defense-clp/result.json"), clpAt)
        XCTAssertEqual(try DefenseResult.read(path: base + "/resumed/blend/defense-clp/result.json").settings, ["u": 1])
        XCTAssertEqual(numbers(rerun).count, 4)
    }

    /// Detectors in the matrix: each inspects the set the poison stage wrote (the set training
    /// used), its leaderboard entry equals its result.json, and the report shows the table.
    func testDetectorsInspectThePoisonStagesSetAndFillTheDetectionTable() throws {
        let base = try temporaryDirectory()
        let settings = try tinySettings(["matrix.attacks": ["badnets"], "matrix.defenses": [String](),
                                         "matrix.detectors": ["spectral", "strip"],
                                         "defense.settings": ["strip": ["blends": 4]]])
        let board = try run(settings, base)
        XCTAssertEqual(board.rows, [])
        XCTAssertEqual(board.detection.map { "\($0.attack)/\($0.method)" }, ["badnets/spectral", "badnets/strip"])
        let set = try PoisonedSetFolder.read(directory: base + "/badnets/poison")
        XCTAssertEqual(set.count, 512)
        let poisonJSON = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: base + "/badnets/poison/poison.json"))) as? [String: Any])
        XCTAssertEqual(poisonJSON["poisoned"] as? Int, set.poisonedIndices.count)
        XCTAssertGreaterThan(set.poisonedIndices.count, 0)
        XCTAssertTrue(set.poisonedIndices.allSatisfy { set.images.labels[$0] == 0 }, "BadNets relabels to the target")
        for row in board.detection {
            let result = try DetectionResult.read(path: base + "/badnets/detect-\(row.method)/result.json")
            XCTAssertEqual(result.images, 512)
            XCTAssertEqual(result.poisoned, set.poisonedIndices.count)
            XCTAssertEqual(row.f1.mean, result.metrics.f1)
            XCTAssertEqual(row.auroc?.mean, result.metrics.auroc)
            XCTAssertEqual(row.fpr.mean, result.metrics.fpr)
        }
        XCTAssertEqual(try DetectionResult.read(path: base + "/badnets/detect-strip/result.json").settings["blends"], 4)
        XCTAssertEqual(try DetectionResult.read(path: base + "/badnets/detect-strip/result.json").cleanImages, 500, "the default share 0.01")
        let csv = try String(contentsOfFile: base + "/detection.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.map(String.init).first, Leaderboard.detectionCSVHeader)
        XCTAssertTrue(csv[1].hasPrefix("badnets,spectral,resnet18,0,"), String(csv[1]))
        XCTAssertEqual(try Leaderboard.read(path: base + "/leaderboard.json"), board)
        let report = try String(contentsOfFile: base + "/report.md", encoding: .utf8)
        XCTAssertTrue(report.contains("Poisoned-sample detection: attacks x methods"))

        // An unknown detector or detector setting is a config error naming the key.
        XCTAssertThrowsError(try tinySettings(["matrix.detectors": ["sentinet"]]).validate()) {
            XCTAssertTrue("\($0)".contains("matrix.detectors: unknown detector \"sentinet\""), "\($0)")
        }
        XCTAssertThrowsError(try tinySettings(["defense.settings": ["strip": ["frr": 1.0]]]).validate()) {
            XCTAssertTrue("\($0)".contains("defense.settings.strip: strip: frr 1 is out of range"), "\($0)")
        }
    }

    /// `defense.settings.<name>.clean_frac` is that defense's or detector's own clean share, over
    /// `defense.clean_frac` and the default; the defense itself never sees the key.
    func testADefensesOwnCleanShareOverridesTheRuns() throws {
        let base = try temporaryDirectory()
        let settings = try tinySettings(["matrix.attacks": ["badnets"], "matrix.defenses": ["clp", "anp"],
                                         "matrix.detectors": ["strip"], "defense.clean_frac": 0.006,
                                         "defense.settings": ["anp": ["iterations": 3, "clean_frac": 0.01, "acc_ratio": 0.1, "holdout": 0.8],
                                                              "strip": ["blends": 2, "clean_frac": 0.004]]])
        _ = try run(settings, base)
        let anp = try DefenseResult.read(path: base + "/badnets/defense-anp/result.json")
        XCTAssertEqual(anp.cleanImages, 500)
        XCTAssertNil(anp.settings["clean_frac"])
        XCTAssertEqual(anp.settings["holdout"], 0.8)
        XCTAssertEqual(try DefenseResult.read(path: base + "/badnets/defense-clp/result.json").cleanImages, 300, "the run's share")
        let strip = try DetectionResult.read(path: base + "/badnets/detect-strip/result.json")
        XCTAssertEqual(strip.cleanImages, 200)
        XCTAssertNil(strip.settings["clean_frac"])
        // The masks are fitted on the first 100 of the 500 and the threshold chosen on the other 400.
        let log = try String(contentsOfFile: base + "/badnets/defense-anp/defend_log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains("400 held-out images"), log)

        for (value, expected) in [(0.0, "defense.settings.anp.clean_frac"), (1.5, "defense.settings.anp.clean_frac")] {
            XCTAssertThrowsError(try tinySettings(["defense.settings": ["anp": ["clean_frac": value]]]).validate()) {
                XCTAssertTrue("\($0)".contains(expected) && "\($0)".contains("out of range"), "\($0)")
            }
        }
        // ABL uses no defender data.
        XCTAssertThrowsError(try tinySettings(["defense.settings": ["abl": ["clean_frac": 0.05]]]).validate()) {
            XCTAssertTrue("\($0)".contains("defense.settings.abl.clean_frac: is not a setting of abl"), "\($0)")
        }
    }

    /// `attack.settings.<attack>` reaches that attack's poison stage only: its rate, its trigger and
    /// its config.json, which a change reruns.
    func testAnAttacksOwnRateAndTriggerReachItsPoisonStageOnly() throws {
        let base = try temporaryDirectory()
        var settings = try tinySettings(["matrix.attacks": ["badnets", "ftrojan"], "matrix.defenses": [String](),
                                         "matrix.detectors": ["spectral"],
                                         "attack.settings": ["ftrojan": ["poison_rate": 0.3, "magnitude": 50]]])
        _ = try run(settings, base)
        let ftrojan = try PoisonedSetFolder.read(directory: base + "/ftrojan/poison")
        XCTAssertEqual(ftrojan.poisonedIndices.count, Int((0.3 * 512).rounded()), "round(rate x images) at ftrojan's own rate")
        let badnets = try PoisonedSetFolder.read(directory: base + "/badnets/poison")
        let nonTarget = (0..<512).filter { badnets.images.labels[$0] != 0 || badnets.poisonedIndices.contains($0) }.count
        XCTAssertEqual(badnets.poisonedIndices.count, Int(0.1 * Double(nonTarget)), "the other attack keeps the run's rate")
        guard case .ftrojan(let trigger) = try TriggerInfo.read(path: base + "/ftrojan/poison/" + TriggerInfo.fileName).trigger else {
            return XCTFail("not an FTrojan trigger")
        }
        XCTAssertEqual(trigger.magnitude, 50)
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: base + "/ftrojan/poison/config.json"))) as? [String: Any])
        XCTAssertEqual(config["poison_rate"] as? Double, 0.3)
        XCTAssertEqual(config["trigger_settings"] as? [String: Double], ["magnitude": 50])

        // A changed trigger setting reruns that attack's stages, not the other's.
        let badnetsModel = try modified(base + "/badnets/train/model_last.safetensors")
        let ftrojanModel = try modified(base + "/ftrojan/train/model_last.safetensors")
        settings.attack.settings["ftrojan"]?["magnitude"] = 40
        _ = try run(settings, base, resume: true)
        XCTAssertEqual(try modified(base + "/badnets/train/model_last.safetensors"), badnetsModel)
        XCTAssertNotEqual(try modified(base + "/ftrojan/train/model_last.safetensors"), ftrojanModel)
    }

    /// ABL in the matrix: a fresh model trained with ABL on the poison stage's set, judged against
    /// the undefended model the other defenses start from; skipped for per-batch attacks.
    func testABLTrainsItsOwnModelOnThePoisonStagesSet() throws {
        let base = try temporaryDirectory()
        let abl: [String: Double] = ["isolation_epochs": 1, "finetuning_epochs": 1, "unlearning_epochs": 1, "isolation_ratio": 0.02,
                                     "batch_size": 128, "isolation_lr": 0.05]
        let settings = try tinySettings(["matrix.attacks": ["badnets", "wanet"], "matrix.defenses": ["clp", "abl"],
                                         "defense.settings": ["abl": abl]])
        let board = try run(settings, base)
        XCTAssertEqual(board.rows.map { "\($0.attack)/\($0.defense)" }, ["badnets/clp", "badnets/abl", "wanet/clp"],
                       "WaNet poisons per batch: nothing fixed for ABL to isolate")
        let result = try DefenseResult.read(path: base + "/badnets/defense-abl/result.json")
        XCTAssertEqual(result.before, try DefenseResult.read(path: base + "/badnets/defense-clp/result.json").before,
                       "judged against the same undefended model")
        XCTAssertEqual(result.settings["isolation_ratio"], 0.02)
        XCTAssertTrue(settings.training.augment)
        XCTAssertEqual(result.settings["augment"], 1, "the quick preset trains with crops and flips, and so does its ABL")
        let ablResult = try ABLResult.read(path: base + "/badnets/defense-abl/" + ABLResult.fileName)
        let set = try PoisonedSetFolder.read(directory: base + "/badnets/poison")
        XCTAssertEqual(ablResult.images, set.count)
        XCTAssertEqual(ablResult.isolation.isolated.count, Int(Double(set.count) * 0.02))
        XCTAssertEqual(ablResult.isolation.poisonedImages, set.poisonedIndices.count, "scored by the poison stage's truth")
        XCTAssertEqual(ablResult.phases.map(\.name), ["isolation", "finetuning", "unlearning"])
        XCTAssertEqual(result.after, ablResult.final, "the stored model is the one ABL ended with")
        let row = try XCTUnwrap(board.rows.first { $0.defense == "abl" })
        XCTAssertEqual(row.asr.mean, try XCTUnwrap(result.after.attackSuccessRate))
        XCTAssertEqual(row.cleanAcc.mean, result.after.cleanAccuracy)
        let defended = try SafeTensors.read(path: base + "/badnets/defense-abl/model.safetensors")
        let undefended = try SafeTensors.read(path: base + "/badnets/train/model_last.safetensors")
        XCTAssertEqual(defended.metadata["defense"], "abl")
        XCTAssertNotEqual(defended.tensors["conv1.weight"], undefended.tensors["conv1.weight"], "a model of its own")

        // A changed ABL setting reruns ABL only; a wrong one is a config error naming the key.
        let clpAt = try modified(base + "/badnets/defense-clp/result.json")
        let changed = try tinySettings(["matrix.attacks": ["badnets", "wanet"], "matrix.defenses": ["clp", "abl"],
                                        "defense.settings": ["abl": abl.merging(["unlearning_epochs": 2]) { $1 }]])
        _ = try run(changed, base, resume: true)
        XCTAssertEqual(try modified(base + "/badnets/defense-clp/result.json"), clpAt)
        XCTAssertEqual(try ABLResult.read(path: base + "/badnets/defense-abl/" + ABLResult.fileName).phases.last?.epochs, 2)
        XCTAssertThrowsError(try tinySettings(["defense.settings": ["abl": ["isolation_ratio": 2.0]]]).validate()) {
            XCTAssertTrue("\($0)".contains("defense.settings.abl: abl: isolation_ratio 2 is out of range"), "\($0)")
        }
        XCTAssertThrowsError(try tinySettings(["defense.settings": ["abl": ["flood": 1.0]]]).validate()) {
            XCTAssertTrue("\($0)".contains("defense.settings.abl.flood: is not a setting of abl"), "\($0)")
        }
    }

    /// Stage configs name the split by its content: a run folder moved elsewhere and resumed with
    /// the same permutation at another path (another checkout, a cluster node) reruns nothing.
    func testAMovedRunWithTheSplitElsewhereResumesWithoutRerunning() throws {
        let base = try temporaryDirectory()
        let settings = try tinySettings(["matrix.attacks": ["badnets"], "matrix.defenses": ["clp"]])
        _ = try run(settings, base + "/first")
        try FileManager.default.copyItem(atPath: base + "/first", toPath: base + "/moved")
        try FileManager.default.copyItem(atPath: try XCTUnwrap(settings.data.splitFile), toPath: base + "/split-copy.txt")
        let trainedAt = try modified(base + "/moved/badnets/train/model_last.safetensors")
        let clpAt = try modified(base + "/moved/badnets/defense-clp/result.json")
        _ = try run(try tinySettings(["matrix.attacks": ["badnets"], "matrix.defenses": ["clp"],
                                      "data.split_file": base + "/split-copy.txt"]), base + "/moved", resume: true)
        XCTAssertEqual(try modified(base + "/moved/badnets/train/model_last.safetensors"), trainedAt)
        XCTAssertEqual(try modified(base + "/moved/badnets/defense-clp/result.json"), clpAt)
        let config = try String(contentsOfFile: base + "/moved/badnets/train/config.json", encoding: .utf8)
        XCTAssertTrue(config.contains("\"split\" : \"permutation md5 "), config)
    }
}
