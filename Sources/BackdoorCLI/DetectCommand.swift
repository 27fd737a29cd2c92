import ArgumentParser
import Attacks
import Datasets
import Defenses
import Foundation
import Support

/// `backdoor detect`: finds the poisoned images of an exported training set through a model, and
/// scores the decision against the set's `backdoor_list.npy`.
struct DetectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detect",
        abstract: "Detect the poisoned images of a training set (STRIP, spectral signatures, activation clustering).",
        discussion: """
            --poisoned-set is a folder written by `backdoor poison --export` or `backdoor clean-label` \
            (data.npy, label.npy, backdoor_list.npy); backdoor_list.npy is only used to score the decision. \
            Writes result.json (settings, TP/FP/TN/FN, TPR, FPR, precision, recall, F1, the AUROC of the \
            score, per-class details and the flagged row indices), summary.txt, scores.npy (float64, one \
            suspicion score per row, higher is more suspicious) and detect_log.txt. STRIP blends with the \
            defender's clean images: the first --clean-frac of the split permutation (it must not exceed \
            the --val-frac the set was exported with, or they overlap).
            """)

    @Option(help: "The detector: \(DetectionMethod.allCases.map(\.rawValue).joined(separator: ", ")).") var method: String
    @Option(help: "The (backdoored) model trained on the set: our safetensors checkpoint or a PyTorch state_dict file.")
    var checkpoint: String
    @Flag(help: "Load a checkpoint whose tensors do not all match its architecture (mismatches skipped with a warning).")
    var nonStrict = false
    @Option(help: "Poisoned-set folder (data.npy, label.npy, backdoor_list.npy).") var poisonedSet: String
    @Option(help: "Output folder.") var outputDir = "runs/detect"
    @Option(help: "Inspect only the first N images of the set (quick runs).") var limit: Int?
    @OptionGroup var data: DataOptions
    @OptionGroup var compute: ComputeOptions
    @Option(help: "strip: fraction of the training set held by the defender as clean images.") var cleanFrac = DetectionMethod.defaultCleanFraction
    @Option(help: "strip: clean images superimposed on each inspected image (the reference's N).") var blends = 100
    @Option(help: "strip: weight of the clean image in the superimposition x + alpha * clean (normalised inputs).")
    var stripAlpha = 1.0
    @Option(help: "strip: false rejection rate on the clean images that sets the entropy threshold.") var frr = 0.1
    @Option(help: "spectral: share of each class the defender expects to be poisoned.") var poisonRate = 0.1
    @Option(help: "spectral: flag this many times the expected poison count of each class.") var removalFactor = 1.5
    @Option(help: "ac: principal components the features are reduced to before 2-means.") var acDims = 10
    @Option(help: "ac: flag a class's smaller cluster when it holds less than this share of the class.") var sizeThreshold = 0.35
    @Option(parsing: .unconditional, help: "Seed of STRIP's blend draws and of the k-means starts.", transform: parseSeed)
    var seed: UInt64 = 0

    /// The detector settings the flags give, by config name, with the flag that gave each.
    var namedSettings: [(flag: String, key: String, value: Double)] {
        [("--blends", "blends", Double(blends)), ("--strip-alpha", "alpha", stripAlpha), ("--frr", "frr", frr),
         ("--poison-rate", "poison_rate", poisonRate), ("--removal-factor", "removal_factor", removalFactor),
         ("--ac-dims", "dims", Double(acDims)), ("--size-threshold", "size_threshold", sizeThreshold)]
    }

    func detector(_ kind: DetectionMethod) throws -> PoisonDetector {
        let overrides = namedSettings.filter { kind.defaults[$0.key] != nil }
        do {
            return try kind.detector(overrides: Dictionary(uniqueKeysWithValues: overrides.map { ($0.key, $0.value) }), seed: seed)
        } catch let error as DefenseSettingError {
            // A range error names the flag that gave the setting.
            if let key = error.key, let value = error.value, let flag = overrides.first(where: { $0.key == key })?.flag {
                throw ValidationError("\(flag) \(String(format: "%g", value)) \(error.message)")
            }
            throw ValidationError(error.description)
        }
    }

    func validate() throws {
        guard let kind = DetectionMethod(rawValue: method) else {
            throw ValidationError("--method \(method): unknown detector; expected one of "
                + DetectionMethod.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if let limit, limit < 1 { throw ValidationError("--limit \(limit) is out of range: expected at least 1") }
        try FlagLimits.fraction(cleanFrac, flag: "--clean-frac")
        guard cleanFrac > 0 else { throw ValidationError("--clean-frac 0 leaves STRIP no clean images") }
        _ = try detector(kind)
    }

    func run() throws {
        let kind = DetectionMethod(rawValue: method)!
        var set = try PoisonedSetFolder.read(directory: poisonedSet)
        if let limit, limit < set.count {
            set = PoisonedTrainingSet(images: set.images.subset(Array(0..<limit)), isPoisoned: Array(set.isPoisoned[..<limit]))
        }
        let model = try ModelFiles.loadModel(checkpoint, strict: !nonStrict, on: compute.backend(for: .inference))
        try Folder.create(outputDir)
        var clean = ImageSet(pixels: [], labels: [])
        var cleanSource = ""
        if kind.usesCleanImages {
            let dataSet = try data.load()
            let (permutation, splitPath) = try Permutation.resolve(splitFile: data.splitFile, outputDirectory: outputDir,
                                                                   seed: seed, count: dataSet.train.count)
            clean = dataSet.train.subset(DataSplit(permutation: permutation, valFrac: cleanFrac).defender)
            cleanSource = ", \(clean.count) clean images from \(splitPath)"
        }
        let text = try TextLogWriter(path: (outputDir as NSString).appendingPathComponent("detect_log.txt"), truncate: true)
        func log(_ line: String) throws {
            print(line)
            text.append(line)
        }
        try log("\(kind.rawValue) on \(poisonedSet) (\(set.count) images, \(set.poisonedIndices.count) poisoned) with "
            + "\(checkpoint) (\(model.description))\(cleanSource), \(model.backend.summary)")
        let result = try DetectionResult.run(try detector(kind), model: model, inspected: set.images, truth: set.isPoisoned,
                                             clean: clean, checkpoint: checkpoint,
                                             poisonedSet: poisonedSet, directory: outputDir, log: log)
        for line in result.summary.split(separator: "\n") { try log(String(line)) }
        try log("wrote result.json, summary.txt and scores.npy to \(outputDir)")
    }
}
