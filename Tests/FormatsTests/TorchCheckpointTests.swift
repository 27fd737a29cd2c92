import Foundation
import XCTest
@testable import Formats
import Support

final class TorchCheckpointTests: XCTestCase {
    private func path(_ name: String) -> String { FixturePaths.formats("torch/\(name)") }

    /// Asserts that the checkpoint's tensors equal the reference safetensors file bit for bit.
    private func assertMatchesExpected(_ tensors: [NamedTensor], _ expectedFile: String,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try SafeTensors.read(path: path(expectedFile))
        XCTAssertEqual(tensors.map(\.name).sorted(), expected.names, expectedFile, file: file, line: line)
        for named in tensors {
            XCTAssertEqual(named.tensor, expected.tensors[named.name], "\(expectedFile): \(named.name)", file: file, line: line)
        }
    }

    func testReadsNarrowResNetStateDictBitExactly() throws {
        let checkpoint = try TorchCheckpoint.read(path: path("resnet18_narrow.pt"))
        try assertMatchesExpected(checkpoint.tensors, "resnet18_narrow_expected.safetensors")
        // Pickle order is the model's registration order.
        XCTAssertEqual(checkpoint.tensors.prefix(3).map(\.name), ["conv1.weight", "bn1.weight", "bn1.bias"])
        XCTAssertEqual(checkpoint.tensors.last?.name, "linear.bias")
        XCTAssertEqual(checkpoint["conv1.weight"]?.shape, [2, 3, 3, 3])
        XCTAssertEqual(try checkpoint["bn1.num_batches_tracked"]?.int64s(), [123])
        XCTAssertEqual(checkpoint.stateDict, checkpoint.tensors)
    }

    func testReadsReferenceTriggerInformationWithNumpy2Arrays() throws {
        let checkpoint = try TorchCheckpoint.read(path: path("trigger_info.pt"))
        try assertMatchesExpected(checkpoint.tensors, "trigger_info_expected.safetensors")
        XCTAssertEqual(checkpoint["trigger_pattern"]?.shape, [1, 32, 32, 3])
        XCTAssertEqual(checkpoint["trigger_pattern"]?.dtype, .u8)
        XCTAssertEqual(try checkpoint["trigger_alpha"]?.doubles(), [0.2])
        XCTAssertEqual(try checkpoint["poison_target"]?.int64s(), [0])
    }

    func testStridedViewsAndDtypesInZipAndLegacyFormats() throws {
        for name in ["views.pt", "legacy_views.pt"] {
            let checkpoint = try TorchCheckpoint.read(path: path(name))
            try assertMatchesExpected(checkpoint.tensors, "views_expected.safetensors")
            XCTAssertEqual(checkpoint["transposed"]?.shape, [6, 4], name)
            XCTAssertEqual(checkpoint["expanded"]?.shape, [2, 3], name)
            XCTAssertEqual(try checkpoint["expanded"]?.floats(), [1.5, -2.5, 3.25, 1.5, -2.5, 3.25], name)
        }
    }

    func testNestedTrainingCheckpoint() throws {
        let checkpoint = try TorchCheckpoint.read(path: path("nested.pt"))
        try assertMatchesExpected(checkpoint.stateDict, "nested_expected.safetensors")
        XCTAssertEqual(checkpoint.stateDict.map(\.name), ["linear_weight", "linear_bias"])
        XCTAssertEqual(checkpoint.metadata, ["arch": "resnet18"])
        XCTAssertEqual(try checkpoint["epoch"]?.int64s(), [3])
        XCTAssertEqual(try checkpoint["best_acc"]?.doubles(), [91.5])
    }

    func testReadsPlainPicklesToo() throws {
        let batch = try TorchCheckpoint.read(path: FixturePaths.formats("cifar_py2_style.pkl"))
        XCTAssertEqual(batch.tensors.map(\.name), ["labels", "data"])
        XCTAssertEqual(try batch["labels"]?.int64s(), [6, 9, 0])
        XCTAssertEqual(batch["data"]?.shape, [3, 3072])
        XCTAssertEqual(batch.metadata, ["batch_label": "testing batch 1 of 1", "filenames.0": "img0.png",
                                        "filenames.1": "img1.png", "filenames.2": "img2.png"])
        // Python ints beyond 64 bits have no tensor form.
        assertThrows(try TorchCheckpoint.read(path: FixturePaths.formats("numpy_p2.pkl")), mentioning: ["\"plain.2\"", "beyond 64 bits"])
        assertThrows(try TorchCheckpoint.read(path: FixturePaths.formats("npy/labels_i8.npy")),
                     mentioning: ["labels_i8.npy", "not a PyTorch checkpoint"])
    }

    func testMaliciousPicklesAreRefusedByGlobalName() throws {
        let marker = "/tmp/backdoorlab-torch-pwned"
        try? FileManager.default.removeItem(atPath: marker)
        let cases = [
            ("evil_os_system.pt", "posix.system"), ("evil_eval.pt", "builtins.eval"),
            ("evil_subprocess.pt", "subprocess.check_call"), ("evil_module.pt", "torch.nn.modules.linear.Linear"),
        ]
        for (name, global) in cases {
            assertThrows(try TorchCheckpoint.read(path: path(name)), mentioning: [name, "refusing global \(global)"])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "a payload ran")
    }

    func testBrokenArchivesAreRefusedClearly() {
        assertThrows(try TorchCheckpoint.read(path: path("truncated.pt")), mentioning: ["truncated.pt", "truncated"])
        assertThrows(try TorchCheckpoint.read(path: path("short_storage.pt")),
                     mentioning: ["short_storage.pt", "storage 0 has 88 bytes", "24 f32 elements"])
        assertThrows(try TorchCheckpoint.read(path: path("uint16.pt")), mentioning: ["uint16.pt", "unsupported tensor dtype torch.uint16"])
        assertThrows(try TorchCheckpoint.read(path: "/nonexistent/model.th"), mentioning: ["/nonexistent/model.th"])
        // A legacy file cut anywhere is an error, never a crash or a partial result.
        let legacy = try! [UInt8](Data(contentsOf: URL(fileURLWithPath: path("legacy_views.pt"))))
        for length in stride(from: 0, to: legacy.count, by: 7) {
            XCTAssertThrowsError(try TorchCheckpoint.decode(Data(legacy[..<length]), path: "cut.pt"))
        }
    }

    /// Mutated fixtures must only ever produce thrown errors (or a valid reading), never a crash
    /// (`BACKDOOR_FUZZ_ITERATIONS` scales the run; see FuzzTests).
    func testMutatedFilesOnlyThrow() throws {
        var generator = SplitMix(seed: 2026)
        let sources = ["torch/views.pt", "torch/legacy_views.pt", "torch/trigger_info.pt", "numpy_p2.pkl", "numpy_p5.pkl"]
        var outcomes = (read: 0, refused: 0)
        for source in sources {
            let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: FixturePaths.formats(source))))
            for _ in 0..<FuzzTests.iterations {
                let bytes = FuzzTests.mutate(original, &generator)
                do {
                    _ = try TorchCheckpoint.decode(Data(bytes), path: "fuzz")
                    outcomes.read += 1
                } catch is FileError {
                    outcomes.refused += 1
                }
            }
        }
        // Damage aimed at the zip structure: the central directory and end records at the tail.
        let archive = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path("views.pt"))))
        let tail = archive.count - 1200
        for _ in 0..<FuzzTests.iterations {
            var bytes = archive
            for _ in 0..<(1 + Int(generator.next() % 3)) {
                bytes[tail + Int(generator.next() % 1200)] = UInt8(truncatingIfNeeded: generator.next())
            }
            do {
                _ = try TorchCheckpoint.decode(Data(bytes), path: "fuzz")
                outcomes.read += 1
            } catch is FileError {
                outcomes.refused += 1
            }
        }
        XCTAssertGreaterThan(outcomes.refused, FuzzTests.iterations * 3)
    }
}
