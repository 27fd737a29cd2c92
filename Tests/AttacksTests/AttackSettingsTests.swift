import Datasets
import Formats
import Foundation
import Support
import XCTest
@testable import Attacks
import TestSupport

final class AttackSettingsTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "attack-settings-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testDefaultAlphaPerAttackAndOverride() {
        XCTAssertEqual(AttackSettings(poisonType: .badnets).effectiveAlpha, 1)
        XCTAssertEqual(AttackSettings(poisonType: .blend).effectiveAlpha, 0.2)
        XCTAssertEqual(AttackSettings(poisonType: .cleanLabel).effectiveAlpha, 1)
        XCTAssertEqual(AttackSettings(poisonType: .blend, alpha: 0.35).effectiveAlpha, 0.35)
    }

    func testBenignHasNoTriggerAndNothingPoisoned() throws {
        let settings = AttackSettings(poisonType: .benign)
        let (info, note) = try settings.triggerInfo()
        XCTAssertNil(info)
        XCTAssertNil(note)
        let clean = PoisoningTests.syntheticSet(count: 10)
        XCTAssertEqual(try settings.trainingSet(attackerSet: clean, triggerInfo: nil), PoisonedTrainingSet(clean: clean))
    }

    func testBadNetsTrainingSetIsThePoisoningOfTheAttackerSet() throws {
        let settings = AttackSettings(poisonType: .badnets, target: 4, rate: 0.2, seed: 9)
        let info = try XCTUnwrap(try settings.triggerInfo().info)
        XCTAssertEqual(info.trigger, .pattern(try .checkerboard1Corner()))
        XCTAssertEqual(info.target, 4)
        XCTAssertEqual(info.poisonType, "badnets")
        let clean = PoisoningTests.syntheticSet(count: 50)
        XCTAssertEqual(try settings.trainingSet(attackerSet: clean, triggerInfo: info),
                       try Poisoning.trainingSet(clean, trigger: info.trigger, target: 4, rate: 0.2, seed: 9))
    }

    func testBlendWithoutPatternUsesThePapersShippedPattern() throws {
        let (info, note) = try AttackSettings(poisonType: .blend, seed: 12).triggerInfo()
        XCTAssertNil(note)
        XCTAssertEqual(info?.patternSource, Trigger.referencePatternFile)
        guard let data = try SharedData.directory() else { return }
        let (shared, _) = try AttackSettings(poisonType: .blend, patternPath: data + "/anp/cifar_gaussian_noise.png").triggerInfo()
        XCTAssertEqual(info?.trigger.pattern, shared?.trigger.pattern, "the shipped pattern is the papers'")
    }

    func testBlendWithSeededPatternUsesSeededNoiseAndSaysSo() throws {
        let (info, note) = try AttackSettings(poisonType: .blend, patternPath: Trigger.seededPatternFlag, seed: 12).triggerInfo()
        XCTAssertEqual(info?.trigger.pattern, try .gaussianNoise(pattern: Trigger.seededNoisePattern(seed: 12), channels: 3, alpha: 0.2))
        XCTAssertEqual(info?.patternSource, "seeded noise (seed 12)")
        XCTAssertTrue(note?.contains("seeded uniform noise (seed 12)") == true, note ?? "no note")
    }

    func testBlendReadsThePapersPatternPNG() throws {
        guard let data = try SharedData.directory() else { throw XCTSkip("shared data not present") }
        let path = data + "/anp/cifar_gaussian_noise.png"
        let (info, note) = try AttackSettings(poisonType: .blend, patternPath: path).triggerInfo()
        XCTAssertNil(note)
        let trigger = try XCTUnwrap(info?.trigger.pattern)
        XCTAssertEqual(trigger.patternChannels, 3)
        // Pixels decoded independently (zlib + PNG filters in Python).
        XCTAssertEqual(Array(trigger.pattern[0..<6]), [52, 209, 225, 35, 123, 153])
        XCTAssertEqual(Array(trigger.pattern[(31 * 32 + 31) * 3..<(31 * 32 + 31) * 3 + 3]), [22, 84, 48])
        XCTAssertEqual(Array(trigger.pattern[(15 * 32 + 7) * 3..<(15 * 32 + 7) * 3 + 3]), [2, 236, 51])
        XCTAssertEqual(trigger.pattern.reduce(0, +), 382_983)
    }

    func testBadSettingsAreRefusedClearly() throws {
        let wrongSize = directory + "/pattern.png"
        try PNG.write(PNGImage(width: 31, height: 32, channels: 3, pixels: [UInt8](repeating: 7, count: 31 * 32 * 3)), path: wrongSize)
        XCTAssertThrowsError(try AttackSettings(poisonType: .blend, patternPath: wrongSize).triggerInfo()) { error in
            XCTAssertEqual("\(error)", "\(wrongSize): trigger pattern is 31x32; expected a 32x32 image")
        }
        XCTAssertThrowsError(try AttackSettings(poisonType: .badnets, patternPath: wrongSize).triggerInfo()) { error in
            XCTAssertTrue("\(error)".contains("only Blend takes a pattern image"), "\(error)")
        }
        XCTAssertThrowsError(try AttackSettings(poisonType: .cleanLabel).triggerInfo()) { error in
            XCTAssertTrue("\(error)".contains("--clb-dir"), "\(error)")
        }
        XCTAssertThrowsError(try AttackSettings(poisonType: .badnets, rate: 2).triggerInfo()) { error in
            XCTAssertEqual("\(error)", "poison rate 2.0 is not allowed; expected a number in [0, 1]")
        }
        XCTAssertThrowsError(try AttackSettings(poisonType: .badnets, alpha: -0.5).validate())
    }

    func testCleanLabelReadsItsFolderAndChecksTheTarget() throws {
        let clean = PoisoningTests.syntheticSet(count: 20)
        var flags = [Bool](repeating: false, count: 20)
        flags[3] = true  // label 3
        flags[13] = true  // label 3
        let folderSet = PoisonedTrainingSet(images: clean, isPoisoned: flags)
        try PoisonedSetFolder.write(folderSet, to: directory)

        let settings = AttackSettings(poisonType: .cleanLabel, target: 3, cleanLabelDirectory: directory)
        let info = try XCTUnwrap(try settings.triggerInfo().info)
        XCTAssertEqual(info.trigger, .pattern(try .checkerboard4Corner()))
        XCTAssertEqual(try settings.trainingSet(attackerSet: clean, triggerInfo: info), folderSet)

        XCTAssertThrowsError(try settings.trainingSet(attackerSet: clean.subset(Array(0..<19)), triggerInfo: info)) { error in
            XCTAssertTrue("\(error)".contains("holds 20 images but the attacker split has 19"), "\(error)")
        }
        let wrongTarget = AttackSettings(poisonType: .cleanLabel, target: 5, cleanLabelDirectory: directory)
        XCTAssertThrowsError(try wrongTarget.trainingSet(attackerSet: clean, triggerInfo: info)) { error in
            XCTAssertTrue("\(error)".contains("poison target 5 is not allowed; expected 3, the class the clean-label folder"), "\(error)")
        }
    }
}
