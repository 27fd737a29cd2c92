import Datasets
import Foundation
import Formats
import NN
import Support

/// Settings of Neural Cleanse, named and defaulted as BackdoorBench's
/// `config/defense/nc/cifar10.yaml` (the flag names are its keys).
public struct NCConfig: Equatable {
    // Reverse engineering: Adam (betas 0.5, 0.9) on the tanh-parametrised mask and pattern.
    public var maskLearningRate: Float = 0.1
    public var initCost: Float = 1e-3
    /// atk_succ_threshold (the reference's 98.0 percent) as a fraction.
    public var attackSuccessThreshold: Double = 0.98
    public var patience = 5
    public var costMultiplier: Float = 2
    public var earlyStop = true
    public var earlyStopThreshold: Double = 0.99
    public var earlyStopPatience = 25
    /// nc_epoch: passes over the defender's images per class.
    public var epochs = 80
    public var batchSize = 256
    /// The tanh scaling's EPSILON: mask = tanh(a) / (2 + eps) + 0.5.
    public var epsilon: Float = 1e-7
    /// Reverse-engineer on the first N defender images only (nil: all; quick runs).
    public var imageLimit: Int?
    /// Classes whose anomaly index exceeds this (on the small side) are flagged.
    public var anomalyThreshold = 2.0
    // Unlearning: SGD (momentum 0.9, weight decay 5e-4), cosine schedule, augmented batches.
    public var unlearningRatio = 0.2
    public var fineTuneEpochs = 100
    public var fineTuneLearningRate: Float = 0.01
    public var seed: UInt64 = 0

    public init() {}

    /// The quick setting (tests, CPU runs): 8 reversal epochs on 160 images in batches of 16
    /// (80 Adam steps per class instead of the reference's thousands), 10 unlearning epochs.
    public static var quick: NCConfig {
        var config = NCConfig()
        config.epochs = 8
        config.batchSize = 16
        config.imageLimit = 160
        config.fineTuneEpochs = 10
        return config
    }

    public func validate() throws {
        func fail(_ key: String, _ value: Double, _ expected: String) -> DefenseSettingError {
            .outOfRange(NCDefense.name, key, value, expected: expected)
        }
        guard maskLearningRate > 0, maskLearningRate.isFinite else { throw fail("mask_lr", Double(maskLearningRate), "a number > 0") }
        guard initCost > 0, initCost.isFinite else { throw fail("init_cost", Double(initCost), "a number > 0") }
        guard attackSuccessThreshold > 0, attackSuccessThreshold <= 1 else {
            throw fail("atk_succ_threshold", Double(attackSuccessThreshold * 100), "a percentage in (0, 100]")
        }
        guard patience >= 1 else { throw fail("patience", Double(patience), "an integer >= 1") }
        guard costMultiplier > 1, costMultiplier.isFinite else { throw fail("cost_multiplier", Double(costMultiplier), "a number > 1") }
        guard earlyStopThreshold > 0, earlyStopThreshold <= 1 else {
            throw fail("early_stop_threshold", Double(earlyStopThreshold), "a number in (0, 1]")
        }
        guard earlyStopPatience >= 1 else { throw fail("early_stop_patience", Double(earlyStopPatience), "an integer >= 1") }
        guard epochs >= 1 else { throw fail("nc_epoch", Double(epochs), "an integer >= 1") }
        guard batchSize >= 1 else { throw fail("batch_size", Double(batchSize), "an integer >= 1") }
        if let imageLimit, imageLimit < 1 { throw fail("nc_images", Double(imageLimit), "an integer >= 1") }
        guard anomalyThreshold > 0, anomalyThreshold.isFinite else { throw fail("anomaly_threshold", Double(anomalyThreshold), "a number > 0") }
        guard unlearningRatio > 0, unlearningRatio < 1 else { throw fail("unlearning_ratio", Double(unlearningRatio), "a number in (0, 1)") }
        guard fineTuneEpochs >= 0 else { throw fail("epochs", Double(fineTuneEpochs), "an integer >= 0") }
        guard fineTuneLearningRate > 0, fineTuneLearningRate.isFinite else { throw fail("lr", Double(fineTuneLearningRate), "a number > 0") }
    }
}

/// One class's reverse-engineered trigger: input (1 - m) x + m p with a 32 x 32 mask m and a
/// 3 x 32 x 32 pattern p, both in [0, 1] pixel scale (p is normalised as the images are).
public struct ReversedTrigger: Equatable {
    public var target: Int
    public var mask: [Float]
    /// CHW.
    public var pattern: [Float]
    /// The mask's L1 norm (what the anomaly index ranks).
    public var norm: Double
    /// Attack success of the epoch the trigger was kept from (nil: no epoch reached the threshold).
    public var attackSuccess: Double?
    public var epochsRun: Int

    /// The mask as a gray image and mask * pattern as an RGB one, for reports.
    public var images: (mask: PNGImage, trigger: PNGImage) {
        let plane = ImageSet.height * ImageSet.width
        func byte(_ x: Float) -> UInt8 { UInt8(min(max((x * 255).rounded(), 0), 255)) }
        let gray = mask.map(byte)
        var rgb = [UInt8](repeating: 0, count: plane * 3)
        for p in 0..<plane {
            for c in 0..<3 { rgb[p * 3 + c] = byte(mask[p] * pattern[c * plane + p]) }
        }
        return (PNGImage(width: ImageSet.width, height: ImageSet.height, channels: 1, pixels: gray),
                PNGImage(width: ImageSet.width, height: ImageSet.height, channels: 3, pixels: rgb))
    }

    /// Stamps the trigger in pixel space, x (1 - m) + 255 m p, truncated to bytes as the
    /// reference's `astype('uint8')`.
    public func stamp(_ images: ImageSet) -> ImageSet {
        let plane = ImageSet.height * ImageSet.width
        var pixels = images.pixels
        for n in 0..<images.count {
            let base = n * ImageSet.pixelsPerImage
            for p in 0..<plane {
                let m = mask[p]
                for c in 0..<3 {
                    let value = Float(pixels[base + p * 3 + c]) * (1 - m) + 255 * m * pattern[c * plane + p]
                    pixels[base + p * 3 + c] = UInt8(min(max(value, 0), 255).rounded(.down))
                }
            }
        }
        return ImageSet(pixels: pixels, labels: images.labels)
    }
}

/// The median-absolute-deviation outlier test of Neural Cleanse on the classes' mask norms.
public struct AnomalyReport: Equatable {
    public var median: Double
    /// 1.4826 x the median absolute deviation (consistent with a normal's std).
    public var mad: Double
    /// |min norm - median| / mad.
    public var anomalyIndex: Double
    /// Classes at or below the median whose deviation exceeds the threshold, smallest norm first.
    public var flagged: [Int]

    public static let consistencyConstant = 1.4826

    /// Medians as numpy's (the mean of the two middle values for an even count; BackdoorBench's
    /// torch.median takes the lower one).
    public init(norms: [Double], threshold: Double = 2) {
        func median(_ values: [Double]) -> Double {
            let s = values.sorted(), n = s.count
            return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
        }
        precondition(!norms.isEmpty, "no mask norms")
        let m = median(norms)
        let mad = Self.consistencyConstant * median(norms.map { abs($0 - m) })
        // A zero MAD (most norms equal) makes any smaller norm infinitely anomalous, as numpy's division would.
        func deviation(_ x: Double) -> Double { mad > 0 ? abs(x - m) / mad : (x == m ? 0 : .infinity) }
        self.median = m
        self.mad = mad
        anomalyIndex = deviation(norms.min()!)
        flagged = norms.indices.filter { norms[$0] <= m && deviation(norms[$0]) > threshold }
            .sorted { (norms[$0], $0) < (norms[$1], $1) }
    }
}

/// Neural Cleanse (Wang et al., S&P 2019) as BackdoorBench's `defense/nc.py` runs it: for each
/// class, the smallest mask (and its pattern) that sends the defender's images there; classes
/// whose mask is anomalously small are flagged, and the model is then fine-tuned on the clean
/// images with a share of them carrying each flagged class's trigger under their true labels.
public enum NeuralCleanse {
    /// Loss and gradients of one batch with respect to the tanh-space mask and pattern.
    public struct Objective {
        public var crossEntropy: Float
        /// L1 norm of the mask.
        public var regularisation: Float
        public var loss: Float
        public var correct: Int
        public var maskGradient: [Float]
        public var patternGradient: [Float]
    }

    /// The mask (or pattern) from its tanh parameter: tanh(a) / (2 + eps) + 0.5.
    static func squash(_ a: [Float], epsilon: Float) -> [Float] { a.map { tanh($0) / (2 + epsilon) + 0.5 } }

    /// CE(model((1 - m) x + m normalise(p)), target) + cost |m|_1 on normalised NCHW images, the
    /// model in evaluation mode; gradients through the model's input gradient and the chain rule
    /// (the pattern is normalised per channel, so its gradient is divided by the channel's std).
    public static func objective(_ model: Model, maskTanh: [Float], patternTanh: [Float], images: [Float], count: Int,
                                 target: Int, cost: Float, epsilon: Float = 1e-7,
                                 normalization: Normalization = .cifar10) throws -> Objective {
        let plane = ImageSet.height * ImageSet.width
        let mask = squash(maskTanh, epsilon: epsilon), pattern = squash(patternTanh, epsilon: epsilon)
        var normalisedPattern = pattern
        for c in 0..<3 {
            for p in 0..<plane {
                normalisedPattern[c * plane + p] = (pattern[c * plane + p] - normalization.mean[c]) / normalization.std[c]
            }
        }
        var input = images
        for n in 0..<count {
            for c in 0..<3 {
                let base = (n * 3 + c) * plane
                for p in 0..<plane {
                    input[base + p] = (1 - mask[p]) * images[base + p] + mask[p] * normalisedPattern[c * plane + p]
                }
            }
        }
        let logits = try model.forward(images: input, count: count, mode: .evaluation)
        let labels = [Int32](repeating: Int32(target), count: count)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: model.numClasses)
        let g = try model.backward(logitsGradient: ce.logitsGradient, weightGradients: false, wantInputGradient: true)!
        var maskGradient = [Float](repeating: cost, count: plane)
        var patternGradient = [Float](repeating: 0, count: 3 * plane)
        for n in 0..<count {
            for c in 0..<3 {
                let base = (n * 3 + c) * plane
                for p in 0..<plane {
                    let gi = g[base + p]
                    maskGradient[p] += gi * (normalisedPattern[c * plane + p] - images[base + p])
                    patternGradient[c * plane + p] += gi * mask[p]
                }
            }
        }
        for p in 0..<plane {
            let t = tanh(maskTanh[p])
            maskGradient[p] *= (1 - t * t) / (2 + epsilon)
        }
        for c in 0..<3 {
            for p in 0..<plane {
                let t = tanh(patternTanh[c * plane + p])
                patternGradient[c * plane + p] *= (1 - t * t) / (2 + epsilon) / normalization.std[c]
            }
        }
        let regularisation = mask.reduce(0, +)
        return Objective(crossEntropy: ce.meanLoss, regularisation: regularisation,
                         loss: ce.meanLoss + cost * regularisation, correct: ce.correct,
                         maskGradient: maskGradient, patternGradient: patternGradient)
    }

    /// Reverse-engineers the trigger of `target` on `images` (augmented batches, as the
    /// reference's training transform), with the reference's cost schedule: the cost goes up
    /// x multiplier after `patience` epochs at or above the attack-success threshold, down
    /// / multiplier^1.5 after `patience` epochs below; the kept mask is the smallest (mean L1
    /// over an epoch) of an epoch at the threshold; early stop once the cost has moved both
    /// ways and the best norm has not improved by 1% for `earlyStopPatience` epochs.
    public static func reverse(_ model: Model, images: ImageSet, target: Int, config: NCConfig,
                               log: (String) throws -> Void = { _ in }) throws -> ReversedTrigger {
        let plane = ImageSet.height * ImageSet.width
        var maskTanh = [Float](repeating: 1, count: plane), patternTanh = [Float](repeating: 1, count: 3 * plane)
        var maskAdam = Adam(count: plane, learningRate: config.maskLearningRate)
        var patternAdam = Adam(count: 3 * plane, learningRate: config.maskLearningRate)
        let loader = BatchLoader(images: images, batchSize: config.batchSize, shuffle: true, augment: true,
                                 seed: config.seed &+ UInt64(target))
        var cost = config.initCost
        var best: (mask: [Float], pattern: [Float], success: Double?)?
        var regBest = Double.infinity, earlyStopRegBest = Double.infinity
        var costSetCounter = 0, upCounter = 0, downCounter = 0, earlyStopCounter = 0
        var upFlag = false, downFlag = false
        var epochsRun = 0
        for epoch in 0..<config.epochs {
            var successSum = 0.0, regSum = 0.0, batches = 0
            for batch in loader.epoch(epoch) {
                let o = try objective(model, maskTanh: maskTanh, patternTanh: patternTanh, images: batch.images,
                                      count: batch.count, target: target, cost: cost, epsilon: config.epsilon)
                maskAdam.step(&maskTanh, gradient: o.maskGradient)
                patternAdam.step(&patternTanh, gradient: o.patternGradient)
                successSum += Double(o.correct) / Double(batch.count)
                regSum += Double(o.regularisation)
                batches += 1
            }
            epochsRun = epoch + 1
            // Epoch means of the batch accuracies and norms, as the reference's recorder.
            let success = successSum / Double(batches), reg = regSum / Double(batches)
            let reached = success >= config.attackSuccessThreshold
            func current() -> ([Float], [Float]) {
                (squash(maskTanh, epsilon: config.epsilon), squash(patternTanh, epsilon: config.epsilon))
            }
            if reached && reg < regBest {
                let (m, p) = current()
                best = (m, p, success)
                regBest = reg
            }
            if config.earlyStop {
                if regBest < .infinity {
                    earlyStopCounter = regBest >= config.earlyStopThreshold * earlyStopRegBest ? earlyStopCounter + 1 : 0
                }
                earlyStopRegBest = min(earlyStopRegBest, regBest)
                if downFlag && upFlag && earlyStopCounter >= config.earlyStopPatience { break }
            }
            if cost == 0 && reached {
                costSetCounter += 1
                if costSetCounter >= config.patience {
                    cost = config.initCost
                    (upCounter, downCounter, upFlag, downFlag) = (0, 0, false, false)
                }
            } else {
                costSetCounter = 0
            }
            if reached { (upCounter, downCounter) = (upCounter + 1, 0) } else { (upCounter, downCounter) = (0, downCounter + 1) }
            if upCounter >= config.patience {
                upCounter = 0
                cost *= config.costMultiplier
                upFlag = true
            } else if downCounter >= config.patience {
                downCounter = 0
                cost /= pow(config.costMultiplier, 1.5)
                downFlag = true
            }
            // Until an epoch reaches the threshold, the first epoch's trigger stands in.
            if best == nil {
                let (m, p) = current()
                best = (m, p, nil)
            }
        }
        let kept = best!
        let norm = kept.mask.reduce(0.0) { $0 + Double(abs($1)) }
        let trigger = ReversedTrigger(target: target, mask: kept.mask, pattern: kept.pattern, norm: norm,
                                      attackSuccess: kept.success, epochsRun: epochsRun)
        try log(String(format: "nc: class %d: mask L1 %.2f after %d epochs (%@)", target, norm, epochsRun,
                       kept.success.map { String(format: "attack success %.1f%%", 100 * $0) } ?? "never reached the threshold"))
        return trigger
    }

    /// The unlearning set: the first (1 - ratio) of the clean images as they are, then the rest
    /// once per trigger, stamped, under their true labels.
    public static func unlearningSet(_ clean: ImageSet, triggers: [ReversedTrigger], ratio: Double) -> ImageSet {
        let cut = Int(Double(clean.count) * (1 - ratio))
        let rest = clean.subset(Array(cut..<clean.count))
        return ImageSet(concatenating: [clean.subset(Array(0..<cut))] + triggers.map { $0.stamp(rest) })
    }

    public struct Result {
        public var triggers: [ReversedTrigger]
        public var anomaly: AnomalyReport
        /// Fine-tuning epochs' mean training loss and accuracy (empty when nothing was flagged).
        public var unlearningLog: [(loss: Double, accuracy: Double)]
    }

    /// Every class's trigger, the outlier test and, if a class is flagged, the unlearning fine-tune (in place).
    public static func run(_ model: Model, clean: ImageSet, config: NCConfig,
                           log: (String) throws -> Void = { _ in }) throws -> Result {
        try config.validate()
        guard clean.count > 0 else { throw DefenseError("nc: the defender has no clean images (--clean-frac)") }
        let images = config.imageLimit.map { $0 < clean.count ? clean.subset(Array(0..<$0)) : clean } ?? clean
        try log("nc: reverse-engineering \(model.numClasses) classes on \(images.count) images, up to \(config.epochs) epochs each")
        let triggers = try (0..<model.numClasses).map { try reverse(model, images: images, target: $0, config: config, log: log) }
        let anomaly = AnomalyReport(norms: triggers.map(\.norm), threshold: config.anomalyThreshold)
        try log(String(format: "nc: median %.3f, MAD %.3f, anomaly index %.3f; flagged: %@", anomaly.median, anomaly.mad,
                       anomaly.anomalyIndex, anomaly.flagged.isEmpty ? "none" : anomaly.flagged.map(String.init).joined(separator: ", ")))
        var unlearningLog: [(loss: Double, accuracy: Double)] = []
        if !anomaly.flagged.isEmpty && config.fineTuneEpochs > 0 {
            let set = unlearningSet(clean, triggers: anomaly.flagged.map { triggers[$0] }, ratio: config.unlearningRatio)
            var fineTune = FineTuningConfig(epochs: config.fineTuneEpochs, batchSize: config.batchSize,
                                            learningRate: config.fineTuneLearningRate, weightDecay: 5e-4)
            fineTune.seed = config.seed
            try log("nc: unlearning on \(set.count) images, the flagged triggers stamped on \(config.unlearningRatio) of them")
            unlearningLog = try FineTuning.run(model, on: set, config: fineTune, label: "nc: unlearning", log: log)
                .map { ($0.loss, $0.accuracy) }
        }
        return Result(triggers: triggers, anomaly: anomaly, unlearningLog: unlearningLog)
    }
}

/// Neural Cleanse as a defense: result.json gets the anomaly index, the flagged classes and the
/// mask norms; the output folder gets each class's mask and mask * pattern as PNG images.
public struct NCDefense: Defense {
    public var config: NCConfig
    public init(config: NCConfig = NCConfig()) { self.config = config }
    public static let name = "nc"
    /// BackdoorBench's cleaning_ratio.
    public static let defaultCleanFraction = 0.05
    /// Every setting by its config name (BackdoorBench's keys; nc_images 0: all images), as the
    /// runner's defense registry takes them.
    public var settings: [String: Double] {
        ["mask_lr": Double(config.maskLearningRate), "init_cost": Double(config.initCost),
         "atk_succ_threshold": config.attackSuccessThreshold * 100, "patience": Double(config.patience),
         "cost_multiplier": Double(config.costMultiplier), "early_stop_threshold": config.earlyStopThreshold,
         "early_stop_patience": Double(config.earlyStopPatience), "nc_epoch": Double(config.epochs),
         "nc_images": Double(config.imageLimit ?? 0), "batch_size": Double(config.batchSize),
         "unlearning_ratio": config.unlearningRatio, "epochs": Double(config.fineTuneEpochs),
         "lr": Double(config.fineTuneLearningRate), "anomaly_threshold": config.anomalyThreshold]
    }

    public static let defaults = NCDefense().settings

    /// From settings keyed as `settings` (missing keys take the defaults); validated.
    public init(settings: [String: Double], seed: UInt64) throws {
        let s = Self.defaults.merging(settings) { $1 }
        var c = NCConfig()
        c.maskLearningRate = Float(s["mask_lr"]!)
        c.initCost = Float(s["init_cost"]!)
        c.attackSuccessThreshold = s["atk_succ_threshold"]! / 100
        c.patience = Int(s["patience"]!)
        c.costMultiplier = Float(s["cost_multiplier"]!)
        c.earlyStopThreshold = s["early_stop_threshold"]!
        c.earlyStopPatience = Int(s["early_stop_patience"]!)
        c.epochs = Int(s["nc_epoch"]!)
        c.imageLimit = s["nc_images"]! == 0 ? nil : Int(s["nc_images"]!)
        c.batchSize = Int(s["batch_size"]!)
        c.unlearningRatio = s["unlearning_ratio"]!
        c.fineTuneEpochs = Int(s["epochs"]!)
        c.fineTuneLearningRate = Float(s["lr"]!)
        c.anomalyThreshold = s["anomaly_threshold"]!
        c.seed = seed
        try c.validate()
        self.init(config: c)
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let result = try NeuralCleanse.run(model, clean: clean, config: config, log: log)
        var decision = DefenseDecision(pruned: [])
        var files: [String] = []
        for trigger in result.triggers {
            let (mask, stamped) = trigger.images
            decision.images["nc_mask_\(trigger.target).png"] = mask
            decision.images["nc_trigger_\(trigger.target).png"] = stamped
            files += ["nc_mask_\(trigger.target).png", "nc_trigger_\(trigger.target).png"]
        }
        decision.details = [
            "anomaly_index": result.anomaly.anomalyIndex, "median": result.anomaly.median, "mad": result.anomaly.mad,
            "flagged_classes": result.anomaly.flagged, "mask_norms": result.triggers.map(\.norm),
            "unlearned": !result.unlearningLog.isEmpty, "trigger_images": files,
        ]
        return decision
    }
}
