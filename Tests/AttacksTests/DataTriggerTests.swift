import Datasets
import Formats
import Foundation
import Support
import XCTest
@testable import Attacks
import TestSupport

/// SIG, BPP, WaNet and FTrojan against BackdoorBench's arithmetic (Fixtures/attacks/data_triggers.json,
/// written by scripts/fixtures/make_data_trigger_fixtures.py with torch, numpy and OpenCV).
final class DataTriggerTests: XCTestCase {
    static let fixture: [String: Any] = {
        let path = SharedData.packageRoot() + "/Fixtures/attacks/data_triggers.json"
        let data = try! Data(contentsOf: URL(fileURLWithPath: path))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    var images: ImageSet {
        get throws {
            let pixels = try (Self.fixture["images_hex"] as! [String]).map(TriggerFixture.hexBytes)
            return ImageSet(pixels: pixels.flatMap { $0 }, labels: [Int](repeating: 1, count: pixels.count))
        }
    }

    func entry(_ name: String) throws -> [String: Any] { try XCTUnwrap(Self.fixture[name] as? [String: Any], name) }
    func expected(_ name: String, key: String = "expected_hex") throws -> [[UInt8]] {
        try (try entry(name)[key] as! [String]).map(TriggerFixture.hexBytes)
    }

    /// Applies `trigger` to every fixture image and returns them one by one.
    func poisoned(_ trigger: some ImageTrigger) throws -> [[UInt8]] {
        var set = try images
        trigger.apply(to: &set, at: Array(0..<set.count))
        return (0..<set.count).map { Array(set.image($0)) }
    }

    // MARK: Byte for byte

    func testSIGMatchesTheReferenceByteForByte() throws {
        XCTAssertEqual(try poisoned(try SIGTrigger()), try expected("sig"))
        XCTAssertEqual(try poisoned(try SIGTrigger(delta: 20, frequency: 4)), try expected("sig_delta_20_f_4"))
        // Column 0 of the sinusoid is 0, so a black image stays black there, and negative values clip.
        XCTAssertEqual(try SIGTrigger().columnSignal[0], 0)
        XCTAssertLessThan(try SIGTrigger().columnSignal[4], 0)
    }

    func testBPPSqueezeMatchesTheReferenceByteForByte() throws {
        XCTAssertEqual(try poisoned(try BPPSqueeze()), try expected("bpp"))
        XCTAssertEqual(try poisoned(try BPPSqueeze(squeezeNum: 5)), try expected("bpp_5"))
        XCTAssertEqual(try poisoned(try BPPSqueeze(dithering: true)), try expected("bpp_dither"))
        // Eight levels: every stored value is one of floor(k x 255 / 7).
        let levels = Set((0...7).map { UInt8(Double($0) * 255 / 7) })
        XCTAssertTrue(try poisoned(try BPPSqueeze()).joined().allSatisfy(levels.contains))
    }

    func testWaNetGridsMatchTorch() throws {
        let e = try entry("wanet")
        let ins = (e["ins"] as! [Double]).map(Float.init)
        let torchNoise = (e["noise_grid"] as! [Double]).map(Float.init)
        let torchIdentity = (e["identity_grid"] as! [Double]).map(Float.init)
        // The script saved ins after its scaling (mean absolute value 1), so ours scales by ~1 again.
        let ours = WaNetWarp.noiseGrid(ins: ins, k: 4)
        let worstNoise = zip(ours, torchNoise).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worstNoise, 1e-5, "bicubic upsampling vs F.interpolate")
        XCTAssertLessThan(zip(WaNetWarp.identity, torchIdentity).map { abs($0 - $1) }.max()!, 1e-6, "torch.linspace")
    }

    func testWaNetWarpGivenItsGridsIsWithinOneGreyLevel() throws {
        let e = try entry("wanet")
        let warp = try WaNetWarp(k: 4, s: 0.5, gridRescale: 1, noiseGrid: (e["noise_grid"] as! [Double]).map(Float.init),
                                 identityGrid: (e["identity_grid"] as! [Double]).map(Float.init))
        let ours = try poisoned(warp), reference = try expected("wanet")
        var differing = 0
        for (a, b) in zip(ours.joined(), reference.joined()) {
            XCTAssertLessThanOrEqual(abs(Int(a) - Int(b)), 1)
            if a != b { differing += 1 }
        }
        // Float32 there, float64 here: only values at a rounding boundary may differ.
        XCTAssertLessThan(differing, ours.joined().count / 100)
        XCTAssertNotEqual(ours, try images.pixels.chunked(3072), "the warp moves pixels")
    }

    func testFTrojanMatchesOpenCVArithmetic() throws {
        for name in ["ftrojan", "ftrojan_window_8"] {
            let e = try entry(name)
            let trigger = try FTrojanTrigger(channels: e["channels"] as! [Int], window: e["window"] as! Int,
                                             magnitude: e["magnitude"] as! Double, positions: e["positions"] as! [[Int]])
            let ours = try poisoned(trigger), reference = try expected(name), ambiguous = try expected(name, key: "ambiguous_hex")
            var exact = 0
            for image in ours.indices {
                for pixel in 0..<1024 {
                    for c in 0..<3 {
                        let (a, b) = (Int(ours[image][pixel * 3 + c]), Int(reference[image][pixel * 3 + c]))
                        if ambiguous[image][pixel] == 0 {
                            XCTAssertEqual(a, b, "\(name) image \(image) pixel \(pixel) channel \(c)")
                            exact += 1
                        } else {
                            // The reference's float round trip truncated one off a plane value: at most 2 in RGB.
                            XCTAssertLessThanOrEqual(abs(a - b), 2, "\(name) image \(image) pixel \(pixel)")
                        }
                    }
                }
            }
            XCTAssertGreaterThan(exact, ours.count * 3072 * 9 / 10, "\(name): most pixels are exact")
        }
        // The saturated image (3) wraps where a bump leaves [0, 255], as astype(uint8) does.
        XCTAssertNotEqual(try poisoned(try FTrojanTrigger())[3], try images.pixels.chunked(3072)[3])
    }

    func testOpenCVColourConversionsRoundTripGreys() {
        for v in [0, 1, 127, 128, 254, 255] {
            let ycc = FTrojanTrigger.yCrCb(UInt8(v), UInt8(v), UInt8(v))
            XCTAssertEqual(ycc, [v, 128, 128])
            XCTAssertEqual(FTrojanTrigger.rgb(ycc), [v, v, v])
        }
    }

    // MARK: Trigger information

    func testEveryDataTriggerSurvivesTheTriggerInformationFile() throws {
        let folder = NSTemporaryDirectory() + "data-trigger-info-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let triggers: [(String, AttackTrigger)] = [
            ("sig", .sig(try SIGTrigger(delta: 30, frequency: 5))),
            ("wanet", .wanet(try WaNetWarp.random(k: 6, s: 0.75, gridRescale: 1.2, seed: 3))),
            ("bpp", .bpp(try BPPSqueeze(squeezeNum: 16, dithering: true))),
            ("ftrojan", .ftrojan(try FTrojanTrigger(channels: [0, 2], window: 16, magnitude: 12.5, positions: [[7, 7], [15, 15]]))),
        ]
        for (name, trigger) in triggers {
            let info = try TriggerInfo(poisonType: name, trigger: trigger, target: 4, notes: ["poison_rate": "0.1"])
            let path = folder + "/\(name).safetensors"
            try info.write(path: path)
            let back = try TriggerInfo.read(path: path)
            XCTAssertTrue(back == info, "\(name) reads back equal")
            XCTAssertEqual(back.notes, ["poison_rate": "0.1"], name)
            XCTAssertEqual(try poisoned(back.trigger), try poisoned(trigger), name)
            XCTAssertEqual(back.trigger.typeName, name)
        }
        // WaNet keeps its grids as BackdoorBench does: 1 x 32 x 32 x 2 float32.
        let file = try SafeTensors.read(path: folder + "/wanet.safetensors").tensors.mapValues(\.shape)
        XCTAssertEqual(file["noise_grid"], [1, 32, 32, 2])
        XCTAssertEqual(file["identity_grid"], [1, 32, 32, 2])
    }

    func testMissingDataTriggerSettingsAreNamed() throws {
        let folder = NSTemporaryDirectory() + "data-trigger-bad-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let info = try TriggerInfo(poisonType: "bpp", trigger: .bpp(try BPPSqueeze()), target: 0)
        var metadata = info.metadata
        metadata["squeeze_num"] = "many"
        let path = folder + "/bad.safetensors"
        try SafeTensors(tensors: [:], metadata: metadata).write(path: path)
        XCTAssertThrowsError(try TriggerInfo.read(path: path)) { error in
            XCTAssertTrue("\(error)".contains("squeeze_num \"many\" is not a whole number"), "\(error)")
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
        metadata["squeeze_num"] = "1"
        try SafeTensors(tensors: [:], metadata: metadata).write(path: path)
        XCTAssertThrowsError(try TriggerInfo.read(path: path)) { error in
            XCTAssertTrue("\(error)".contains("squeeze num 1 is not allowed; expected an integer in 2...256"), "\(error)")
        }
    }

    func testBadSettingsNameTheValue() {
        XCTAssertThrowsError(try SIGTrigger(delta: -1)) { XCTAssertTrue("\($0)".contains("SIG delta -1.0")) }
        XCTAssertThrowsError(try BPPSqueeze(squeezeNum: 300)) { XCTAssertTrue("\($0)".contains("squeeze num 300")) }
        XCTAssertThrowsError(try WaNetWarp.random(k: 1, seed: 0)) { XCTAssertTrue("\($0)".contains("WaNet k 1")) }
        XCTAssertThrowsError(try FTrojanTrigger(window: 12)) { XCTAssertTrue("\($0)".contains("FTrojan window 12")) }
        XCTAssertThrowsError(try FTrojanTrigger(positions: [[15, 32]])) { XCTAssertTrue("\($0)".contains("FTrojan positions")) }
        XCTAssertThrowsError(try FTrojanTrigger(channels: [3])) { XCTAssertTrue("\($0)".contains("FTrojan channels 3")) }
    }
}

extension Array {
    func chunked(_ size: Int) -> [[Element]] {
        stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}
