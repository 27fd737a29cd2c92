import XCTest
import Support
@testable import Attacks
import TestSupport

/// The ANP reference code's `torch.save(dict)` trigger information opens like our own files.
final class ReferenceTriggerInfoTests: XCTestCase {
    func testPyTorchTriggerDictionaryIsReadAsBlend() throws {
        let path = SharedData.packageRoot() + "/Fixtures/formats/torch/trigger_info.pt"
        let info = try TriggerInfo.read(path: path)
        XCTAssertEqual(info.poisonType, "blend", "a full mask is the Blend trigger")
        XCTAssertEqual(info.trigger.pattern!.kind, .gaussianNoise)
        XCTAssertEqual(info.trigger.pattern!.alpha, 0.2)
        XCTAssertEqual(info.target, 0)
        XCTAssertEqual(info.trigger.pattern!.patternChannels, 3)
    }

    func testMaliciousPickleIsRefusedAsTriggerInformation() throws {
        let path = SharedData.packageRoot() + "/Fixtures/formats/torch/evil_os_system.pt"
        XCTAssertThrowsError(try TriggerInfo.read(path: path)) { error in
            XCTAssertTrue("\(error)".contains("system"), "\(error)")
        }
    }
}
