import Datasets
import Foundation
import NN

/// Settings of Shared Adversarial Unlearning, named and defaulted as BackdoorBench's
/// `config/defense/sau/config.yaml` (its `defense/sau.py` is the authors' code).
public struct SAUConfig: Equatable {
    /// Unlearning rounds (epochs over the defender's images; the reference's n_rounds).
    public var rounds = 100
    public var batchSize = 256
    /// Adam (betas 0.9, 0.999, amsgrad, no weight decay) at a constant rate: the reference builds
    /// a cosine scheduler and never steps it.
    public var learningRate: Float = 1e-4
    /// L-inf bound of the perturbation in [0, 1] pixel units (trigger_norm).
    public var triggerNorm: Float = 0.2
    /// PGD's signed step (adv_lr) and its number of steps (adv_steps).
    public var advLearningRate: Float = 0.2
    public var advSteps = 5
    /// PGD objective: beta_1 L_adv + beta_2 L_share.
    public var beta1 = 0.01
    public var beta2 = 1.0
    /// Unlearning loss: lmd_1 L_clean + lmd_2 L_adversarial + lmd_3 L_shared.
    public var lmd1 = 1.0
    public var lmd2 = 0.0
    public var lmd3 = 1.0
    /// Model updates per PGD attack (outer_steps).
    public var outerSteps = 1
    public init() {}

    var settings: [String: Double] {
        ["n_rounds": Double(rounds), "batch_size": Double(batchSize), "lr": Double(learningRate),
         "trigger_norm": Double(triggerNorm), "adv_lr": Double(advLearningRate), "adv_steps": Double(advSteps),
         "beta_1": beta1, "beta_2": beta2, "lmd_1": lmd1, "lmd_2": lmd2, "lmd_3": lmd3, "outer_steps": Double(outerSteps)]
    }

    init(settings s: [String: Double]) throws {
        func fail(_ key: String, _ expected: String) -> DefenseSettingError { .outOfRange(SAUDefense.name, key, s[key]!, expected: expected) }
        func count(_ key: String) throws -> Int {
            guard s[key]! >= 1, s[key]! == s[key]!.rounded(), s[key]! < 1e9 else { throw fail(key, "a whole number at least 1") }
            return Int(s[key]!)
        }
        func positive(_ key: String) throws -> Float {
            guard s[key]! > 0 else { throw fail(key, "a positive number") }
            return Float(s[key]!)
        }
        func weight(_ key: String) throws -> Double {
            guard s[key]! >= 0 else { throw fail(key, "a number at least 0") }
            return s[key]!
        }
        (rounds, batchSize, advSteps, outerSteps) = (try count("n_rounds"), try count("batch_size"), try count("adv_steps"),
                                                     try count("outer_steps"))
        (learningRate, triggerNorm, advLearningRate) = (try positive("lr"), try positive("trigger_norm"), try positive("adv_lr"))
        (beta1, beta2, lmd1, lmd2, lmd3) = (try weight("beta_1"), try weight("beta_2"), try weight("lmd_1"), try weight("lmd_2"),
                                            try weight("lmd_3"))
    }
}

/// The two objectives of SAU on logits, and its PGD step. Masks follow the reference: an image is
/// attacked on a model when that model's prediction on it moves off its clean prediction, shared
/// when both are attacked to the same class.
public enum SharedAdversarial {
    public struct AttackObjective {
        public var value: Double
        /// d value / d logits of the model being repaired and of the backdoored reference.
        public var gradient: [Float]
        public var referenceGradient: [Float]
        /// Images whose perturbation is already a shared adversarial example.
        public var shared: Int
    }

    /// PGD's objective (minimised): beta_1 L_adv + beta_2 L_share with
    /// L_adv = -(sum of CE over the images not yet attacked on the model + the same on the
    /// reference) / 2N, and L_share = sum over the images not yet shared of JS(p || r) / N,
    /// p, r the softmaxes clamped below at 1e-8.
    public static func attackObjective(logits: [Float], referenceLogits: [Float], labels: [Int32], cleanPredictions: [Int],
                                       referenceCleanPredictions: [Int], classes: Int, beta1: Double,
                                       beta2: Double) -> AttackObjective {
        let n = labels.count
        let q = CrossEntropy.probabilities(logits: logits, classes: classes)
        let qr = CrossEntropy.probabilities(logits: referenceLogits, classes: classes)
        let predicted = CrossEntropy.predictions(logits: logits, classes: classes)
        let predictedRef = CrossEntropy.predictions(logits: referenceLogits, classes: classes)
        var value = 0.0, shared = 0
        var gradient = [Float](repeating: 0, count: n * classes), referenceGradient = gradient
        let floor = 1e-8
        for i in 0..<n {
            let row = i * classes, label = Int(labels[i])
            let attacked = predicted[i] != cleanPredictions[i], attackedRef = predictedRef[i] != referenceCleanPredictions[i]
            let isShared = attacked && attackedRef && predicted[i] == predictedRef[i]
            if isShared { shared += 1 }
            // Ascending CE where the attack has not succeeded yet: d(-CE / 2N)/dz = -(q - onehot) / 2N.
            for (probabilities, done, into) in [(q, attacked, 0), (qr, attackedRef, 1)] where !done {
                value -= beta1 * -log(max(probabilities[row + label], 1e-300)) / Double(2 * n)
                for c in 0..<classes {
                    let g = -beta1 * (probabilities[row + c] - (c == label ? 1 : 0)) / Double(2 * n)
                    if into == 0 { gradient[row + c] += Float(g) } else { referenceGradient[row + c] += Float(g) }
                }
            }
            guard !isShared else { continue }
            // JS(p, r) = 1/2 sum p log(p/m) + r log(r/m), m = (p + r)/2: dJS/dp = log(p/m)/2 (zero where clamped).
            var dp = [Double](repeating: 0, count: classes), dr = dp
            for c in 0..<classes {
                let p = max(q[row + c], floor), r = max(qr[row + c], floor), m = (p + r) / 2
                value += beta2 * 0.5 * (p * log(p / m) + r * log(r / m)) / Double(n)
                if q[row + c] >= floor { dp[c] = beta2 * 0.5 * log(p / m) / Double(n) }
                if qr[row + c] >= floor { dr[c] = beta2 * 0.5 * log(r / m) / Double(n) }
            }
            softmaxBackward(dp, probabilities: q, row: row, into: &gradient)
            softmaxBackward(dr, probabilities: qr, row: row, into: &referenceGradient)
        }
        return AttackObjective(value: value, gradient: gradient, referenceGradient: referenceGradient, shared: shared)
    }

    public struct UnlearningLoss {
        public var value: Double
        /// d value / d logits on the clean and on the perturbed images (of the model being repaired).
        public var cleanGradient: [Float]
        public var perturbedGradient: [Float]
        /// Images whose perturbation fools the reference away from both its clean prediction and the label.
        public var potentialPoison: Int
    }

    /// The unlearning loss: lmd_1 CE(clean) + lmd_2 CE(perturbed) + lmd_3 L_shared, where over the
    /// images whose perturbation moves the reference to a class k other than the label and its clean
    /// prediction, L_shared = sum of (-log(1e-6 + min(1 - p_k, 0.999)) - log(1 + 1e-6 - max(p_k, 0.001))) / 2N,
    /// p the repaired model's softmax on the perturbed image (1 - p_k summed over the other classes).
    public static func unlearningLoss(cleanLogits: [Float], perturbedLogits: [Float], referencePerturbedLogits: [Float],
                                      referenceCleanPredictions: [Int], labels: [Int32], classes: Int, lmd1: Double,
                                      lmd2: Double, lmd3: Double) -> UnlearningLoss {
        let n = labels.count
        let clean = CrossEntropy.evaluate(logits: cleanLogits, labels: labels, classes: classes)
        let adversarial = CrossEntropy.evaluate(logits: perturbedLogits, labels: labels, classes: classes)
        var value = lmd1 * Double(clean.meanLoss) + lmd2 * Double(adversarial.meanLoss)
        let cleanGradient = clean.logitsGradient.map { Float(lmd1) * $0 }
        var perturbedGradient = adversarial.logitsGradient.map { Float(lmd2) * $0 }
        let q = CrossEntropy.probabilities(logits: perturbedLogits, classes: classes)
        let predictedRef = CrossEntropy.predictions(logits: referencePerturbedLogits, classes: classes)
        var potential = 0
        for i in 0..<n where predictedRef[i] != Int(labels[i]) && predictedRef[i] != referenceCleanPredictions[i] {
            potential += 1
            let row = i * classes, k = predictedRef[i]
            let pos = q[row + k]
            var neg = 0.0
            for c in 0..<classes where c != k { neg += q[row + c] }
            value += lmd3 * (-log(1e-6 + min(neg, 0.999)) - log(1 + 1e-6 - max(pos, 0.001))) / Double(2 * n)
            // d/dneg and d/dpos (zero where clamped), then through the softmax.
            let dNeg = neg <= 0.999 ? -1 / (1e-6 + neg) : 0, dPos = pos >= 0.001 ? 1 / (1 + 1e-6 - pos) : 0
            let scale = lmd3 / Double(2 * n)
            var dq = [Double](repeating: scale * dNeg, count: classes)
            dq[k] = scale * dPos
            softmaxBackward(dq, probabilities: q, row: row, into: &perturbedGradient)
        }
        return UnlearningLoss(value: value, cleanGradient: cleanGradient, perturbedGradient: perturbedGradient,
                              potentialPoison: potential)
    }

    /// Adds d/dz of a loss with gradient `dq` with respect to the softmax q of row `row`: q_j (dq_j - <dq, q>).
    static func softmaxBackward(_ dq: [Double], probabilities q: [Double], row: Int, into gradient: inout [Float]) {
        var inner = 0.0
        for c in dq.indices { inner += dq[c] * q[row + c] }
        for c in dq.indices { gradient[row + c] += Float(q[row + c] * (dq[c] - inner)) }
    }

    /// One PGD step on the pixel-space perturbation: pert - stepSize sign(d/dpert), clamped to
    /// [-bound, bound]. `inputGradient` is with respect to the normalised image, so d/dpert divides
    /// it by each channel's std.
    public static func step(_ pert: inout [Float], inputGradient: [Float], stepSize: Float, bound: Float,
                            normalization: Normalization = .cifar10) {
        let plane = ImageSet.height * ImageSet.width
        for i in pert.indices {
            let g = inputGradient[i] / normalization.std[(i / plane) % 3]
            let sign: Float = g > 0 ? 1 : (g < 0 ? -1 : 0)
            pert[i] = min(max(pert[i] - stepSize * sign, -bound), bound)
        }
    }

    /// The normalised images of `images` with the pixel-space `pert` added (no clamp to [0, 1], as the reference).
    static func perturbed(_ images: [Float], _ pert: [Float], normalization: Normalization = .cifar10) -> [Float] {
        let plane = ImageSet.height * ImageSet.width
        return images.indices.map { i in images[i] + pert[i] / normalization.std[(i / plane) % 3] }
    }

    /// The reference's Shared_PGD with init "max" and the L-inf projection: the perturbation starts
    /// at +bound and takes `advSteps` signed steps on the attack objective, stopping early once
    /// every image is shared. Both models run in evaluation mode.
    public static func attack(model: Model, reference: Model, images: [Float], labels: [Int32], cleanPredictions: [Int],
                              referenceCleanPredictions: [Int], config: SAUConfig) throws -> (pert: [Float], shared: Int) {
        var pert = [Float](repeating: config.triggerNorm, count: images.count)
        var shared = 0
        for _ in 0..<config.advSteps {
            let x = perturbed(images, pert)
            let logits = try model.forward(images: x, count: labels.count, mode: .evaluation)
            let referenceLogits = try reference.forward(images: x, count: labels.count, mode: .evaluation)
            let objective = attackObjective(logits: logits, referenceLogits: referenceLogits, labels: labels,
                                            cleanPredictions: cleanPredictions, referenceCleanPredictions: referenceCleanPredictions,
                                            classes: model.numClasses, beta1: config.beta1, beta2: config.beta2)
            shared = objective.shared
            let g = try model.backward(logitsGradient: objective.gradient, weightGradients: false, wantInputGradient: true)!
            let gr = try reference.backward(logitsGradient: objective.referenceGradient, weightGradients: false,
                                            wantInputGradient: true)!
            step(&pert, inputGradient: zip(g, gr).map { $0 + $1 }, stepSize: config.advLearningRate, bound: config.triggerNorm)
            if shared == labels.count { break }
        }
        return (pert, shared)
    }
}

/// SAU (Wei et al., NeurIPS 2023) as BackdoorBench's `defense/sau.py`: for each batch of the
/// defender's clean images, PGD finds perturbations that both the backdoored model (a frozen copy)
/// and the model being repaired misclassify the same way (shared adversarial examples), then one
/// Adam step on the unlearning loss makes the repaired model resist them while keeping its clean
/// accuracy. Everything runs in evaluation mode (the reference's default `train_mode` off: BatchNorm
/// statistics stay, its scale and shift are trained).
public struct SAUDefense: Defense {
    public var config: SAUConfig
    public var seed: UInt64 = 0
    public init(config: SAUConfig = SAUConfig()) { self.config = config }
    public static let name = "sau"
    public static let defaults = SAUDefense().settings
    /// BackdoorBench's ratio 0.05.
    public static let defaultCleanFraction = 0.05

    public init(settings: [String: Double], seed: UInt64) throws {
        self.init(config: try SAUConfig(settings: settings))
        self.seed = seed
    }
    public var settings: [String: Double] { config.settings }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        guard clean.count > 0 else { throw DefenseError("sau: the defender has no clean images (--clean-frac)") }
        let reference = try FineTuning.copy(model)
        let adam = ParameterAdam(learningRate: config.learningRate, amsgrad: true)
        let loader = BatchLoader(images: clean, batchSize: config.batchSize, shuffle: true, augment: false, seed: seed)
        let classes = model.numClasses
        var lastShared = 0.0, lastPotential = 0.0
        for round in 0..<config.rounds {
            let start = Date()
            var lossSum = 0.0, sharedSum = 0, potentialSum = 0, correct = 0, seen = 0
            for batch in loader.epoch(round) {
                let n = batch.count
                let cleanPredictions = CrossEntropy.predictions(
                    logits: try model.forward(images: batch.images, count: n, mode: .evaluation), classes: classes)
                let referencePredictions = CrossEntropy.predictions(
                    logits: try reference.forward(images: batch.images, count: n, mode: .evaluation), classes: classes)
                let (pert, shared) = try SharedAdversarial.attack(
                    model: model, reference: reference, images: batch.images, labels: batch.labels,
                    cleanPredictions: cleanPredictions, referenceCleanPredictions: referencePredictions, config: config)
                let x = SharedAdversarial.perturbed(batch.images, pert)
                let referenceLogits = try reference.forward(images: x, count: n, mode: .evaluation)
                for _ in 0..<config.outerSteps {
                    // The clean and perturbed batch in one pass, as the reference's torch.cat.
                    let both = try model.forward(images: batch.images + x, count: 2 * n, mode: .evaluation)
                    let split = n * classes
                    let loss = SharedAdversarial.unlearningLoss(
                        cleanLogits: Array(both[..<split]), perturbedLogits: Array(both[split...]),
                        referencePerturbedLogits: referenceLogits, referenceCleanPredictions: referencePredictions,
                        labels: batch.labels, classes: classes, lmd1: config.lmd1, lmd2: config.lmd2, lmd3: config.lmd3)
                    guard loss.value.isFinite else {
                        throw DefenseError("sau: the unlearning loss became \(loss.value) in round \(round + 1); try a lower --lr")
                    }
                    try model.backward(logitsGradient: loss.cleanGradient + loss.perturbedGradient, weightGradients: true,
                                       wantInputGradient: false)
                    try adam.step(model.parameters)
                    lossSum += loss.value * Double(n)
                    potentialSum += loss.potentialPoison
                    correct += zip(CrossEntropy.predictions(logits: Array(both[..<split]), classes: classes), batch.labels)
                        .filter { $0 == Int($1) }.count
                }
                sharedSum += shared
                seen += n
            }
            let steps = Double(seen * config.outerSteps)
            (lastShared, lastPotential) = (Double(sharedSum) / Double(seen), Double(potentialSum) / steps)
            try log(String(format: "sau: round %d/%d loss %.4f clean acc %.4f shared adversarial %.4f, fooling the backdoored model %.4f (%.1f s)",
                           round + 1, config.rounds, lossSum / steps, Double(correct) / steps, lastShared, lastPotential,
                           Date().timeIntervalSince(start)))
        }
        return DefenseDecision(pruned: [], details: ["last_round_shared_fraction": lastShared,
                                                     "last_round_potential_poison_fraction": lastPotential])
    }
}
