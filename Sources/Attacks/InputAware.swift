import Backend
import Datasets
import Formats
import Foundation
import NN
import Support

/// The Input-aware dynamic attack's settings (Nguyen & Tran, NeurIPS 2020), BackdoorBench's
/// `config/attack/inputaware/default.yaml` defaults. The classifier's own optimiser (SGD, lr_C
/// 0.01, milestones 100/200/300/400) is the training run's.
public struct InputAwareSettings: Equatable {
    /// Adam (betas 0.5, 0.9) learning rates and MultiStepLR milestones (gamma 0.1) of the pattern
    /// generator (netG) and the mask generator (netM).
    public var lrG = 0.01, lrM = 0.01
    public var milestonesG = [200, 300, 400, 500], milestonesM = [10, 20]
    public var lambdaDiv = 1.0, lambdaNorm = 100.0, maskDensity = 0.032
    /// `clean_train_epochs`: the mask generator's pretraining epochs before the joint training.
    public var maskEpochs = 25
    /// Cross-trigger images per backdoor image (BackdoorBench: as many, `num_cross = num_bd`).
    public var crossRatio = 1.0
    /// The generators' first width (`channel_init`, 32 for CIFAR-10); narrower for CPU runs.
    public var generatorWidth = 32
    public init() {}

    public func validate() throws {
        func check(_ ok: Bool, _ name: String, _ value: Any, _ allowed: String) throws {
            if !ok { throw AttackError.invalidValue(name: name, value: "\(value)", allowed: allowed) }
        }
        try check(lrG > 0 && lrG.isFinite, "--lr-G", lrG, "a number > 0")
        try check(lrM > 0 && lrM.isFinite, "--lr-M", lrM, "a number > 0")
        try check(lambdaDiv >= 0 && lambdaDiv.isFinite, "--lambda-div", lambdaDiv, "a number >= 0")
        try check(lambdaNorm >= 0 && lambdaNorm.isFinite, "--lambda-norm", lambdaNorm, "a number >= 0")
        try check((0...1).contains(maskDensity), "--mask-density", maskDensity, "a number in [0, 1]")
        try check(maskEpochs >= 0, "--clean-train-epochs", maskEpochs, "a whole number >= 0")
        try check(crossRatio >= 0 && crossRatio.isFinite, "--cross-ratio", crossRatio, "a number >= 0")
        try check((1...256).contains(generatorWidth), "--generator-width", generatorWidth, "a whole number in 1...256")
    }

    /// Scales the generators to a run's classifier, as the experiment runner trains them: the
    /// reference's width 32 and 25 mask epochs belong to width 64 and 25+ epochs, so narrower
    /// (width / 2) and at most the run's epochs. A run that ends by the pattern generator's first
    /// milestone (the reference's 200) lowers its learning rate with the classifier's: otherwise
    /// the trigger keeps moving at full rate while the classifier follows it ten times slower
    /// (docs/attacks.md: at the quick preset ASR fell from 86% to 43% after the classifier's drop).
    public mutating func fit(classifierWidth: Int, epochs: Int, milestones: [Int]) {
        generatorWidth = max(classifierWidth / 2, 1)
        maskEpochs = min(maskEpochs, epochs)
        if let first = milestonesG.first, epochs <= first { milestonesG = milestones }
    }
}

/// The reference's `InputAwareGenerator` for CIFAR-10 (three down steps of two Conv2dBlocks and
/// a 2x2 max pool, a middle block, three up steps of a bilinear x2 upsample and two blocks, the
/// last without ReLU; then tanh / (2 + 1e-7) + 0.5), as a module tree with the reference's
/// state_dict names (`convblock_down_0.conv2d.weight`, `convblock_down_0.batch_norm.running_mean`, ...).
/// The mask generator (`outChannels` 1) carries the threshold `tanh(20 x - 10) / (2 + 1e-7) + 0.5`
/// as a last parameterless layer.
public enum InputAwareGenerator {
    public static let architecture = "inputaware-generator"

    public static func make(width: Int, outChannels: Int, seed: UInt64, on backend: Backend) throws -> Model {
        var generator = SeededGenerator(seed: seed, stream: "inputaware generator \(outChannels)")
        func block(_ input: Int, _ output: Int, relu: Bool = true) throws -> Layer {
            let bn = try BatchNorm2d(output, fuseReLU: relu, on: backend)
            bn.momentum = 0.05
            return Sequential(named: [("conv2d", try Conv2d(input, output, kernel: 3, padding: 1, bias: true,
                                                             generator: &generator, on: backend)),
                                      ("batch_norm", bn)])
        }
        var layers: [(String, Layer)] = []
        var (current, next) = (3, width)
        let steps = 3
        for step in 0..<steps {
            layers.append(("convblock_down_\(2 * step)", try block(current, next)))
            layers.append(("convblock_down_\(2 * step + 1)", try block(next, next)))
            layers.append(("downsample_\(step)", Sequential(named: [("maxpooling", Pool2d(.init(.max, kernel: 2), on: backend))])))
            if step < steps - 1 { (current, next) = (next, next * 2) }
        }
        layers.append(("convblock_middle", try block(next, next)))
        (current, next) = (next, next / 2)
        for step in 0..<steps {
            layers.append(("upsample_\(step)", Sequential(named: [("upsample", Upsample2d(on: backend))])))
            layers.append(("convblock_up_\(2 * step)", try block(current, current)))
            layers.append(("convblock_up_\(2 * step + 1)", try block(current, next, relu: step < steps - 1)))
            (current, next) = (next, next / 2)
            if step == steps - 2 { next = outChannels }
        }
        layers.append(("tanh", ScaledTanh(on: backend)))
        if outChannels == 1 { layers.append(("threshold", ScaledTanh(scale: 20, shift: -10, on: backend))) }
        return Model(root: Sequential(named: layers), architecture: architecture,
                     settings: ["width": "\(width)", "out_channels": "\(outChannels)"], numClasses: 0, on: backend)
    }
}

/// The reference's diversity loss `lambda mean_i(|x1_i - x2_i| / (|g1_i - g2_i| + 1e-7))`, with
/// |.| the root mean square over an image (`sqrt(mean(MSELoss(reduction="none")))`), and its
/// gradients with respect to the generated outputs g1 and g2 (g2's is g1's negated).
public enum DiversityLoss {
    public static let epsilon: Float = 1e-7

    public static func evaluate(images1: [Float], images2: [Float], outputs1: [Float], outputs2: [Float], count: Int,
                                lambda: Float) -> (loss: Float, gradient1: [Float]) {
        guard count > 0 else { return (0, []) }
        let (imageSize, outputSize) = (images1.count / count, outputs1.count / count)
        var loss: Float = 0
        var gradient = [Float](repeating: 0, count: outputs1.count)
        for i in 0..<count {
            var image: Float = 0, output: Float = 0
            for k in i * imageSize..<(i + 1) * imageSize { image += (images1[k] - images2[k]) * (images1[k] - images2[k]) }
            for k in i * outputSize..<(i + 1) * outputSize { output += (outputs1[k] - outputs2[k]) * (outputs1[k] - outputs2[k]) }
            let dImage = (image / Float(imageSize)).squareRoot(), dOutput = (output / Float(outputSize)).squareRoot()
            loss += dImage / (dOutput + epsilon)
            // d/dg1 of dImage / (dOutput + eps): -dImage / (dOutput + eps)^2 * (g1 - g2) / (D dOutput).
            guard dOutput > 0 else { continue }
            let factor = -lambda / Float(count) * dImage / ((dOutput + epsilon) * (dOutput + epsilon)) / (Float(outputSize) * dOutput)
            for k in i * outputSize..<(i + 1) * outputSize { gradient[k] = factor * (outputs1[k] - outputs2[k]) }
        }
        return (lambda * loss / Float(count), gradient)
    }
}

/// The Input-aware dynamic attack's state and its training steps (BackdoorBench's
/// `attack/inputaware.py`): the pattern generator netG and the mask generator netM, their Adam
/// optimisers, and the per-batch composition `x + (normalize(netG(x)) - x) * netM(x)` on
/// normalised images. Per classifier batch the first `int(rate x batch)` images get their own
/// pattern and the target label, the next `int(cross_ratio x that)` the pattern and mask of a
/// partner image from a second shuffled loader and keep their labels, the rest stay clean.
public final class InputAwareAttack {
    public let settings: InputAwareSettings
    public let target: Int
    public let rate: Double
    public let patternNet: Model
    public let maskNet: Model
    public let normalization: Normalization
    let adamG: ParameterAdam
    let adamM: ParameterAdam
    private var pending: Pending?

    /// What `learn` needs from the batch `trainingBatch` made.
    private struct Pending {
        var triggered: Int, cross: Int
        var masks: [Float]
        var diversityGradient: [Float]
    }

    public init(settings: InputAwareSettings, target: Int, rate: Double, seed: UInt64, on backend: Backend,
                normalization: Normalization = .cifar10) throws {
        try settings.validate()
        try Poisoning.validate(rate: rate)
        try Poisoning.validate(target: target)
        (self.settings, self.target, self.rate, self.normalization) = (settings, target, rate, normalization)
        patternNet = try InputAwareGenerator.make(width: settings.generatorWidth, outChannels: 3, seed: seed, on: backend)
        maskNet = try InputAwareGenerator.make(width: settings.generatorWidth, outChannels: 1, seed: seed, on: backend)
        adamG = ParameterAdam(learningRate: Float(settings.lrG), beta1: 0.5, beta2: 0.9)
        adamM = ParameterAdam(learningRate: Float(settings.lrM), beta1: 0.5, beta2: 0.9)
    }

    static let plane = Batch.height * Batch.width
    static let imageSize = Batch.channels * plane

    /// Patterns (normalised, N x 3 x 32 x 32) and masks (N x 1 x 32 x 32) of normalised images.
    func generate(_ images: [Float], count: Int, mode: Mode) throws -> (patterns: [Float], masks: [Float]) {
        var patterns = try patternNet.forward(images: images, count: count, mode: mode)
        for i in patterns.indices {
            let c = i / Self.plane % 3
            patterns[i] = (patterns[i] - normalization.mean[c]) / normalization.std[c]
        }
        // netM is fixed (evaluation mode) once pretrained, as the reference's netM.eval().
        let masks = try maskNet.forward(images: images, count: count, mode: .evaluation)
        return (patterns, masks)
    }

    /// x + (pattern - x) * mask for every image (the mask broadcast over the channels).
    static func compose(_ images: [Float], patterns: [Float], masks: [Float]) -> [Float] {
        (0..<images.count).map { i in
            let m = masks[i / imageSize * plane + i % plane]
            return images[i] + (patterns[i] - images[i]) * m
        }
    }

    /// How many images of a batch of `size` get their own trigger, and how many a partner's.
    func counts(batchSize size: Int, generator: inout SeededGenerator) -> (triggered: Int, cross: Int) {
        let share = rate * Double(size)
        // BackdoorBench's generalize_to_lower_pratio below one image per batch.
        let triggered = share >= 1 ? Int(share) : (Double(generator.nextFloat()) < share ? 1 : 0)
        return (triggered, min(Int(Double(triggered) * settings.crossRatio), size - triggered))
    }

    /// The classifier's batch from the clean (augmented, normalised) `batch` and `partners`
    /// (another shuffled batch, at least as large): netG runs in training mode on the triggered
    /// images and the partners of the cross images together (one BatchNorm batch; the reference
    /// runs them as two). Remembers what `learn` needs.
    public func trainingBatch(_ batch: Batch, partners: Batch, generator: inout SeededGenerator) throws -> Batch {
        let (triggered, cross) = counts(batchSize: batch.count, generator: &generator)
        let size = Self.imageSize
        guard triggered + cross > 0 else {
            pending = nil
            return batch
        }
        guard partners.count >= triggered + cross else {
            throw AttackError.invalidValue(name: "partner batch size", value: "\(partners.count)", allowed: "at least \(triggered + cross)")
        }
        // Sources: the triggered images, then the partners of the cross images.
        let sources = Array(batch.images[0..<triggered * size]) + Array(partners.images[triggered * size..<(triggered + cross) * size])
        let (patterns, masks) = try generate(sources, count: triggered + cross, mode: .training)
        let targets = Array(batch.images[0..<(triggered + cross) * size])
        var out = batch
        out.images.replaceSubrange(0..<(triggered + cross) * size, with: Self.compose(targets, patterns: patterns, masks: masks))
        for row in 0..<triggered { out.labels[row] = Int32(target) }
        // Diversity between the triggered images' patterns and the cross partners' (pairwise).
        let pairs = min(triggered, cross)
        var diversity = [Float](repeating: 0, count: patterns.count)
        lastDiversityLoss = 0
        if pairs > 0 {
            let p1 = Array(patterns[0..<pairs * size]), p2 = Array(patterns[triggered * size..<(triggered + pairs) * size])
            let div = DiversityLoss.evaluate(images1: Array(batch.images[0..<pairs * size]),
                                             images2: Array(partners.images[triggered * size..<(triggered + pairs) * size]),
                                             outputs1: p1, outputs2: p2, count: pairs, lambda: Float(settings.lambdaDiv))
            diversity.replaceSubrange(0..<pairs * size, with: div.gradient1)
            diversity.replaceSubrange(triggered * size..<(triggered + pairs) * size, with: div.gradient1.map { -$0 })
            lastDiversityLoss = div.loss
        }
        pending = Pending(triggered: triggered, cross: cross, masks: masks, diversityGradient: diversity)
        return out
    }

    /// The last batch's diversity loss (for the log).
    public private(set) var lastDiversityLoss: Float = 0

    /// Backpropagates the classifier's input gradient (of its mean loss, N x 3 x 32 x 32) through
    /// the composition into netG, adds the diversity loss's gradient, and steps netG's Adam.
    public func learn(inputGradient: [Float], epoch: Int) throws {
        guard try backpropagate(inputGradient: inputGradient) else { return }
        adamG.learningRate = MultiStepSchedule(baseLearningRate: Float(settings.lrG), milestones: settings.milestonesG).learningRate(epoch: epoch)
        try adamG.step(patternNet.parameters)
    }

    /// Writes netG's parameter gradients of the last batch; false when it had no generated images.
    func backpropagate(inputGradient: [Float]) throws -> Bool {
        guard let pending else { return false }
        self.pending = nil
        let size = Self.imageSize
        var g = pending.diversityGradient
        for i in 0..<(pending.triggered + pending.cross) * size {
            let c = i / Self.plane % 3
            // d(x + (p - x) m)/dp = m; the pattern was normalised: dp/draw = 1 / std.
            g[i] = (inputGradient[i] * pending.masks[i / size * Self.plane + i % Self.plane] + g[i]) / normalization.std[c]
        }
        try patternNet.backward(logitsGradient: g, weightGradients: true, wantInputGradient: false)
        return true
    }

    /// One epoch of netM's pretraining (`train_mask_step`): on pairs of shuffled batches,
    /// `lambda_norm mean(relu(m1 - density)) + lambda_div x diversity(m1, m2)` (the reference
    /// scales the diversity by lambda_div twice), netM in training mode on both halves at once.
    /// Returns the epoch's mean loss, norm and diversity.
    public func trainMaskEpoch(_ first: BatchLoader, _ second: BatchLoader, epoch: Int)
        throws -> (loss: Double, norm: Double, diversity: Double) {
        adamM.learningRate = MultiStepSchedule(baseLearningRate: Float(settings.lrM), milestones: settings.milestonesM).learningRate(epoch: epoch)
        let order1 = first.order(epoch: epoch), order2 = second.order(epoch: epoch)
        var sums = (loss: 0.0, norm: 0.0, diversity: 0.0)
        let batches = min(first.batchesPerEpoch, second.batchesPerEpoch)
        for number in 0..<batches {
            let a = first.batch(number, epoch: epoch, order: order1), b = second.batch(number, epoch: epoch, order: order2)
            let n = min(a.count, b.count)
            let size = Self.imageSize
            let images = Array(a.images[0..<n * size]) + Array(b.images[0..<n * size])
            let masks = try maskNet.forward(images: images, count: 2 * n, mode: .training)
            let (m1, m2) = (Array(masks[0..<n * Self.plane]), Array(masks[n * Self.plane..<2 * n * Self.plane]))
            let lambdaDiv = Float(settings.lambdaDiv), lambdaNorm = Float(settings.lambdaNorm), density = Float(settings.maskDensity)
            let div = DiversityLoss.evaluate(images1: Array(images[0..<n * size]), images2: Array(images[n * size..<2 * n * size]),
                                             outputs1: m1, outputs2: m2, count: n, lambda: lambdaDiv)
            let norm = m1.reduce(Float(0)) { $0 + max($1 - density, 0) } / Float(m1.count)
            var gradient = div.gradient1.map { $0 * lambdaDiv } + div.gradient1.map { -$0 * lambdaDiv }
            for k in 0..<m1.count where m1[k] > density { gradient[k] += lambdaNorm / Float(m1.count) }
            try maskNet.backward(logitsGradient: gradient, weightGradients: true, wantInputGradient: false)
            try adamM.step(maskNet.parameters)
            sums.loss += Double(lambdaNorm * norm + lambdaDiv * div.loss)
            sums.norm += Double(norm)
            sums.diversity += Double(div.loss)
        }
        let count = Double(max(batches, 1))
        return (sums.loss / count, sums.norm / count, sums.diversity / count)
    }

    /// Each listed image with its own generated trigger (both networks in evaluation mode), or
    /// with the trigger generated from `partners` (images of `source`, one per index: the cross
    /// mode), composed on the normalised image and stored back as the nearest byte.
    public func poison(_ set: inout ImageSet, at indices: [Int], partners: (source: ImageSet, indices: [Int])? = nil,
                       batchSize: Int = 128) throws {
        let size = Self.imageSize
        for start in stride(from: 0, to: indices.count, by: batchSize) {
            let range = start..<min(start + batchSize, indices.count)
            let chunk = Array(indices[range])
            let clean = Augmentation.testBatch(set, indices: chunk, normalization: normalization)
            let generating = partners.map { Augmentation.testBatch($0.source, indices: Array($0.indices[range]), normalization: normalization) } ?? clean
            let (patterns, masks) = try generate(generating.images, count: chunk.count, mode: .evaluation)
            let composed = Self.compose(clean.images, patterns: patterns, masks: masks)
            for (row, index) in chunk.enumerated() {
                var planes = [Double](repeating: 0, count: size)
                for i in 0..<size {
                    let c = i / Self.plane
                    planes[i] = Double((composed[row * size + i] * normalization.std[c] + normalization.mean[c]) * 255)
                }
                ImagePlanes.store(planes, into: &set.pixels, image: index, rule: .toNearestOrAwayFromZero)
            }
        }
    }
}

/// The Input-aware attack inside a training run: netM's pretraining first, then per batch the
/// composition with partners from a second loader over the same images (the reference's
/// `train_dl2`, shuffled on its own stream).
public final class InputAwareTraining: JointTrainingAttack {
    public let attack: InputAwareAttack
    let first, second: BatchLoader
    let seed: UInt64
    private var partnerOrder: (epoch: Int, order: [Int])?

    public init(_ attack: InputAwareAttack, trainSet: ImageSet, batchSize: Int, augment: Bool, seed: UInt64) {
        self.attack = attack
        self.seed = seed
        first = BatchLoader(images: trainSet, batchSize: batchSize, shuffle: true, augment: augment, seed: seed ^ 0x6d61_736b)
        second = BatchLoader(images: trainSet, batchSize: batchSize, shuffle: true, augment: augment, seed: seed ^ 0x7061_7274)
    }

    public func prepare(log: (String) -> Void) throws {
        for epoch in 0..<attack.settings.maskEpochs {
            let r = try attack.trainMaskEpoch(first, second, epoch: epoch)
            log(String(format: "mask generator epoch %d/%d: loss %.4f, norm %.4f, diversity %.4f",
                       epoch + 1, attack.settings.maskEpochs, r.loss, r.norm, r.diversity))
        }
    }

    public func trainingBatch(_ clean: Batch, epoch: Int, number: Int) throws -> Batch {
        if partnerOrder?.epoch != epoch { partnerOrder = (epoch, second.order(epoch: epoch)) }
        let partners = second.batch(number % second.batchesPerEpoch, epoch: epoch, order: partnerOrder?.order)
        var generator = BatchLoader.poisoningStream(seed: seed, epoch: epoch, batch: number)
        return try attack.trainingBatch(clean, partners: partners, generator: &generator)
    }

    public func learn(inputGradient: [Float], epoch: Int) throws {
        try attack.learn(inputGradient: inputGradient, epoch: epoch)
    }

    /// One epoch's draw as a fixed set with the trained generators (evaluation mode), for
    /// `poison --export`: batch by batch as epoch `epoch` trains, before augmentation, rounded to
    /// bytes; flags mark the backdoor images only (not the cross ones).
    public func epochDraw(epoch: Int = 0) throws -> PoisonedTrainingSet {
        let images = first.images
        let loader = BatchLoader(images: images, batchSize: first.batchSize, shuffle: true, augment: false, seed: seed)
        let order = loader.order(epoch: epoch), partnerOrder = second.order(epoch: epoch)
        var out = images
        var flags = [Bool](repeating: false, count: images.count)
        for number in 0..<loader.batchesPerEpoch {
            let indices = loader.indices(batch: number, order: order)
            let partners = second.indices(batch: number % second.batchesPerEpoch, order: partnerOrder)
            var generator = BatchLoader.poisoningStream(seed: seed, epoch: epoch, batch: number)
            let (triggered, cross) = attack.counts(batchSize: indices.count, generator: &generator)
            try attack.poison(&out, at: Array(indices[0..<triggered]))
            try attack.poison(&out, at: Array(indices[triggered..<triggered + cross]),
                              partners: (images, Array(partners[triggered..<triggered + cross])))
            for index in indices[0..<triggered] { (out.labels[index], flags[index]) = (attack.target, true) }
        }
        return PoisonedTrainingSet(images: out, isPoisoned: flags)
    }

    public func trainingState() throws -> [String: HostTensor] { try attack.trainingState() }

    public func restoreTrainingState(_ tensors: [String: HostTensor], source: String) throws {
        try attack.restoreTrainingState(tensors, source: source)
    }

    public func poisonTest(from cleanTest: ImageSet) throws -> ImageSet {
        var set = cleanTest.subset(cleanTest.labels.indices.filter { cleanTest.labels[$0] != attack.target })
        try attack.poison(&set, at: Array(set.labels.indices))
        set.labels = [Int](repeating: attack.target, count: set.count)
        return set
    }
}

extension InputAwareAttack: ImageTrigger, Equatable {
    /// The same trigger only as the same networks (weights are compared by the file round trip).
    public static func == (a: InputAwareAttack, b: InputAwareAttack) -> Bool { a === b }

    /// ImageTrigger's apply cannot throw; the generators' passes fail only when the backend
    /// does (out of memory), which no caller could recover from either.
    public func apply(to set: inout ImageSet, at indices: [Int]) {
        do { try poison(&set, at: indices) } catch { preconditionFailure("Input-aware generators failed: \(error)") }
    }

    /// Both generators' state_dicts under the reference's checkpoint keys `netG.` and `netM.`.
    public func stateDicts() throws -> [String: HostTensor] {
        try patternNet.stateDict().prefixed("netG.").merging(try maskNet.stateDict().prefixed("netM.")) { $1 }
    }

    /// Loads both generators from `stateDicts`' keys.
    func loadStateDicts(_ tensors: [String: HostTensor], source: String) throws {
        for (prefix, net) in [("netG.", patternNet), ("netM.", maskNet)] {
            try net.load(stateDict: tensors.under(prefix), source: "\(source) \(prefix)*")
        }
    }

    /// The generators and their Adam states (`adamG.`, `adamM.`): what a resumed run needs.
    public func trainingState() throws -> [String: HostTensor] {
        try stateDicts().merging(adamG.state(patternNet.parameters).prefixed("adamG.")) { $1 }
            .merging(adamM.state(maskNet.parameters).prefixed("adamM.")) { $1 }
    }

    public func restoreTrainingState(_ tensors: [String: HostTensor], source: String) throws {
        try loadStateDicts(tensors.filter { $0.key.hasPrefix("netG.") || $0.key.hasPrefix("netM.") }, source: source)
        try adamG.restore(patternNet.parameters, from: tensors.under("adamG."), source: source + " adamG.*")
        try adamM.restore(maskNet.parameters, from: tensors.under("adamM."), source: source + " adamM.*")
    }

    /// The trained generators of a trigger information file (for evaluation: no training state).
    public convenience init(stateDicts tensors: [String: HostTensor], generatorWidth: Int, target: Int, rate: Double = 0,
                            on backend: Backend, source: String) throws {
        var settings = InputAwareSettings()
        settings.generatorWidth = generatorWidth
        try self.init(settings: settings, target: target, rate: rate, seed: 0, on: backend)
        try loadStateDicts(tensors, source: source)
    }
}
