import Foundation

/// For tests: finds the workplace's shared data folder (`../shared/data` from the package root, or
/// `$BACKDOOR_SHARED_DATA`). Tests skip when it is absent, except when `BACKDOOR_REQUIRE_DATA=1`
/// (as CI sets it), where absence is a failure.
public enum SharedData {
    public struct Missing: Error, CustomStringConvertible {
        public let looked: String
        public var description: String {
            "shared data not found at \(looked) (BACKDOOR_REQUIRE_DATA=1 makes this a failure)"
        }
    }

    /// Package root, derived from a source file path inside `Sources/` or `Tests/`.
    public static func packageRoot(from filePath: String = #filePath) -> String {
        var url = URL(fileURLWithPath: filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
                return url.path
            }
        }
        return FileManager.default.currentDirectoryPath
    }

    public static var isRequired: Bool {
        ProcessInfo.processInfo.environment["BACKDOOR_REQUIRE_DATA"] == "1"
    }

    /// The shared `data` folder, or nil when absent and not required.
    public static func directory(from filePath: String = #filePath) throws -> String? {
        let path = ProcessInfo.processInfo.environment["BACKDOOR_SHARED_DATA"]
            ?? URL(fileURLWithPath: packageRoot(from: filePath)).deletingLastPathComponent()
                .appendingPathComponent("shared/data").path
        if FileManager.default.fileExists(atPath: path + "/cifar10/cifar-10-batches-bin/test_batch.bin") {
            return path
        }
        if isRequired { throw Missing(looked: path) }
        return nil
    }
}

/// The coverage-guided fuzzer's saved inputs (`Tests/Fuzz/corpus/TARGET` and
/// `Tests/Fuzz/crashes/TARGET`, see scripts/fuzz/run.sh), for the tests that replay them.
public enum FuzzInputs {
    public static func root(from filePath: String = #filePath) -> String {
        SharedData.packageRoot(from: filePath) + "/Tests/Fuzz"
    }

    public static func files(target: String, from filePath: String = #filePath) -> [String] {
        ["corpus", "crashes"].flatMap { kind -> [String] in
            let folder = "\(root(from: filePath))/\(kind)/\(target)"
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            return names.filter { !$0.hasPrefix(".") }.sorted().map { "\(folder)/\($0)" }
        }
    }

    /// Each saved input of `target` as bytes.
    public static func inputs(target: String, from filePath: String = #filePath) throws -> [[UInt8]] {
        try files(target: target, from: filePath).map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: $0))) }
    }
}
