import Foundation
import Support

/// The parsers the coverage-guided fuzzer drives (scripts/fuzz/run.sh), one entry point each,
/// shared with the XCTest that replays the saved corpus and crash inputs, so a fixed crash
/// stays fixed under a normal `swift test`.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case pickle, zip, safetensors, npy, png, targz

    /// Parses one input. Returns whether it was accepted; the errors a parser documents for bad
    /// input count as refusals. Anything else (a trap, a stack overflow) is what the fuzzer is
    /// looking for, so nothing else is caught.
    @discardableResult
    public func run(_ bytes: [UInt8]) throws -> Bool {
        do {
            switch self {
            case .pickle:
                let root = try Pickle.parse(bytes, allowedGlobals: TorchCheckpoint.allowedGlobals.union(Pickle.numpyGlobals))
                if let data = root["data"] { _ = try NumpyPickle.array(data) }
                // torch's legacy format is a pickle too; it reads further than a bare parse.
                if bytes.first == 0x80 { _ = try TorchCheckpoint.decode(Data(bytes), path: "fuzz") }
            case .zip:
                _ = try TorchCheckpoint.decode(Data(bytes), path: "fuzz")
            case .safetensors:
                _ = try SafeTensors.decode(bytes, path: "fuzz")
            case .npy:
                _ = try NPY.decode(bytes, path: "fuzz")
            case .png:
                _ = try PNG.decode(bytes, path: "fuzz", alpha: .drop)
            case .targz:
                // The reader streams from a file; /dev/shm keeps that off the disk where it exists.
                let folder = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
                let path = folder + "/backdoor-fuzz-\(getpid()).tar.gz"
                try? Data(bytes).write(to: URL(fileURLWithPath: path))
                defer { unlink(path) }
                _ = try TarGzip.list(path: path)
            }
            return true
        } catch is FileError, is PickleError, is NumpyPickle.Unsupported {
            return false
        }
    }
}
