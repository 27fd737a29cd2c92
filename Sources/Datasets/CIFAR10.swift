import Formats
import Foundation
import Support

/// CIFAR-10 in either official layout: the binary one (`cifar-10-batches-bin/`) or the pickled
/// python one (`cifar-10-batches-py/`, what torchvision downloads).
public enum CIFAR10 {
    public static let classNames = ["airplane", "automobile", "bird", "cat", "deer",
                                    "dog", "frog", "horse", "ship", "truck"]
    public static let classCount = 10
    public static let recordsPerFile = 10_000
    public static let trainCount = 50_000
    public static let testCount = 10_000
    /// One binary record: a label byte, then 1,024 red, 1,024 green and 1,024 blue bytes.
    public static let recordBytes = 1 + ImageSet.pixelsPerImage

    public enum Layout: String, CaseIterable {
        case binary = "cifar-10-batches-bin"
        case python = "cifar-10-batches-py"

        /// The folder name inside the data directory.
        public var folderName: String { rawValue }
        /// Training batch file names, in the official order.
        public var trainFiles: [String] {
            (1...5).map { self == .binary ? "data_batch_\($0).bin" : "data_batch_\($0)" }
        }
        public var testFile: String { self == .binary ? "test_batch.bin" : "test_batch" }
        public var metaFile: String { self == .binary ? "batches.meta.txt" : "batches.meta" }
        /// The members `data fetch` extracts: the batches and the class names.
        public var expectedFiles: [String] { trainFiles + [testFile, metaFile] }
        public var batchFiles: [String] { trainFiles + [testFile] }
    }

    /// Training (official order: data_batch_1 … 5) and test images of one layout folder.
    public struct DataSet {
        public let train: ImageSet
        public let test: ImageSet
        public let layout: Layout
        /// The layout folder the files were read from.
        public let folder: String
    }

    /// The layout folder inside `dataDirectory`, preferring the binary layout when both exist.
    public static func findLayout(in dataDirectory: String) -> (layout: Layout, folder: String)? {
        for layout in Layout.allCases {
            let folder = (dataDirectory as NSString).appendingPathComponent(layout.folderName)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue {
                return (layout, folder)
            }
        }
        return nil
    }

    /// Loads train and test sets from the data directory (the folder holding a layout folder).
    /// `recordsPerFile` is 10,000 for the real data; small fixtures pass their own size.
    public static func load(directory dataDirectory: String, recordsPerFile: Int = recordsPerFile) throws -> DataSet {
        guard let (layout, folder) = findLayout(in: dataDirectory) else {
            throw FileError(dataDirectory, "holds neither \(Layout.binary.folderName)/ nor \(Layout.python.folderName)/")
        }
        let paths = layout.batchFiles.map { (folder as NSString).appendingPathComponent($0) }
        let decode: FileDecoder = layout == .binary
            ? { path, records, pixels, labels in
                try decodeBinary(try readWholeFile(path), path: path, expectedRecords: records, pixels: pixels, labels: labels) }
            : decodePython
        let (train, test) = try loadFiles(trainPaths: Array(paths[0..<5]), testPath: paths[5],
                                          recordsPerFile: recordsPerFile, decode: decode)
        return DataSet(train: train, test: test, layout: layout, folder: folder)
    }

    /// Decodes one batch file of `records` records into `pixels` (HWC) and `labels`.
    typealias FileDecoder = (_ path: String, _ records: Int, _ pixels: UnsafeMutablePointer<UInt8>,
                             _ labels: UnsafeMutablePointer<Int>) throws -> Void

    /// Decodes every file straight into the final arrays, files in parallel.
    static func loadFiles(trainPaths: [String], testPath: String, recordsPerFile: Int,
                          decode: FileDecoder) throws -> (ImageSet, ImageSet) {
        precondition(recordsPerFile > 0, "recordsPerFile must be positive")
        let image = ImageSet.pixelsPerImage
        let trainRecords = trainPaths.count * recordsPerFile
        var trainPixels = [UInt8](), testPixels = [UInt8]()  // filled below without zeroing first
        var trainLabels = [Int](repeating: 0, count: trainRecords)
        var testLabels = [Int](repeating: 0, count: recordsPerFile)
        var errors = [Error?](repeating: nil, count: trainPaths.count + 1)
        let lock = NSLock()
        trainPixels = [UInt8](unsafeUninitializedCapacity: trainRecords * image) { trainBuffer, trainCount in
            testPixels = [UInt8](unsafeUninitializedCapacity: recordsPerFile * image) { testBuffer, testCount in
                trainLabels.withUnsafeMutableBufferPointer { trainLabelBuffer in
                    testLabels.withUnsafeMutableBufferPointer { testLabelBuffer in
                        // Unsafe pointers may cross threads here: each file writes its own range.
                        let trainPixelBase = trainBuffer.baseAddress!, testPixelBase = testBuffer.baseAddress!
                        let trainLabelBase = trainLabelBuffer.baseAddress!, testLabelBase = testLabelBuffer.baseAddress!
                        DispatchQueue.concurrentPerform(iterations: trainPaths.count + 1) { i in
                            let isTest = i == trainPaths.count
                            let path = isTest ? testPath : trainPaths[i]
                            let first = isTest ? 0 : i * recordsPerFile
                            do {
                                try decode(path, recordsPerFile, (isTest ? testPixelBase : trainPixelBase) + first * image,
                                           (isTest ? testLabelBase : trainLabelBase) + first)
                            } catch {
                                lock.lock(); errors[i] = error; lock.unlock()
                            }
                        }
                    }
                }
                // Fully written unless an error is thrown below; zero-fill then so the array is valid.
                if errors.contains(where: { $0 != nil }) { testBuffer.initialize(repeating: 0) }
                testCount = recordsPerFile * image
            }
            if errors.contains(where: { $0 != nil }) { trainBuffer.initialize(repeating: 0) }
            trainCount = trainRecords * image
        }
        if let error = errors.compactMap({ $0 }).first { throw error }
        return (ImageSet(pixels: trainPixels, labels: trainLabels), ImageSet(pixels: testPixels, labels: testLabels))
    }

    // MARK: - Binary layout

    /// Reads one binary batch file of exactly `expectedRecords` records.
    public static func readBinaryBatch(path: String, expectedRecords: Int = recordsPerFile) throws -> ImageSet {
        let data = try readWholeFile(path)
        return try decodeBinaryBatch(data, path: path, expectedRecords: expectedRecords)
    }

    public static func decodeBinaryBatch(_ data: Data, path: String, expectedRecords: Int) throws -> ImageSet {
        var labels = [Int](repeating: 0, count: expectedRecords)
        var pixels = [UInt8](repeating: 0, count: expectedRecords * ImageSet.pixelsPerImage)
        try pixels.withUnsafeMutableBufferPointer { pixelBuffer in
            try labels.withUnsafeMutableBufferPointer { labelBuffer in
                try decodeBinary(data, path: path, expectedRecords: expectedRecords,
                                 pixels: pixelBuffer.baseAddress!, labels: labelBuffer.baseAddress!)
            }
        }
        return ImageSet(pixels: pixels, labels: labels)
    }

    /// Checks the size and labels of a binary batch and writes its images (HWC) and labels.
    static func decodeBinary(_ data: Data, path: String, expectedRecords: Int,
                             pixels: UnsafeMutablePointer<UInt8>, labels: UnsafeMutablePointer<Int>) throws {
        let expectedBytes = expectedRecords * recordBytes
        guard data.count == expectedBytes else {
            let kind = data.count < expectedBytes ? "truncated" : "oversized"
            let records = data.count % recordBytes == 0 ? "\(data.count / recordBytes) records" :
                "\(data.count / recordBytes) records and \(data.count % recordBytes) stray bytes"
            throw FileError(path, "\(kind): \(data.count) bytes (\(records)); expected \(expectedBytes) bytes "
                + "(\(expectedRecords) records of \(recordBytes) bytes: label, then R, G, B planes)")
        }
        var badRecord = -1, badLabel = 0
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            guard let src = raw.bindMemory(to: UInt8.self).baseAddress else { return }
            for r in 0..<expectedRecords {
                let record = src + r * recordBytes
                let label = Int(record[0])
                if label >= classCount, badRecord < 0 { badRecord = r; badLabel = label }
                labels[r] = label
                planesToHWC(record + 1, pixels + r * ImageSet.pixelsPerImage)
            }
        }
        if badRecord >= 0 {
            throw FileError(path, "record \(badRecord) (byte offset \(badRecord * recordBytes)) has label byte \(badLabel); expected 0-9")
        }
    }

    /// One image from planes (1,024 R, 1,024 G, 1,024 B) to interleaved HWC.
    @inline(__always)
    static func planesToHWC(_ planes: UnsafePointer<UInt8>, _ out: UnsafeMutablePointer<UInt8>) {
        let plane = ImageSet.height * ImageSet.width
        for p in 0..<plane {
            out[3 * p] = planes[p]
            out[3 * p + 1] = planes[plane + p]
            out[3 * p + 2] = planes[2 * plane + p]
        }
    }

    static func readWholeFile(_ path: String) throws -> Data {
        guard FileManager.default.fileExists(atPath: path) else {
            throw FileError(path, "missing")
        }
        return try InputFile.map(path, what: "CIFAR-10 batch file")
    }

    // MARK: - Python layout

    /// Reads one pickled batch of the python layout: a dict whose `data` is a uint8 array of
    /// shape (records, 3072) in the binary layout's plane order and whose `labels` is a list.
    /// The restricted reader admits only numpy's array globals and executes nothing.
    public static func readPythonBatch(path: String, expectedRecords: Int = recordsPerFile) throws -> ImageSet {
        var labels = [Int](repeating: 0, count: expectedRecords)
        var pixels = [UInt8](repeating: 0, count: expectedRecords * ImageSet.pixelsPerImage)
        try pixels.withUnsafeMutableBufferPointer { pixelBuffer in
            try labels.withUnsafeMutableBufferPointer { labelBuffer in
                try decodePython(path, expectedRecords, pixelBuffer.baseAddress!, labelBuffer.baseAddress!)
            }
        }
        return ImageSet(pixels: pixels, labels: labels)
    }

    static func decodePython(_ path: String, _ expectedRecords: Int, _ pixels: UnsafeMutablePointer<UInt8>,
                             _ labels: UnsafeMutablePointer<Int>) throws {
        let root = try Pickle.read(path: path, allowedGlobals: Pickle.numpyGlobals)
        let expectedShape = [expectedRecords, ImageSet.pixelsPerImage]
        let expectation = "expected a dict with 'data' (uint8 array of shape \(expectedShape)) and 'labels' (\(expectedRecords) integers 0-9)"
        guard root.dictEntries != nil else { throw FileError(path, "pickle holds no dict; \(expectation)") }
        guard let dataValue = root["data"], let labelValues = root["labels"]?.elements else {
            let keys = root.dictEntries!.compactMap { $0.key.stringValue }
            throw FileError(path, "pickle dict has keys \(keys); \(expectation)")
        }
        let array: HostTensor
        do {
            array = try NumpyPickle.array(dataValue)
        } catch {
            throw FileError(path, "'data' is not a numpy array (\(error)); \(expectation)")
        }
        guard array.dtype == .u8, array.shape == expectedShape else {
            throw FileError(path, "'data' is a \(array.dtype.rawValue) array of shape \(array.shape); \(expectation)")
        }
        guard labelValues.count == expectedRecords else {
            throw FileError(path, "'labels' has \(labelValues.count) entries; \(expectation)")
        }
        for (i, value) in labelValues.enumerated() {
            guard let label = value.intValue, (0..<classCount).contains(label) else {
                throw FileError(path, "labels[\(i)] is \(value); expected an integer 0-9")
            }
            labels[i] = label
        }
        array.data.withUnsafeBufferPointer { src in
            for r in 0..<expectedRecords {
                planesToHWC(src.baseAddress! + r * ImageSet.pixelsPerImage, pixels + r * ImageSet.pixelsPerImage)
            }
        }
    }
}
