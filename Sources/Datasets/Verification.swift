import Foundation
import Support

/// The published checksums of CIFAR-10.
public enum CIFAR10Checksums {
    public static let binaryArchiveMD5 = "c32a1d4ab5d03f1284b67883e8d87530"
    public static let pythonArchiveMD5 = "c58f30108f718f92721af3b95e74349a"

    public static func officialArchiveMD5(_ layout: CIFAR10.Layout) -> String {
        layout == .binary ? binaryArchiveMD5 : pythonArchiveMD5
    }

    /// MD5s of the files in the official python archive, as torchvision checks them. The
    /// binary layout's per-file MD5s are not published; its files count as official only when
    /// `data fetch` verified the archive and recorded their MD5s (see `FetchRecord`).
    public static let pythonFileMD5 = [
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    ]
}

/// What `backdoor data check` reports about a data directory.
public struct CIFAR10Report {
    public struct SetSummary {
        public let count: Int
        public let perClass: [Int]
        public let labelRange: ClosedRange<Int>?

        public init(_ set: ImageSet) {
            count = set.count
            var counts = [Int](repeating: 0, count: CIFAR10.classCount)
            for label in set.labels { counts[label] += 1 }
            perClass = counts
            labelRange = set.labels.min().flatMap { low in set.labels.max().map { low...$0 } }
        }

        var json: [String: Any] {
            ["count": count, "per_class": perClass,
             "label_range": labelRange.map { [$0.lowerBound, $0.upperBound] } ?? []]
        }
    }

    public struct FileSummary {
        public let name: String
        public let size: Int
        public let md5: String
    }

    public let layout: CIFAR10.Layout
    public let folder: String
    public let train: SetSummary
    public let test: SetSummary
    public let files: [FileSummary]
    public let official: Bool
    /// Why the files are or are not the official ones.
    public let officialReason: String

    /// Loads and checks everything in `dataDirectory` (throws on unreadable or malformed files).
    public init(dataDirectory: String, recordsPerFile: Int = CIFAR10.recordsPerFile) throws {
        let data = try CIFAR10.load(directory: dataDirectory, recordsPerFile: recordsPerFile)
        layout = data.layout
        folder = data.folder
        train = SetSummary(data.train)
        test = SetSummary(data.test)
        // The meta file is optional; the batches were read above.
        let names = data.layout.expectedFiles.filter {
            FileManager.default.fileExists(atPath: (data.folder as NSString).appendingPathComponent($0))
        }
        var results = [Result<FileSummary, Error>?](repeating: nil, count: names.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: names.count) { i in
            let path = (data.folder as NSString).appendingPathComponent(names[i])
            let result = Result {
                let size = ((try FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.intValue ?? 0
                return FileSummary(name: names[i], size: size, md5: try MD5.hex(ofFile: path))
            }
            lock.lock(); results[i] = result; lock.unlock()
        }
        files = try results.map { try $0!.get() }
        (official, officialReason) = Self.judge(layout: data.layout, folder: data.folder, files: files)
    }

    static func judge(layout: CIFAR10.Layout, folder: String, files: [FileSummary]) -> (Bool, String) {
        let md5 = Dictionary(uniqueKeysWithValues: files.map { ($0.name, $0.md5) })
        switch layout {
        case .python:
            let differing = CIFAR10Checksums.pythonFileMD5.keys.sorted().filter { md5[$0] != CIFAR10Checksums.pythonFileMD5[$0] }
            return differing.isEmpty
                ? (true, "every file matches the published MD5")
                : (false, "\(differing.joined(separator: ", ")) differ from the published MD5s")
        case .binary:
            guard let record = FetchRecord.read(folder: folder) else {
                return (false, "no record of a verified download (\(FetchRecord.fileName)); the binary files' own MD5s are not "
                    + "published, so only a copy made by `backdoor data fetch` from the official archive can be confirmed")
            }
            guard record.archiveMD5 == CIFAR10Checksums.binaryArchiveMD5 else {
                return (false, "fetched from an archive with MD5 \(record.archiveMD5), not the official \(CIFAR10Checksums.binaryArchiveMD5)")
            }
            let differing = layout.expectedFiles.filter { md5[$0] != record.fileMD5[$0] }
            return differing.isEmpty
                ? (true, "fetched from the official archive (MD5 verified) and unchanged since")
                : (false, "\(differing.joined(separator: ", ")) changed since the official archive was fetched")
        }
    }

    public var json: [String: Any] {
        [
            "layout": layout.folderName,
            "folder": folder,
            "train": train.json,
            "test": test.json,
            "official": official,
            "official_reason": officialReason,
            "files": files.map { ["name": $0.name, "size": $0.size, "md5": $0.md5] as [String: Any] },
        ]
    }

    /// Human-readable summary.
    public var text: String {
        var lines = ["CIFAR-10 (\(layout == .binary ? "binary" : "python") layout) in \(folder)"]
        for (name, set) in [("train", train), ("test", test)] {
            let range = set.labelRange.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "none"
            lines.append("  \(name): \(set.count) images, per class \(set.perClass.map(String.init).joined(separator: " ")), labels \(range)")
        }
        for file in files { lines.append("  \(file.name): \(file.size) bytes, md5 \(file.md5)") }
        lines.append(official ? "official: \(officialReason)" : "not the official files: \(officialReason)")
        return lines.joined(separator: "\n")
    }
}
