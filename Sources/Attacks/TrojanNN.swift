import Datasets
import Foundation
import Formats
import NN
import Support

/// TrojanNN's trigger (Liu et al., NDSS 2018, as BackdoorBench's `attack/trojannn.py` applies it):
/// an optimised pattern inside a mask region, *added* to the image as floats and cast with
/// numpy's `astype(uint8)` before its clip, so a sum above 255 wraps modulo 256 (x86), as there.
public struct TrojanNNTrigger: ImageTrigger, Equatable {
    /// HWC bytes (32 x 32 x 3): 0 outside the mask, the optimised values inside.
    public let pattern: [UInt8]
    /// HWC (32 x 32 x 3), 1 where the mask image is non-zero (the reference's `keep_mask`).
    public let mask: [UInt8]

    public init(pattern: [UInt8], mask: [UInt8]) throws {
        for (name, values) in [("pattern", pattern), ("mask", mask)] where values.count != ImageSet.pixelsPerImage {
            throw AttackError.invalidTrigger("TrojanNN \(name) has \(values.count) values; expected 32 x 32 x 3 = \(ImageSet.pixelsPerImage)")
        }
        if let bad = mask.first(where: { $0 > 1 }) { throw AttackError.invalidTrigger("TrojanNN mask value \(bad) is not 0 or 1") }
        if let i = pattern.indices.first(where: { mask[$0] == 0 && pattern[$0] != 0 }) {
            throw AttackError.invalidTrigger("TrojanNN pattern is \(pattern[i]) at value \(i), outside its mask; expected 0 there")
        }
        self.pattern = pattern
        self.mask = mask
    }

    public func apply(to set: inout ImageSet, at indices: [Int]) {
        let size = ImageSet.pixelsPerImage
        for index in indices {
            let base = index * size
            for i in 0..<size { set.pixels[base + i] = Self.stamp(set.pixels[base + i], pattern[i]) }
        }
    }

    /// `np.clip((pattern + x).astype("uint8"), 0, 255)`: the sum of two bytes is exact in
    /// float64, and astype keeps its low byte.
    @inline(__always)
    static func stamp(_ x: UInt8, _ pattern: UInt8) -> UInt8 { x &+ pattern }
}

/// The settings of the pattern's optimisation, BackdoorBench's defaults
/// (`config/attack/trojannn/preactresnet18.yaml` and `pgd_with_mask_to_selected_neuron`).
public struct TrojanNNSettings: Equatable {
    /// `selected_layer_name`: the layer whose *input* neurons are excited; they are ranked by
    /// its `weight` (`selected_layer_param_name`).
    public var layer = "linear"
    /// `num_neuron`: how many of the most connected neurons.
    public var neurons = 2
    /// `neuron_target_values`: the activation the cost pulls each chosen neuron to.
    public var targetValue = 100.0
    /// `mask_update_iters`: sign-gradient steps (fewer once the cost is below `tolerance`).
    public var steps = 1000
    /// PGD `alpha` and `eps` in [0, 1] pixel scale; the pattern stays within `epsilon` of the mask image.
    public var stepSize = 0.1
    public var epsilon = 0.3
    public var tolerance = 1e-3
    /// `mask_path`: a 32 x 32 PNG whose non-zero pixels are the region and its values the start;
    /// nil is BackdoorBench's `apple4.png`, resized to 32 x 32 (shipped).
    public var maskPath: String?
    /// The clean model to optimise against (a checkpoint path, read by the caller).
    public var modelPath: String?
    public init() {}

    public func validate() throws {
        guard !layer.isEmpty else { throw AttackError.invalidValue(name: "TrojanNN layer", value: "\"\"", allowed: "a module name such as linear") }
        guard neurons >= 1 else { throw AttackError.invalidValue(name: "TrojanNN neurons", value: "\(neurons)", allowed: "an integer >= 1") }
        guard targetValue.isFinite else {
            throw AttackError.invalidValue(name: "TrojanNN target value", value: "\(targetValue)", allowed: "a finite number")
        }
        guard steps >= 1 else { throw AttackError.invalidValue(name: "TrojanNN steps", value: "\(steps)", allowed: "an integer >= 1") }
        guard stepSize > 0 && stepSize <= 1 else {
            throw AttackError.invalidValue(name: "TrojanNN step size", value: "\(stepSize)", allowed: "a number in (0, 1] (pixel scale)")
        }
        guard epsilon > 0 && epsilon <= 1 else {
            throw AttackError.invalidValue(name: "TrojanNN epsilon", value: "\(epsilon)", allowed: "a number in (0, 1] (pixel scale)")
        }
    }

    /// The settings as the trigger information's notes.
    var notes: [String: String] {
        ["trojannn_layer": layer, "trojannn_neurons": "\(neurons)", "trojannn_target_value": "\(targetValue)",
         "trojannn_steps": "\(steps)", "trojannn_step_size": "\(stepSize)", "trojannn_eps": "\(epsilon)",
         "trojannn_mask_source": maskPath ?? "BackdoorBench apple4.png (32 x 32, shipped)"]
    }
}

/// TrojanNN's trigger generation against a clean model.
public enum TrojanNN {
    /// BackdoorBench's `apple4.png` resized to 32 x 32 by PIL's bilinear filter
    /// (scripts/fixtures/make_trojannn_fixtures.py), shipped with the tool.
    public static var referenceMaskFile: String {
        (Bundle.module.resourceURL ?? Bundle.module.bundleURL).appendingPathComponent("ReferenceData/trojannn_apple4.png").path
    }

    /// The mask image as [0, 1] planes (CHW, x / 255 as ToTensor), from a 32 x 32 gray or RGB PNG.
    public static func maskImage(path: String?) throws -> [Float] {
        let path = path ?? referenceMaskFile
        let image = try PNG.read(path: path, alpha: .reject)
        guard image.width == 32 && image.height == 32 else {
            throw FileError(path, "TrojanNN mask is \(image.width)x\(image.height); expected a 32x32 image")
        }
        let plane = ImageSet.height * ImageSet.width
        var out = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for c in 0..<3 { out[c * plane + p] = Float(image.pixels[p * image.channels + (image.channels == 3 ? c : 0)]) / 255 }
        }
        guard out.contains(where: { $0 > 0 }) else { throw FileError(path, "TrojanNN mask is black everywhere; expected a non-zero region") }
        return out
    }

    /// The module whose output is `layer`'s input: the child before it in its Sequential (the
    /// reference hooks the layer's input).
    public static func inputTap(of layer: String, in model: Model) throws -> String {
        let parts = layer.split(separator: ".").map(String.init)
        let parentName = parts.dropLast().joined(separator: ".")
        let modules = model.namedModules()
        guard let parent = modules.first(where: { $0.name == parentName })?.module,
              let index = parent.namedChildren.firstIndex(where: { $0.name == parts.last }) else {
            throw AttackError.invalidValue(name: "TrojanNN layer", value: layer, allowed: "a module of \(model.description), such as "
                + model.root.namedChildren.map(\.name).joined(separator: ", "))
        }
        guard parent is Sequential, index > 0 else {
            throw AttackError.invalidValue(name: "TrojanNN layer", value: layer,
                                           allowed: "a module that follows another in a Sequential (its input is that one's output)")
        }
        let previous = parent.namedChildren[index - 1].name
        return parentName.isEmpty ? previous : parentName + "." + previous
    }

    /// `get_most_connected_neuron_idxes`: the input neurons of a linear (out x in) or conv
    /// (out x in x kh x kw) weight with the largest sum of absolute weights, largest first.
    public static func mostConnectedNeurons(weight: [Float], shape: [Int], count: Int) throws -> [Int] {
        guard shape.count == 2 || shape.count == 4 else {
            throw AttackError.invalidValue(name: "TrojanNN layer", value: "with a weight of shape \(shape)",
                                           allowed: "a linear or convolution layer (a weight of 2 or 4 dimensions)")
        }
        let (outputs, inputs) = (shape[0], shape[1])
        let spatial = weight.count / (outputs * inputs)
        var sums = [Double](repeating: 0, count: inputs)
        for o in 0..<outputs {
            for i in 0..<inputs {
                let base = (o * inputs + i) * spatial
                for k in 0..<spatial { sums[i] += Double(abs(weight[base + k])) }
            }
        }
        guard count <= inputs else {
            throw AttackError.invalidValue(name: "TrojanNN neurons", value: "\(count)", allowed: "at most the layer's \(inputs) inputs")
        }
        return Array(sums.indices.sorted { (sums[$0], $1) > (sums[$1], $0) }.prefix(count))
    }

    /// What the optimisation did: the pattern ([0, 1] CHW), the chosen neurons and their
    /// activations (summed over positions for a convolution's input) before and after.
    public struct Result {
        public var pattern: [Float]
        public var neurons: [Int]
        public var tap: String
        public var before: [Float]
        public var after: [Float]
        public var steps: Int
    }

    /// `pgd_with_mask_to_selected_neuron`: from the mask image, signed steps of `stepSize` down the
    /// cost sum_n sum(f_n - target)^2 of the chosen neurons f_n of the model's `layer` input on
    /// `image * keep_mask`, kept within `epsilon` of the mask image and in [0, 1]; pixels outside
    /// the mask have no gradient and stay 0. The model runs in evaluation mode on the normalised image.
    public static func optimise(_ model: Model, mask: [Float], settings: TrojanNNSettings, normalization: Normalization = .cifar10,
                                log: ((String) -> Void)? = nil) throws -> Result {
        try settings.validate()
        let tap = try inputTap(of: settings.layer, in: model)
        let weightName = settings.layer + ".weight"
        guard let weight = try model.stateDict()[weightName] else {
            throw AttackError.invalidValue(name: "TrojanNN layer", value: settings.layer, allowed: "a layer with a weight (no \(weightName) in \(model.description))")
        }
        let neurons = try mostConnectedNeurons(weight: try weight.floats(), shape: weight.shape, count: settings.neurons)
        log?("trojannn: neurons \(neurons.map(String.init).joined(separator: ", ")) of \(settings.layer)'s input (\(tap)), "
            + "target \(settings.targetValue), \(settings.steps) steps")
        let keep = mask.map { $0 > 0 ? Float(1) : 0 }
        let target = Float(settings.targetValue)
        let inputs = weight.shape[1]
        // The chosen neurons' values (one per position of a convolution's input) on `image * keep_mask`.
        func features(_ image: [Float]) throws -> [Float] {
            let input = CleanLabelPGD.normalised(zip(image, keep).map(*), images: [0], normalization: normalization)
            let values = try model.forward(images: input, count: 1, mode: .evaluation, taps: [tap]).features[tap]!
            guard values.count % inputs == 0 else {
                throw AttackError.invalidValue(name: "TrojanNN layer", value: settings.layer,
                                               allowed: "a layer whose input (\(tap), \(values.count) values) has its weight's \(inputs) channels")
            }
            return values
        }
        func activations(_ values: [Float]) -> [Float] {
            let size = values.count / inputs
            return neurons.map { values[$0 * size..<($0 + 1) * size].reduce(0, +) }
        }
        var current = mask
        var before: [Float]?
        var stepsDone = 0
        while stepsDone < settings.steps {
            let values = try features(current)
            if before == nil { before = activations(values) }
            let size = values.count / inputs
            var cost: Float = 0
            var tapGradient = [Float](repeating: 0, count: values.count)
            for n in neurons {
                for i in n * size..<(n + 1) * size {
                    cost += (values[i] - target) * (values[i] - target)
                    tapGradient[i] = 2 * (values[i] - target)
                }
            }
            let gradient = try model.backward(logitsGradient: [Float](repeating: 0, count: model.numClasses), tapGradients: [tap: tapGradient],
                                              weightGradients: false, wantInputGradient: true)!
            // Descending the cost is ascending its negative; the mask's chain-rule factor zeroes the outside.
            CleanLabelPGD.signStep(&current, clean: mask, image: 0, gradient: zip(gradient, keep).map { -$0 * $1 }, row: 0,
                                   stepSize: Float(settings.stepSize), epsilon: Float(settings.epsilon), normalization: normalization)
            stepsDone += 1
            if stepsDone % 100 == 0 { log?(String(format: "trojannn: step %d, cost %.4g", stepsDone, cost)) }
            // As the reference: the cost before this step decides.
            if Double(cost) < settings.tolerance { break }
        }
        return Result(pattern: current, neurons: neurons, tap: tap, before: before!, after: activations(try features(current)), steps: stepsDone)
    }

    /// The trigger of an optimised pattern: bytes as ToPILImage makes them (x * 255 truncated,
    /// in float32), the mask where the mask image is non-zero.
    public static func trigger(pattern: [Float], mask: [Float]) throws -> TrojanNNTrigger {
        let plane = ImageSet.height * ImageSet.width
        var bytes = [UInt8](repeating: 0, count: ImageSet.pixelsPerImage)
        var keep = [UInt8](repeating: 0, count: ImageSet.pixelsPerImage)
        for p in 0..<plane {
            for c in 0..<3 {
                bytes[p * 3 + c] = UInt8(min(max(pattern[c * plane + p] * 255, 0), 255))
                keep[p * 3 + c] = mask[c * plane + p] > 0 ? 1 : 0
            }
        }
        return try TrojanNNTrigger(pattern: bytes, mask: keep)
    }

    /// The whole generation: mask, optimisation against `model`, trigger.
    public static func makeTrigger(against model: Model, settings: TrojanNNSettings, log: ((String) -> Void)? = nil)
        throws -> (trigger: TrojanNNTrigger, result: Result) {
        let mask = try maskImage(path: settings.maskPath)
        let result = try optimise(model, mask: mask, settings: settings, log: log)
        log?("trojannn: activations \(result.before.map { String(format: "%.3g", $0) }.joined(separator: ", ")) -> "
            + "\(result.after.map { String(format: "%.3g", $0) }.joined(separator: ", ")) after \(result.steps) steps")
        return (try trigger(pattern: result.pattern, mask: mask), result)
    }
}
