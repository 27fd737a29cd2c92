import Datasets
import Formats
import Foundation
import Support
import XCTest
@testable import Attacks
import TestSupport

final class PoisonedSetFolderTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "poisoned-set-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testRoundTripWithDocumentedDtypesAndShapes() throws {
        let clean = PoisoningTests.syntheticSet(count: 30)
        let poisoned = try Poisoning.trainingSet(clean, trigger: try .checkerboard1Corner(), target: 2, rate: 0.3, seed: 3)
        try PoisonedSetFolder.write(poisoned, to: directory)
        XCTAssertEqual(try PoisonedSetFolder.read(directory: directory), poisoned)

        let data = try NPY.read(path: directory + "/data.npy")
        XCTAssertEqual(data.dtype, .u8)
        XCTAssertEqual(data.shape, [30, 32, 32, 3])
        let labels = try NPY.read(path: directory + "/label.npy")
        XCTAssertEqual(labels.dtype, .i64)
        XCTAssertEqual(try labels.int64s(), poisoned.images.labels.map(Int64.init))
        let flags = try NPY.read(path: directory + "/backdoor_list.npy")
        XCTAssertEqual(flags.dtype, .u8)
        XCTAssertEqual(flags.data.filter { $0 == 1 }.count, 8)  // floor(0.3 * 27)
        XCTAssertEqual(poisoned.poisonedLabel, 2)
    }

    func testReadsAFolderWrittenByNumpy() throws {
        let set = try PoisonedSetFolder.read(directory: SharedData.packageRoot() + "/Fixtures/attacks/poisoned_set_python")
        let fixture = try TriggerFixture.load()
        XCTAssertEqual(set.images.pixels, fixture.images.flatMap { $0 })
        XCTAssertEqual(set.images.labels, [0, 3, 3, 9])
        XCTAssertEqual(set.poisonedIndices, [1, 2])
        XCTAssertEqual(set.poisonedLabel, 3)
    }

    func testBadFoldersNameTheFileAndTheProblem() throws {
        let clean = PoisoningTests.syntheticSet(count: 5)
        func expectError(_ contains: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try PoisonedSetFolder.read(directory: directory), file: file, line: line) { error in
                XCTAssertTrue("\(error)".contains(contains), "\(error)", file: file, line: line)
            }
        }
        XCTAssertThrowsError(try PoisonedSetFolder.read(directory: directory + "/absent")) { error in
            XCTAssertTrue("\(error)".contains("absent: no such folder"), "\(error)")
        }
        expectError("data.npy: missing")

        try PoisonedSetFolder.write(PoisonedTrainingSet(clean: clean), to: directory)
        try NPY.write(HostTensor(int64s: [1, 2, 3], shape: [3]), path: directory + "/label.npy")
        expectError("label.npy: has 3 labels but data.npy has 5 images")

        try NPY.write(HostTensor(floats: [1, 2, 3, 4, 5], shape: [5]), path: directory + "/label.npy")
        expectError("label.npy: expected an int64 (or int32) array of shape (N,), found <f4")

        try NPY.write(HostTensor(int64s: [1, 2, 3, 4, 12], shape: [5]), path: directory + "/label.npy")
        expectError("label 12 at index 4 is outside 0...9")

        try NPY.write(HostTensor(int64s: [1, 2, 3, 4, 5], shape: [5]), path: directory + "/label.npy")
        try NPY.write(HostTensor(uint8s: [0, 0, 2, 0, 0], shape: [5]), path: directory + "/backdoor_list.npy")
        expectError("backdoor_list.npy: value 2 at index 2 is not 0 or 1")

        try NPY.write(HostTensor(uint8s: [0, 0, 1, 0], shape: [4]), path: directory + "/backdoor_list.npy")
        expectError("backdoor_list.npy: has 4 flags but data.npy has 5 images")

        try NPY.write(HostTensor(floats: [Float](repeating: 0, count: 5 * 3072), shape: [5, 32, 32, 3]), path: directory + "/data.npy")
        expectError("data.npy: expected a |u1 array of shape (N, 32, 32, 3), found <f4")
    }

    func testExampleGridShowsCleanAboveTriggered() throws {
        let clean = PoisoningTests.syntheticSet(count: 10)
        let poisoned = try Poisoning.trainingSet(clean, trigger: try .checkerboard1Corner(), target: 0, rate: 1, seed: 1)
        let shown = ExampleGrid.sampleIndices(poisoned.poisonedIndices, limit: 4)
        XCTAssertEqual(shown, [1, 3, 5, 7])
        let grid = ExampleGrid.make(clean: clean, poisoned: poisoned.images, indices: shown)
        XCTAssertEqual(grid.width, 2 + 4 * 98)
        XCTAssertEqual(grid.height, 2 + 2 * 98)
        func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(grid.pixels[(y * grid.width + x) * 3..<(y * grid.width + x) * 3 + 3]) }
        XCTAssertEqual(pixel(0, 0), [255, 255, 255])
        // Top-left cell: clean image 1, pixel (0, 0), enlarged 3x.
        XCTAssertEqual(pixel(2, 2), Array(clean.image(1).prefix(3)))
        XCTAssertEqual(pixel(4, 4), Array(clean.image(1).prefix(3)))
        // Below it: the triggered image; pixel (30, 30) of the image is the block's white centre.
        XCTAssertEqual(pixel(2 + 30 * 3 + 1, 100 + 30 * 3 + 1), [255, 255, 255])
        XCTAssertEqual(pixel(2 + 29 * 3, 100 + 29 * 3), [0, 0, 0])
    }

    func testExportWritesArraysTriggerInfoAndExamples() throws {
        let clean = PoisoningTests.syntheticSet(count: 30)
        let info = try TriggerInfo(poisonType: "badnets", trigger: try .checkerboard1Corner(), target: 1)
        let poisoned = try Poisoning.trainingSet(clean, trigger: info.trigger, target: 1, rate: 0.5, seed: 2)
        let files = try PoisonedSetFolder.export(poisoned, clean: clean, triggerInfo: info, to: directory)
        XCTAssertEqual(files.map { ($0 as NSString).lastPathComponent },
                       ["data.npy", "label.npy", "backdoor_list.npy", "trigger_info.safetensors", "trigger_info.json", "examples.png"])
        XCTAssertEqual(try PoisonedSetFolder.read(directory: directory), poisoned)
        XCTAssertEqual(try TriggerInfo.read(path: directory + "/trigger_info.safetensors"), info)
        let grid = try PNG.read(path: directory + "/examples.png")
        XCTAssertEqual(grid, ExampleGrid.make(clean: clean, poisoned: poisoned.images,
                                              indices: ExampleGrid.sampleIndices(poisoned.poisonedIndices)))
        XCTAssertEqual(grid.width, 2 + 8 * 98)
    }
}

