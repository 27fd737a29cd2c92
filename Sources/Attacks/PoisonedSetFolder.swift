import Datasets
import Formats
import Foundation
import Support

/// A poisoned training set as numpy arrays in a folder, the exchange format of
/// `backdoor poison --export` and `backdoor clean-label` (read by
/// `backdoor train --poison-type clean-label --clb-dir`):
/// - `data.npy`: uint8, N x 32 x 32 x 3 (HWC, RGB), the images with the poisoned ones replaced;
/// - `label.npy`: int64, N, the training labels (0-9);
/// - `backdoor_list.npy`: uint8, N, 1 where the image carries the trigger.
/// Rows follow the attacker split's order (the permutation's order).
public enum PoisonedSetFolder {
    public static let dataFile = "data.npy"
    public static let labelFile = "label.npy"
    public static let flagFile = "backdoor_list.npy"

    public static func write(_ set: PoisonedTrainingSet, to directory: String) throws {
        let count = set.count
        try NPY.write(HostTensor(uint8s: set.images.pixels, shape: [count, 32, 32, 3]), path: path(directory, dataFile))
        try NPY.write(HostTensor(int64s: set.images.labels.map(Int64.init), shape: [count]), path: path(directory, labelFile))
        try NPY.write(HostTensor(uint8s: set.isPoisoned.map { $0 ? 1 : 0 }, shape: [count]), path: path(directory, flagFile))
    }

    public static let examplesFile = "examples.png"

    /// What `backdoor poison --export` and `backdoor clean-label` write: the three arrays, the
    /// trigger information (`trigger_info.safetensors` and its JSON twin) and `examples.png`
    /// (clean images of `clean` above their poisoned versions). Returns the files written.
    @discardableResult
    public static func export(_ set: PoisonedTrainingSet, clean: ImageSet, triggerInfo: TriggerInfo,
                              to directory: String) throws -> [String] {
        precondition(clean.count == set.count, "the clean set pairs image by image with the poisoned one")
        try write(set, to: directory)
        let infoPath = path(directory, TriggerInfo.fileName)
        try triggerInfo.write(path: infoPath)
        let grid = ExampleGrid.make(clean: clean, poisoned: set.images, indices: ExampleGrid.sampleIndices(set.poisonedIndices))
        try PNG.write(grid, path: path(directory, examplesFile))
        return [dataFile, labelFile, flagFile].map { path(directory, $0) }
            + [infoPath, TriggerInfo.jsonTwinPath(for: infoPath), path(directory, examplesFile)]
    }

    /// Reads and checks a folder: the three arrays must exist, have the dtypes above (labels may
    /// also be int32; flags bool or int64), agree in length, and hold labels 0-9 and flags 0/1.
    public static func read(directory: String) throws -> PoisonedTrainingSet {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FileError(directory, "no such folder; expected a folder with \(dataFile), \(labelFile) and \(flagFile) (written by `backdoor clean-label`)")
        }
        for name in [dataFile, labelFile, flagFile] where !FileManager.default.fileExists(atPath: path(directory, name)) {
            throw FileError(path(directory, name), "missing; a poisoned-set folder holds \(dataFile), \(labelFile) and \(flagFile)")
        }
        let data = try NPY.read(path: path(directory, dataFile), expecting: .u8, shape: [nil, 32, 32, 3])
        let count = data.shape[0]

        let labelPath = path(directory, labelFile)
        let labelTensor = try NPY.read(path: labelPath)
        let labels: [Int]
        switch (labelTensor.dtype, labelTensor.shape.count) {
        case (.i64, 1): labels = try labelTensor.int64s().map { Int($0) }
        case (.i32, 1): labels = try labelTensor.int32s().map { Int($0) }
        default:
            throw FileError(labelPath, "expected an int64 (or int32) array of shape (N,), found \(NPY.descr(labelTensor.dtype)) of shape \(labelTensor.shape)")
        }
        guard labels.count == count else {
            throw FileError(labelPath, "has \(labels.count) labels but \(dataFile) has \(count) images; the arrays must agree in length")
        }
        if let bad = labels.firstIndex(where: { !(0..<Poisoning.numClasses).contains($0) }) {
            throw FileError(labelPath, "label \(labels[bad]) at index \(bad) is outside 0...\(Poisoning.numClasses - 1)")
        }

        let flagPath = path(directory, flagFile)
        let flagTensor = try NPY.read(path: flagPath)
        let flags: [Int64]
        switch (flagTensor.dtype, flagTensor.shape.count) {
        case (.u8, 1), (.bool, 1): flags = flagTensor.data.map(Int64.init)
        case (.i64, 1): flags = try flagTensor.int64s()
        default:
            throw FileError(flagPath, "expected a uint8 (or bool, int64) array of shape (N,), found \(NPY.descr(flagTensor.dtype)) of shape \(flagTensor.shape)")
        }
        guard flags.count == count else {
            throw FileError(flagPath, "has \(flags.count) flags but \(dataFile) has \(count) images; the arrays must agree in length")
        }
        if let bad = flags.firstIndex(where: { $0 != 0 && $0 != 1 }) {
            throw FileError(flagPath, "value \(flags[bad]) at index \(bad) is not 0 or 1")
        }
        return PoisonedTrainingSet(images: ImageSet(pixels: data.data, labels: labels), isPoisoned: flags.map { $0 == 1 })
    }

    private static func path(_ directory: String, _ name: String) -> String {
        (directory as NSString).appendingPathComponent(name)
    }
}

extension PoisonedTrainingSet {
    /// The label every poisoned image carries, or nil when none is poisoned or they disagree
    /// (for a clean-label folder: the target class it was made for).
    public var poisonedLabel: Int? {
        let labels = Set(poisonedIndices.map { images.labels[$0] })
        return labels.count == 1 ? labels.first : nil
    }
}
