import Datasets
import Foundation
import NN

/// Neural Attention Distillation (Li et al., ICLR 2021) as BackdoorBench's defense/nad.py: a
/// copy of the backdoored model is fine-tuned on the defender's clean images (the teacher), then
/// the backdoored model itself (the student) is fine-tuned with cross-entropy plus, at each stage
/// output, beta_i times the mean squared difference of the student's and teacher's attention maps.
public struct NADDefense: Defense {
    /// The teacher's fine-tuning (BackdoorBench: te_epochs 10, lr 0.01 cosine with T_max 100,
    /// batch 256, momentum 0.9, weight decay 1e-4 from config/defense/nad).
    public var teacher: FineTuningConfig
    /// The student's (the same te_epochs, at a constant lr 0.01: nad.py's adjust_learning_rate).
    public var student: FineTuningConfig
    public var betas: [Double]
    public var p: Double

    public static let referenceTeacher: FineTuningConfig = {
        var config = FineTuningConfig(epochs: 10, batchSize: 256, learningRate: 0.01, weightDecay: 1e-4)
        config.cosineTMax = 100
        return config
    }()
    public static let referenceStudent = FineTuningConfig(epochs: 10, batchSize: 256, learningRate: 0.01,
                                                          weightDecay: 1e-4, schedule: .constant)

    public init(teacher: FineTuningConfig = referenceTeacher, student: FineTuningConfig = referenceStudent,
                betas: [Double] = [500, 1000, 1000], p: Double = 2) {
        (self.teacher, self.student, self.betas, self.p) = (teacher, student, betas, p)
    }
    public static let name = "nad"
    public static let defaults = NADDefense().settings
    /// BackdoorBench's 5%.
    public static let defaultCleanFraction = 0.05
    /// The student's fine-tuning from the settings; the teacher's is the reference's with
    /// `teacher_epochs` and the same learning rate and batch size.
    public init(settings: [String: Double], seed: UInt64) throws {
        let student = try FineTuningConfig(settings: settings, seed: seed, defense: Self.name)
        var teacher = Self.referenceTeacher
        teacher.epochs = try FineTuningConfig(settings: settings.merging(["epochs": settings["teacher_epochs"]!]) { $1 },
                                              seed: seed, defense: Self.name).epochs
        (teacher.learningRate, teacher.batchSize, teacher.seed) = (student.learningRate, student.batchSize, seed)
        let betas = (1...3).map { settings["nad_beta\($0)"]! }
        for (i, beta) in betas.enumerated() where !(beta >= 0) {
            throw DefenseSettingError.outOfRange(Self.name, "nad_beta\(i + 1)", beta, expected: "a number at least 0")
        }
        guard settings["nad_p"]! > 0 else { throw DefenseSettingError.outOfRange(Self.name, "nad_p", settings["nad_p"]!, expected: "a positive number") }
        self.init(teacher: teacher, student: student, betas: betas, p: settings["nad_p"]!)
    }
    public var settings: [String: Double] {
        var out = student.settings
        out["teacher_epochs"] = Double(teacher.epochs)
        out["nad_p"] = p
        for (i, beta) in betas.enumerated() { out["nad_beta\(i + 1)"] = beta }
        return out
    }

    public func repair(_ model: Model, clean: ImageSet, log: (String) throws -> Void) throws -> DefenseDecision {
        let stages = try DefenseLayers.of(model).stages
        guard !stages.isEmpty else {
            throw DefenseError("nad: attention distillation needs stage outputs with a spatial extent (ResNet-18 and "
                + "PreAct-ResNet18: layer2, layer3, layer4); \(model.architecture) has none chosen (the reference "
                + "distils its pooled 1 x 1 features, whose attention map is constant)")
        }
        guard betas.count == stages.count else {
            throw DefenseError("nad: \(betas.count) betas for \(stages.count) stages (\(stages.joined(separator: ", ")))")
        }
        let teacherModel = try FineTuning.copy(model)
        try FineTuning.run(teacherModel, on: clean, config: teacher, label: "nad teacher", log: log)
        let distillation = try AttentionDistillation(teacher: teacherModel, student: model, stages: stages, betas: betas, p: p)
        try FineTuning.run(model, on: clean, config: student, terms: [distillation], label: "nad", log: log)
        return DefenseDecision(pruned: [], details: ["attention_layers": stages])
    }
}

/// NAD's loss term: sum_i beta_i * AT(student_i, teacher_i), the teacher in evaluation mode on the
/// same (augmented) batch.
public final class AttentionDistillation: FineTuningTerm {
    public let teacher: Model
    public let taps: [String]
    public let betas: [Double]
    public let p: Double
    /// Each stage's output channel count (its last convolution's).
    let channels: [Int]

    public init(teacher: Model, student: Model, stages: [String], betas: [Double], p: Double) throws {
        (self.teacher, taps, self.betas, self.p) = (teacher, stages, betas, p)
        let modules = Dictionary(student.namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        channels = try stages.map { stage in
            guard let last = modules[stage]?.modules(of: Conv2d.self).last else {
                throw DefenseError("nad: \(student.description) has no convolutional stage \"\(stage)\"")
            }
            return last.outChannels
        }
    }

    public func loss(features: [String: [Float]], batch: Batch) throws -> (value: Double, tapGradients: [String: [Float]]) {
        let target = try teacher.forward(images: batch.images, count: batch.count, mode: .evaluation, taps: taps).features
        var total = 0.0
        var gradients: [String: [Float]] = [:]
        for (i, stage) in taps.enumerated() {
            let (value, gradient) = AttentionTransfer.loss(student: features[stage]!, teacher: target[stage]!,
                                                           count: batch.count, channels: channels[i], p: p)
            total += betas[i] * value
            gradients[stage] = gradient.map { Float(betas[i]) * $0 }
        }
        return (total, gradients)
    }
}

/// Attention transfer (Zagoruyko & Komodakis), as NAD's `AT` module: per image the map
/// a = q / (||q||_2 + eps) with q = sum over channels of |f|^p at each position; the loss is the
/// mean squared difference of the student's and the teacher's maps over images and positions.
public enum AttentionTransfer {
    public static let eps = 1e-6

    /// The loss and its gradient with respect to the student's features (N x C x H x W, plain).
    public static func loss(student: [Float], teacher: [Float], count n: Int, channels c: Int, p: Double)
        -> (value: Double, gradient: [Float]) {
        let positions = student.count / (n * c)
        let (a, q, norms) = maps(student, count: n, channels: c, p: p)
        let (t, _, _) = maps(teacher, count: n, channels: c, p: p)
        let scale = 1 / Double(n * positions)
        var value = 0.0
        var gradient = [Float](repeating: 0, count: student.count)
        for i in 0..<n {
            let base = i * positions, norm = norms[i], d = norm + eps
            // dL/da, then through a = q / (|q| + eps): dL/dq_k = g_k / d - q_k <g, q> / (|q| d^2).
            var g = [Double](repeating: 0, count: positions)
            var gq = 0.0
            for j in 0..<positions {
                let diff = a[base + j] - t[base + j]
                value += diff * diff * scale
                g[j] = 2 * diff * scale
                gq += g[j] * q[base + j]
            }
            for j in 0..<positions {
                let dq = g[j] / d - (norm > 0 ? q[base + j] * gq / (norm * d * d) : 0)
                for k in 0..<c {
                    let index = (i * c + k) * positions + j
                    let f = Double(student[index])
                    // d|f|^p/df = p |f|^(p-1) sign(f).
                    let df = f == 0 ? 0 : p * pow(abs(f), p - 1) * (f > 0 ? 1 : -1)
                    gradient[index] = Float(dq * df)
                }
            }
        }
        return (value, gradient)
    }

    /// The normalised maps (N x H*W), the unnormalised q and each image's |q|.
    static func maps(_ f: [Float], count n: Int, channels c: Int, p: Double) -> (maps: [Double], q: [Double], norms: [Double]) {
        let positions = f.count / (n * c)
        var q = [Double](repeating: 0, count: n * positions)
        for i in 0..<n {
            for k in 0..<c {
                for j in 0..<positions { q[i * positions + j] += pow(abs(Double(f[(i * c + k) * positions + j])), p) }
            }
        }
        var maps = q, norms = [Double](repeating: 0, count: n)
        for i in 0..<n {
            let row = q[(i * positions)..<((i + 1) * positions)]
            norms[i] = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for j in 0..<positions { maps[i * positions + j] = q[i * positions + j] / (norms[i] + eps) }
        }
        return (maps, q, norms)
    }
}
