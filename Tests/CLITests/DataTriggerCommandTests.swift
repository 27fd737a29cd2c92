import Foundation
import Formats
import Support
import XCTest
@testable import BackdoorCLI
import TestSupport

/// `backdoor poison --export` for SIG, WaNet, BPP and FTrojan on the real attacker split, and
/// their flags' errors.
final class DataTriggerCommandTests: XCTestCase {
    func testPoisonExportsEachDataTriggerWithItsRateMeaning() throws {
        guard let shared = try SharedData.directory() else { throw XCTSkip("shared CIFAR-10 not present") }
        let folder = NSTemporaryDirectory() + "poison-data-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // Attacker split: 45,000 images, 4,500 of class 0 (the reference split): SIG takes them all, FTrojan round(0.1 x 45,000) of any class, WaNet and BPP 12 of each full batch of 128 and 7 of the last 72.
        let expected = ["sig": 4_500, "ftrojan": 4_500, "wanet": 12 * 351 + Int(0.1 * Double(45_000 - 351 * 128)),
                        "bpp": 12 * 351 + Int(0.1 * Double(45_000 - 351 * 128))]
        for (type, count) in expected.sorted(by: { $0.key < $1.key }) {
            let out = folder + "/" + type
            var poison = try PoisonCommand.parse(["--poison-type", type, "--data-dir", shared + "/cifar10",
                                                  "--split-file", shared + "/anp/cifar_shuffle.txt", "--export", out])
            try poison.run()
            let flags = try NPY.read(path: out + "/backdoor_list.npy").data
            let labels = try NPY.read(path: out + "/label.npy").int64s()
            XCTAssertEqual(flags.count, 45_000, type)
            XCTAssertEqual(flags.filter { $0 == 1 }.count, count, type)
            XCTAssertTrue(zip(flags, labels).allSatisfy { $0 == 0 || $1 == 0 }, "\(type): triggered images carry the target")
            let info = try SafeTensors.read(path: out + "/trigger_info.safetensors")
            XCTAssertEqual(info.metadata["trigger_type"], type)
            XCTAssertEqual(info.metadata["poison_rate"], "0.1")
            XCTAssertNotNil(info.metadata["poison_rate_meaning"])
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/examples.png"))
        }
    }

    func testDataTriggerFlagsAreCheckedNamingTheFlag() throws {
        func refused(_ arguments: [String], _ message: String) {
            XCTAssertThrowsError(try PoisonCommand.parse(arguments + ["--export", "x"])) { error in
                let text = PoisonCommand.message(for: error)
                XCTAssertTrue(text.contains(message), text)
            }
        }
        refused(["--poison-type", "bpp", "--squeeze-num", "1"], "--squeeze-num 1 is not allowed; expected an integer in 2...256")
        refused(["--poison-type", "wanet", "--wanet-k", "40"], "--wanet-k 40 is not allowed")
        refused(["--poison-type", "wanet", "--cross-ratio=-1"], "--cross-ratio -1.0 is not allowed")
        refused(["--poison-type", "ftrojan", "--ftrojan-window", "12"], "--ftrojan-window 12 is not allowed; expected a divisor of 32")
        refused(["--poison-type", "ftrojan", "--ftrojan-positions", "15,15,31"], "--ftrojan-positions 15,15,31 holds 3 numbers")
        refused(["--poison-type", "ftrojan", "--ftrojan-positions", "15,40"], "--ftrojan-positions")
        refused(["--poison-type", "sig", "--sig-delta", "300"], "--sig-delta 300.0 is not allowed")
        refused(["--poison-type", "sig", "--trigger-alpha", "0.5"], "--trigger-alpha with poison type sig")
    }
}
