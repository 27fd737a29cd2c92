import ArgumentParser
import Datasets
import Foundation
import Support

/// `backdoor data`: check, fetch and benchmark the CIFAR-10 data.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Check, download and benchmark the CIFAR-10 data.",
        subcommands: [Check.self, Fetch.self, Bench.self])

    struct DataDirectoryOption: ParsableArguments {
        @Option(name: .customLong("data-dir"),
                help: "Folder holding cifar-10-batches-bin/ or cifar-10-batches-py/ (default: $\(DataDirectory.environmentVariable), then ./data).")
        var dataDir: String?

        var resolved: DataDirectory { DataDirectory.resolve(flag: dataDir) }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts per split and class, label range, file sizes, and whether the files are the official ones.")

        @OptionGroup var data: DataDirectoryOption
        @Flag(help: "Print one JSON object instead of text.") var json = false

        func run() throws {
            let directory = data.resolved
            _ = try directory.locate()
            let report = try CIFAR10Report(dataDirectory: directory.path)
            print(json ? try JSONOutput.string(report.json) : report.text)
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download the official archive, verify its MD5 and extract it into the data directory.")

        @OptionGroup var data: DataDirectoryOption
        @Option(help: "Which layout to fetch: binary or python.") var layout: LayoutChoice = .binary
        @Option(help: "Download from this URL instead of the official one (a mirror).") var url: String?
        @Option(help: "Expected MD5 of the archive (default: the official archive's).") var md5: String?
        @Flag(help: "No progress bar.") var quiet = false

        func validate() throws {
            if let url, URL(string: url)?.scheme == nil {
                throw ValidationError("--url \(url) is not a URL; expected e.g. https://host/cifar-10-binary.tar.gz")
            }
            if let md5, md5.count != 32 || !md5.allSatisfy(\.isHexDigit) {
                throw ValidationError("--md5 \(md5) is not an MD5 digest; expected 32 hexadecimal digits")
            }
        }

        func run() throws {
            let directory = data.resolved
            let outcome = try CIFAR10Fetch.fetch(into: directory.path, layout: layout.layout, url: url.flatMap(URL.init(string:)),
                                                 md5: md5, quiet: quiet)
            if outcome.alreadyPresent {
                print("\(outcome.folder) is already there; nothing downloaded (`backdoor data check` verifies it).")
            } else {
                print("fetched \(outcome.folder) (archive MD5 \(outcome.archiveMD5) verified)")
            }
        }
    }

    enum LayoutChoice: String, ExpressibleByArgument, CaseIterable {
        case binary, python
        var layout: CIFAR10.Layout { self == .binary ? .binary : .python }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time loading all 60,000 images and the training augmentation (targets: load well under 1 s, augmentation at least 20,000 images/s).")

        @OptionGroup var data: DataDirectoryOption
        @Option(help: "Batch size for the augmentation timings.") var batchSize = 128
        @Option(help: "Repetitions of each timing (the best is reported).") var repeats = 3
        @Flag(help: "Print one JSON object instead of text.") var json = false

        func run() throws {
            let directory = data.resolved
            _ = try directory.locate()
            func best(_ body: () throws -> Void) rethrows -> Double {
                var times = [Double]()
                for _ in 0..<max(1, repeats) {
                    let start = Date()
                    try body()
                    times.append(Date().timeIntervalSince(start))
                }
                return times.min()!
            }
            var dataSet: CIFAR10.DataSet?
            let loadSeconds = try best { dataSet = try CIFAR10.load(directory: directory.path) }
            let train = dataSet!.train
            let images = train.count + dataSet!.test.count

            // Augmentation alone, on this thread.
            let augmentSeconds = best {
                var generator = SeededGenerator(seed: 1, stream: "bench")
                var start = 0
                while start < train.count {
                    let indices = Array(start..<min(start + batchSize, train.count))
                    _ = Augmentation.trainingBatch(train, indices: indices, generator: &generator)
                    start += batchSize
                }
            }
            // The whole training loader: shuffle, augmentation on its thread, hand-over.
            let loader = BatchLoader.training(train, batchSize: batchSize, seed: 1)
            var epoch = 0
            let loaderSeconds = best {
                for batch in loader.epoch(epoch) { precondition(batch.count > 0) }
                epoch += 1
            }
            let testSeconds = best {
                for batch in BatchLoader.evaluation(dataSet!.test, batchSize: batchSize).epoch(0) { precondition(batch.count > 0) }
            }
            let result: [String: Any] = [
                "load_seconds": loadSeconds,
                "load_images": images,
                "augment_images_per_second": Double(train.count) / augmentSeconds,
                "loader_images_per_second": Double(train.count) / loaderSeconds,
                "test_images_per_second": Double(dataSet!.test.count) / testSeconds,
                "batch_size": batchSize,
            ]
            if json {
                print(try JSONOutput.string(result))
            } else {
                print(String(format: "load %d images (%@ layout): %.3f s (target: well under 1 s)", images,
                             dataSet!.layout == .binary ? "binary" : "python", loadSeconds))
                print(String(format: "training augmentation: %.0f images/s on one thread (target: at least 20000)",
                             Double(train.count) / augmentSeconds))
                print(String(format: "training loader (shuffle + augmentation on its thread): %.0f images/s",
                             Double(train.count) / loaderSeconds))
                print(String(format: "test normalisation: %.0f images/s", Double(dataSet!.test.count) / testSeconds))
            }
        }
    }
}
