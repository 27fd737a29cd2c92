import Foundation
import Support

/// Where the CIFAR-10 data lives: `--data-dir`, else `$BACKDOOR_DATA_DIR`, else `./data`.
/// An explicit choice is never silently replaced by a later one.
public struct DataDirectory: Equatable {
    public static let environmentVariable = "BACKDOOR_DATA_DIR"
    public static let defaultPath = "data"

    public enum Source: String { case flag = "--data-dir", environment = "$BACKDOOR_DATA_DIR", defaultPath = "default ./data" }

    public let path: String
    public let source: Source

    public init(path: String, source: Source) {
        self.path = path
        self.source = source
    }

    public static func resolve(flag: String?,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               currentDirectory: String = FileManager.default.currentDirectoryPath) -> DataDirectory {
        func absolute(_ p: String) -> String {
            let expanded = (p as NSString).expandingTildeInPath
            let full = expanded.hasPrefix("/") ? expanded : (currentDirectory as NSString).appendingPathComponent(expanded)
            return (full as NSString).standardizingPath
        }
        if let flag, !flag.isEmpty { return DataDirectory(path: absolute(flag), source: .flag) }
        if let env = environment[environmentVariable], !env.isEmpty { return DataDirectory(path: absolute(env), source: .environment) }
        return DataDirectory(path: absolute(defaultPath), source: .defaultPath)
    }

    /// Raised when the chosen folder holds no layout folder.
    public struct NotFound: Error, CustomStringConvertible {
        public let directory: DataDirectory
        public var description: String {
            "no CIFAR-10 data in \(directory.path) (chosen by \(directory.source.rawValue)): looked for "
                + "\(CIFAR10.Layout.binary.folderName)/ and \(CIFAR10.Layout.python.folderName)/ there.\n"
                + "Download it with `backdoor data fetch --data-dir \(directory.path)`, or point --data-dir or "
                + "\(DataDirectory.environmentVariable) at the folder that holds one of those folders "
                + "(for example the parent of torchvision's cifar-10-batches-py)."
        }
    }

    /// The layout found here, or `NotFound`.
    public func locate() throws -> (layout: CIFAR10.Layout, folder: String) {
        guard let found = CIFAR10.findLayout(in: path) else { throw NotFound(directory: self) }
        return found
    }

    /// Resolves and loads in one step, for tools that just need the images.
    public static func load(flag: String?) throws -> CIFAR10.DataSet {
        let directory = resolve(flag: flag)
        _ = try directory.locate()
        return try CIFAR10.load(directory: directory.path)
    }
}
