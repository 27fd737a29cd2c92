import Attacks
import Defenses
import Foundation
import Reports
import XCTest
@testable import Experiments

/// YAML configs: layering (defaults <- preset <- file <- flags), strict keys and types, and the
/// round trip YAML -> value -> config.json -> value.
final class ExperimentConfigTests: XCTestCase {
    private func file(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "config-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testAFileOverAPresetAndFlagsOverTheFileRoundTrip() throws {
        let path = try file("""
            preset: quick
            training: {epochs: 3, milestones: [2]}
            attack: {target: 5, pgd: {eps: 0.03}}
            defense:
              settings: {clp: {u: 2.5}}
              clean_frac: 0.05
            matrix: {attacks: [badnets, blend], defenses: [clp, anp], seeds: [0, 1]}
            """)
        let settings = try ExperimentConfigFile.settings(preset: "homework", configFile: path,
                                                         flags: ["training.epochs": 4, "seed": UInt64(7)])
        XCTAssertEqual(settings.preset, "quick", "the file's preset wins over the flag's")
        XCTAssertEqual(settings.model.width, 16, "from the quick preset")
        XCTAssertEqual(settings.training.epochs, 4, "the flag wins over the file")
        XCTAssertEqual(settings.training.milestones, [2])
        XCTAssertEqual(settings.training.lr, 0.05, "from the quick preset")
        XCTAssertEqual(settings.training.momentum, 0.9, "from the defaults")
        XCTAssertEqual(settings.attack.target, 5)
        XCTAssertEqual(settings.attack.pgd.eps, 0.03)
        XCTAssertEqual(settings.attack.pgd.iterations, 20, "a nested section merges key by key")
        XCTAssertEqual(settings.defense.settings, ["clp": ["u": 2.5]])
        XCTAssertEqual(settings.defense.cleanFrac, 0.05)
        XCTAssertEqual(settings.seed, 7)
        XCTAssertEqual(try settings.attackList(), [.badnets, .blend])
        XCTAssertEqual(try settings.cells().map(\.seed), [0, 1])

        // YAML -> value -> YAML file -> value, and value -> config.json -> value.
        let yaml = try ExperimentConfigFile.yaml(settings)
        let again = try ExperimentConfigFile.settings(preset: "homework", configFile: try file(yaml))
        XCTAssertEqual(again, settings)
        let json = ExperimentConfigFile.jsonObject(settings)
        XCTAssertEqual((json["training"] as? [String: Any])?["batch_size"] as? Int, 128, "config.json keys are snake_case")
        let data = try JSONSerialization.data(withJSONObject: json)
        let decoded = try ExperimentConfigFile.settings(json: try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any]),
                                                        source: "config.json")
        XCTAssertEqual(decoded, settings)
    }

    func testBadConfigsNameTheFileTheKeyAndWhatIsExpected() throws {
        let cases: [(String, String, String)] = [
            ("trainig: {epochs: 2}", "trainig", "unknown key; expected one of preset, data, model, training"),
            ("training: {epochs: two}", "training.epochs", "expected an integer"),
            ("training: {augment: 3}", "training.augment", "expected true or false"),
            ("training: {epochs: 0}", "training.epochs", "is out of range: expected at least 1"),
            ("training: [1, 2]", "training", "expected a mapping"),
            ("attack: {pgd: {stepsize: 1}}", "attack.pgd.stepsize", "unknown key; expected one of iterations, restarts, eps, step"),
            ("matrix: {attacks: [badnets, trojan]}", "matrix.attacks", "unknown attack \"trojan\""),
            ("matrix: {defenses: [clp, magic]}", "matrix.defenses", "unknown defense \"magic\""),
            ("defense: {settings: {clp: {v: 1}}}", "defense.settings.clp.v", "is not a setting of clp"),
            ("defense: {settings: {magic: {v: 1}}}", "defense.settings.magic", "unknown defense"),
            ("model: {name: resnet50}", "model.name", "unknown model \"resnet50\""),
            ("attack: {settings: {wanett: {poison_rate: 0.3}}}", "attack.settings.wanett", "unknown attack; expected one of badnets"),
            ("attack: {settings: {wanet: {magnitude: 3}}}", "attack.settings.wanet.magnitude",
             "is not a setting of wanet; its settings are cross_ratio, grid_rescale, k, poison_rate, s"),
            ("attack: {settings: {badnets: {k: 4}}}", "attack.settings.badnets.k", "its settings are poison_rate"),
            ("attack: {settings: {bpp: {poison_rate: 1.5}}}", "attack.settings.bpp.poison_rate", "is out of range: expected a number in [0, 1]"),
            ("attack: {settings: {wanet: {k: 2.5}}}", "attack.settings.wanet", "wanet k 2.5 is not allowed; expected a whole number"),
            ("attack: {settings: {bpp: {neg_ratio: 2}}}", "attack.settings.bpp", "negative ratio 2.0 is not allowed"),
            ("attack: {settings: {ftrojan: {window: 5}}}", "attack.settings.ftrojan", "5"),
            ("attack: {settings: {bpp: {dithering: 2}}}", "attack.settings.bpp", "0 (off) or 1 (on)"),
            // The quick preset chooses its threshold (acc_ratio): a fixed one as well is ambiguous.
            ("defense: {pruning: {threshold: 0.2}}", "defense.pruning", "set exactly one of defense.pruning.threshold"),
            ("defense: {pruning: {acc_ratio: null}}", "defense.pruning", "set exactly one of defense.pruning.threshold"),
            ("defense: {pruning: {acc_ratio: 0}}", "defense.pruning.acc_ratio", "is out of range: expected a number in (0, 1]"),
            // The held-out images come from the defender's share, after ANP's 1%: 0.1 - 0.01 at most.
            ("defense: {pruning: {holdout_frac: 0.095}}", "defense.pruning.holdout_frac",
             "reaches past the defender's share data.val_frac 0.1 into the training images; expected at most 0.09"),
            ("defense: {pruning: {holdout_frac: -0.1}}", "defense.pruning.holdout_frac", "is out of range: expected a number in [0, 1]"),
            ("- just\n- a list", "(document)", "expected a mapping"),
            ("training: {epochs: [", "(document)", "is not valid YAML"),
        ]
        for (text, key, expected) in cases {
            let path = try file(text)
            XCTAssertThrowsError(try ExperimentConfigFile.settings(preset: "quick", configFile: path), text) { error in
                guard let error = error as? ConfigError else { return XCTFail("\(text): \(error)") }
                XCTAssertEqual(error.source, path, text)
                XCTAssertEqual(error.key, key, text)
                XCTAssertTrue(error.message.contains(expected), "\(text): \(error)")
            }
        }
        XCTAssertThrowsError(try ExperimentConfigFile.settings(preset: "huge")) { error in
            XCTAssertTrue("\(error)".contains("unknown preset \"huge\"; expected one of benchmark, homework, quick"), "\(error)")
        }
    }

    /// `attack.settings.<attack>`: one attack's rate and trigger over the run's, and what the
    /// runner builds from them; the other attacks keep the run's.
    func testAnAttacksOwnSettingsOverrideTheRunsForThatAttackOnly() throws {
        let path = try file("""
            attack:
              poison_rate: 0.05
              settings: {wanet: {poison_rate: 0.3, k: 8, cross_ratio: 1}, ftrojan: {magnitude: 50}, bpp: {dithering: 1}}
            """)
        let attack = try ExperimentConfigFile.settings(preset: "homework", configFile: path).attack
        XCTAssertEqual(attack.poisonRate(for: .wanet), 0.3)
        XCTAssertEqual(attack.poisonRate(for: .ftrojan), 0.05, "no own rate: the run's")
        XCTAssertEqual(attack.poisonRate(for: .badnets), 0.05)
        let wanet = try attack.dataTriggers(for: .wanet)
        XCTAssertEqual(wanet.wanetK, 8)
        XCTAssertEqual(wanet.crossRatio, 1)
        XCTAssertEqual(wanet.wanetS, DataTriggerSettings().wanetS, "unset: the default")
        XCTAssertEqual(try attack.dataTriggers(for: .ftrojan).ftrojanMagnitude, 50)
        XCTAssertTrue(try attack.dataTriggers(for: .bpp).dithering)
        XCTAssertEqual(try attack.dataTriggers(for: .sig), DataTriggerSettings(), "another attack's settings do not leak")
        // The names round-trip through the library's own list.
        let named = DataTriggerSettings().named(for: .wanet)
        XCTAssertEqual(try DataTriggerSettings().setting(named, for: .wanet), DataTriggerSettings())
        // The flag's rate is every attack's, the attack's own included.
        let flagged = try ExperimentConfigFile.settings(preset: "homework", configFile: path,
                                                        flags: ["attack.poison_rate": 0.2, "attack.settings.wanet.poison_rate": NSNull(),
                                                                "attack.settings.sig.poison_rate": NSNull()]).attack
        XCTAssertEqual(flagged.poisonRate(for: .wanet), 0.2)
        XCTAssertEqual(flagged.settings["wanet"], ["k": 8, "cross_ratio": 1], "the trigger settings stay")
        XCTAssertNil(flagged.settings["sig"], "clearing an attack that had none leaves no entry")
    }

    func testPresetsAreTheFilesAndBenchmarkRunsEveryAttackAndDefense() throws {
        XCTAssertEqual(ExperimentConfigFile.presetNames, ["benchmark", "homework", "quick"])
        XCTAssertEqual(try ExperimentConfigFile.settings(preset: "homework"), { var s = ExperimentSettings(); s.preset = "homework"; return s }(),
                       "homework is the reference's defaults")
        let benchmark = try ExperimentConfigFile.settings(preset: "benchmark")
        let quick = try ExperimentConfigFile.settings(preset: "quick")
        XCTAssertEqual(benchmark.training, quick.training, "benchmark starts from quick")
        XCTAssertEqual(try benchmark.attackList().count, PoisonType.experimentAttacks.count)
        XCTAssertEqual(try benchmark.defenseList(), DefenseRegistry.names + ["abl"], "the registry's defenses, then the training-time one")
        XCTAssertEqual(try benchmark.detectorList(), DetectionMethod.allCases)
        // At the quick scale: no defense keeps a reference length of 100 epochs or rounds.
        for name in try benchmark.defenseList() {
            let merged = try XCTUnwrap(ExperimentSettings.defenseDefaults(name)).merging(benchmark.defense.settings[name] ?? [:]) { $1 }
            for (key, value) in merged where key.hasSuffix("epochs") || key == "n_rounds" || key == "nc_epoch" {
                XCTAssertLessThanOrEqual(value, 20, "benchmark: \(name).\(key)")
            }
        }
    }

    /// Reports order attack folders by their own list (Reports does not depend on Attacks): it must
    /// be the runner's, or a new attack sorts after the unknown folders.
    func testReportsKnowEveryAttackInTheRunnersOrder() {
        XCTAssertEqual(RunFolder.knownAttacks, PoisonType.experimentAttacks.map(\.rawValue))
    }
}
