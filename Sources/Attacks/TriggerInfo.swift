import Backend
import Foundation
import Formats
import NN
import Support

/// What `backdoor train` saves beside a model so that `eval` and the defense can rebuild the
/// poisoned test set: the attack, the trigger (pattern, mask and alpha, or the settings and grids
/// of SIG, WaNet, BPP and FTrojan, TrojanNN's mask and optimised pattern) and the target class.
/// Stored as safetensors with a JSON summary twin; the format is documented in
/// docs/trigger-info.md so a Python user can read it with `safetensors.numpy.load_file`.
public struct TriggerInfo: Equatable {
    public static let formatName = "backdoorlab.trigger_info"
    public static let formatVersion = "1"
    /// The file name beside a model.
    public static let fileName = "trigger_info.safetensors"

    /// The attack that used the trigger: a `PoisonType` name such as "badnets" or "wanet".
    public var poisonType: String
    public var trigger: AttackTrigger
    public var target: Int
    /// Where the pattern came from when it is not built in (a PNG path, or the seeded noise).
    public var patternSource: String?
    /// Settings of the training-time attack that do not change the trigger (poison_rate and its
    /// meaning, cross_ratio, neg_ratio), written as metadata for people; not needed to poison.
    public var notes: [String: String]

    public init(poisonType: String, trigger: AttackTrigger, target: Int, patternSource: String? = nil,
                notes: [String: String] = [:]) throws {
        try Poisoning.validate(target: target)
        self.poisonType = poisonType
        self.trigger = trigger
        self.target = target
        self.patternSource = patternSource
        self.notes = notes
    }

    /// A pattern-and-mask trigger (BadNets, Blend, clean-label).
    public init(poisonType: String, trigger: Trigger, target: Int, patternSource: String? = nil,
                notes: [String: String] = [:]) throws {
        try self.init(poisonType: poisonType, trigger: .pattern(trigger), target: target, patternSource: patternSource, notes: notes)
    }

    /// The JSON summary written next to `path` (same name, `.json`).
    public static func jsonTwinPath(for path: String) -> String {
        ((path as NSString).deletingPathExtension as NSString).appendingPathExtension("json")!
    }

    // MARK: Writing

    /// Writes the safetensors file and its JSON summary twin, each atomically.
    public func write(path: String) throws {
        let tensors = try self.tensors()
        try SafeTensors(tensors: tensors, metadata: metadata).write(path: path)
        var summary: [String: Any] = metadata
        summary["poison_target"] = target
        if case let .pattern(t) = trigger {
            summary["trigger_alpha"] = t.alpha
            summary["trigger_pattern_shape"] = [Trigger.height, Trigger.width, t.patternChannels]
            summary["trigger_mask_shape"] = [Trigger.height, Trigger.width, t.maskChannels]
        }
        summary["tensors"] = tensors.mapValues { $0.shape }
        summary["tensors_file"] = (path as NSString).lastPathComponent
        try AtomicFile.write(try JSONOutput.string(summary) + "\n", to: Self.jsonTwinPath(for: path))
    }

    func tensors() throws -> [String: HostTensor] {
        let grid = [1, Trigger.height, Trigger.width, 2]
        switch trigger {
        case let .pattern(t):
            return ["trigger_pattern": Self.tensor(t.pattern, channels: t.patternChannels),
                    "trigger_mask": Self.tensor(t.mask, channels: t.maskChannels)]
        case let .sig(t): return ["sig_signal": HostTensor(floats: t.columnSignal, shape: [Trigger.width])]
        case let .wanet(t):
            return ["identity_grid": HostTensor(floats: t.identityGrid, shape: grid), "noise_grid": HostTensor(floats: t.noiseGrid, shape: grid)]
        case let .trojannn(t):
            let shape = [Trigger.height, Trigger.width, 3]
            return ["trojannn_pattern": HostTensor(uint8s: t.pattern, shape: shape), "trojannn_mask": HostTensor(uint8s: t.mask, shape: shape)]
        case .bpp, .ftrojan: return [:]
        case let .inputAware(t): return try t.stateDicts()
        }
    }

    var metadata: [String: String] {
        var metadata = notes
        metadata.merge(["format": Self.formatName, "version": Self.formatVersion, "poison_type": poisonType,
                        "trigger_type": trigger.typeName, "poison_target": "\(target)"]) { $1 }
        switch trigger {
        case let .pattern(t): metadata["trigger_alpha"] = "\(t.alpha)"
        case let .sig(t): (metadata["sig_delta"], metadata["sig_f"]) = ("\(t.delta)", "\(t.frequency)")
        case let .wanet(t): (metadata["wanet_k"], metadata["wanet_s"], metadata["grid_rescale"]) = ("\(t.k)", "\(t.s)", "\(t.gridRescale)")
        case let .bpp(t): (metadata["squeeze_num"], metadata["dithering"]) = ("\(t.squeezeNum)", "\(t.dithering)")
        case let .ftrojan(t):
            metadata["ftrojan_channels"] = t.channels.map(String.init).joined(separator: ",")
            metadata["ftrojan_window"] = "\(t.window)"
            metadata["ftrojan_magnitude"] = "\(t.magnitude)"
            metadata["ftrojan_positions"] = t.positions.flatMap { $0 }.map(String.init).joined(separator: ",")
        case .trojannn: break
        case let .inputAware(t): metadata["generator_width"] = "\(t.settings.generatorWidth)"
        }
        if let patternSource { metadata["pattern_source"] = patternSource }
        return metadata
    }

    /// uint8 when every value is a whole number in 0...255 (always so for this tool's
    /// triggers, as in the reference); float64 otherwise, so a soft mask survives exactly.
    static func tensor(_ values: [Double], channels: Int) -> HostTensor {
        let shape = [Trigger.height, Trigger.width, channels]
        if values.allSatisfy({ $0 == $0.rounded() && $0 >= 0 && $0 <= 255 }) {
            return HostTensor(uint8s: values.map { UInt8($0) }, shape: shape)
        }
        return HostTensor(doubles: values, shape: shape)
    }

    // MARK: Reading

    /// Input-aware's generators are rebuilt on `backend` (an error without one).
    public static func read(path: String, backend: Backend? = nil) throws -> TriggerInfo {
        func fail(_ message: String) -> FileError {
            FileError(path, "\(message) (a trigger information file is safetensors as written by `backdoor train`; see docs/trigger-info.md)")
        }
        let file: SafeTensors
        do {
            let read = try TensorFile.read(path: path)
            if read.format == .torch { return try fromReferenceDictionary(read.dictionary, path: path) }
            file = SafeTensors(tensors: read.dictionary, metadata: read.metadata)
        } catch let error as FileError {
            throw fail("not a trigger information file: \(error.message)")
        }
        guard file.metadata["format"] == formatName else {
            throw fail("metadata \"format\" is \(file.metadata["format"].map { "\"\($0)\"" } ?? "missing"); expected \"\(formatName)\"")
        }
        guard file.metadata["version"] == formatVersion else {
            throw fail("format version \(file.metadata["version"] ?? "missing") is not supported; expected \(formatVersion)")
        }
        func field(_ key: String) throws -> String {
            guard let value = file.metadata[key] else { throw fail("metadata has no \"\(key)\"") }
            return value
        }
        let typeName = try field("trigger_type")
        let targetText = try field("poison_target")
        guard let target = Int(targetText) else { throw fail("poison_target \"\(targetText)\" is not an integer") }
        let notes = file.metadata.filter { !Self.triggerKeys.contains($0.key) }
        if typeName == "inputaware" {
            guard let backend else { throw fail("trigger_type inputaware needs a compute backend to rebuild its generators") }
            let widthText = try field("generator_width")
            guard let width = Int(widthText) else { throw fail("generator_width \"\(widthText)\" is not a whole number") }
            do {
                let attack = try InputAwareAttack(stateDicts: file.tensors, generatorWidth: width, target: target, on: backend, source: path)
                return try TriggerInfo(poisonType: try field("poison_type"), trigger: .inputAware(attack), target: target, notes: notes)
            } catch let error as ShapeError {
                throw fail("\(error)")
            }
        }
        if let trigger = try dataTrigger(typeName, file: file, fail: fail) {
            return try TriggerInfo(poisonType: try field("poison_type"), trigger: trigger, target: target, notes: notes)
        }
        guard let kind = Trigger.Kind(rawValue: typeName) else {
            throw fail("trigger_type \"\(typeName)\" is unknown; expected one of "
                + (Trigger.Kind.allCases.map(\.rawValue) + ["sig", "wanet", "bpp", "ftrojan", "trojannn", "inputaware"]).joined(separator: ", "))
        }
        let alphaText = try field("trigger_alpha")
        guard let alpha = Double(alphaText) else { throw fail("trigger_alpha \"\(alphaText)\" is not a number") }

        func values(_ name: String) throws -> (values: [Double], channels: Int) {
            guard let tensor = file.tensors[name] else { throw fail("no tensor \"\(name)\"") }
            // A leading batch axis of 1 is accepted: the reference stores (1, 32, 32, C).
            let shape = tensor.shape.count == 4 && tensor.shape[0] == 1 ? Array(tensor.shape.dropFirst()) : tensor.shape
            guard shape.count == 3, shape[0] == Trigger.height, shape[1] == Trigger.width, [1, 3].contains(shape[2]) else {
                throw fail("tensor \"\(name)\" has shape \(tensor.shape); expected [32, 32, 1] or [32, 32, 3]")
            }
            switch tensor.dtype {
            case .u8: return (try tensor.uint8s().map(Double.init), shape[2])
            case .f32: return (try tensor.floats().map(Double.init), shape[2])
            case .f64: return (try tensor.doubles(), shape[2])
            default: throw fail("tensor \"\(name)\" has dtype \(tensor.dtype.safetensorsName); expected U8, F32 or F64")
            }
        }
        let pattern = try values("trigger_pattern")
        let mask = try values("trigger_mask")
        do {
            let trigger = try Trigger(kind: kind, pattern: pattern.values, patternChannels: pattern.channels,
                                      mask: mask.values, maskChannels: mask.channels, alpha: alpha)
            return try TriggerInfo(poisonType: try field("poison_type"), trigger: trigger, target: target,
                                   patternSource: file.metadata["pattern_source"], notes: notes)
        } catch let error as AttackError {
            throw fail("\(error)")
        }
    }

    /// The metadata that describes the trigger itself; the rest are notes.
    static let triggerKeys: Set<String> = [
        "format", "version", "poison_type", "trigger_type", "poison_target", "pattern_source", "trigger_alpha",
        "sig_delta", "sig_f", "wanet_k", "wanet_s", "grid_rescale", "squeeze_num", "dithering",
        "ftrojan_channels", "ftrojan_window", "ftrojan_magnitude", "ftrojan_positions", "generator_width",
    ]

    /// SIG, WaNet, BPP, FTrojan or TrojanNN rebuilt from the file's settings (and WaNet's grids,
    /// TrojanNN's pattern and mask); nil for
    /// the pattern-and-mask types.
    static func dataTrigger(_ type: String, file: SafeTensors, fail: (String) -> FileError) throws -> AttackTrigger? {
        func text(_ key: String) throws -> String {
            guard let value = file.metadata[key] else { throw fail("metadata has no \"\(key)\" (needed for trigger_type \(type))") }
            return value
        }
        func number<T: LosslessStringConvertible>(_ key: String, as: T.Type = T.self) throws -> T {
            let value = try text(key)
            guard let number = T(value) else { throw fail("\(key) \"\(value)\" is not a \(T.self == Int.self ? "whole number" : "number")") }
            return number
        }
        func integers(_ key: String) throws -> [Int] {
            let parts = try text(key).split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else { throw fail("\(key) \"\(try text(key))\" is not a comma-separated list of whole numbers") }
            return parts.map { $0! }
        }
        func grid(_ name: String) throws -> [Float] {
            guard let tensor = file.tensors[name] else { throw fail("no tensor \"\(name)\" (WaNet keeps identity_grid and noise_grid)") }
            guard tensor.dtype == .f32, tensor.shape == [1, 32, 32, 2] || tensor.shape == [32, 32, 2] else {
                throw fail("tensor \"\(name)\" is \(tensor.dtype.safetensorsName) \(tensor.shape); expected F32 [1, 32, 32, 2]")
            }
            return try tensor.floats()
        }
        func image(_ name: String) throws -> [UInt8] {
            guard let tensor = file.tensors[name] else { throw fail("no tensor \"\(name)\" (TrojanNN keeps trojannn_pattern and trojannn_mask)") }
            guard tensor.dtype == .u8, tensor.shape == [32, 32, 3] || tensor.shape == [1, 32, 32, 3] else {
                throw fail("tensor \"\(name)\" is \(tensor.dtype.safetensorsName) \(tensor.shape); expected U8 [32, 32, 3]")
            }
            return try tensor.uint8s()
        }
        do {
            switch type {
            case "sig": return .sig(try SIGTrigger(delta: try number("sig_delta"), frequency: try number("sig_f")))
            case "wanet":
                return .wanet(try WaNetWarp(k: try number("wanet_k"), s: try number("wanet_s"), gridRescale: try number("grid_rescale"),
                                            noiseGrid: try grid("noise_grid"), identityGrid: try grid("identity_grid")))
            case "bpp":
                let dithering = try text("dithering")
                guard let flag = Bool(dithering) else { throw fail("dithering \"\(dithering)\" is not true or false") }
                return .bpp(try BPPSqueeze(squeezeNum: try number("squeeze_num"), dithering: flag))
            case "ftrojan":
                let positions = try integers("ftrojan_positions")
                guard positions.count % 2 == 0 else { throw fail("ftrojan_positions holds \(positions.count) numbers; expected (row, column) pairs") }
                return .ftrojan(try FTrojanTrigger(channels: try integers("ftrojan_channels"), window: try number("ftrojan_window"),
                                                   magnitude: try number("ftrojan_magnitude"),
                                                   positions: stride(from: 0, to: positions.count, by: 2).map { [positions[$0], positions[$0 + 1]] }))
            case "trojannn": return .trojannn(try TrojanNNTrigger(pattern: try image("trojannn_pattern"), mask: try image("trojannn_mask")))
            default: return nil
            }
        } catch let error as AttackError {
            throw fail("\(error)")
        }
    }

    /// The ANP reference code's `torch.save(dict)` trigger information: `trigger_pattern` and
    /// `trigger_mask` (1 x 32 x 32 x C uint8), `trigger_alpha`, `poison_target`, `data_index`.
    /// It names no trigger type, so the type follows from the mask's shape.
    static func fromReferenceDictionary(_ tensors: [String: HostTensor], path: String) throws -> TriggerInfo {
        func fail(_ message: String) -> FileError { FileError(path, "PyTorch trigger information: \(message)") }
        func values(_ name: String) throws -> (values: [Double], channels: Int) {
            guard let tensor = tensors[name] else { throw fail("no \"\(name)\" entry") }
            let shape = tensor.shape.count == 4 && tensor.shape[0] == 1 ? Array(tensor.shape.dropFirst()) : tensor.shape
            guard shape.count == 3, shape[0] == Trigger.height, shape[1] == Trigger.width, [1, 3].contains(shape[2]) else {
                throw fail("\"\(name)\" has shape \(tensor.shape); expected [1, 32, 32, 1] or [1, 32, 32, 3]")
            }
            switch tensor.dtype {
            case .u8: return (try tensor.uint8s().map(Double.init), shape[2])
            case .f32: return (try tensor.floats().map(Double.init), shape[2])
            case .f64: return (try tensor.doubles(), shape[2])
            default: throw fail("\"\(name)\" has dtype \(tensor.dtype.rawValue); expected uint8 or float")
            }
        }
        func number(_ name: String) throws -> Double {
            guard let tensor = tensors[name], tensor.elementCount == 1 else { throw fail("no scalar \"\(name)\" entry") }
            switch tensor.dtype {
            case .f64: return try tensor.doubles()[0]
            case .f32: return Double(try tensor.floats()[0])
            case .i64: return Double(try tensor.int64s()[0])
            case .i32: return Double(try tensor.int32s()[0])
            default: throw fail("\"\(name)\" has dtype \(tensor.dtype.rawValue); expected a number")
            }
        }
        let pattern = try values("trigger_pattern")
        let mask = try values("trigger_mask")
        let masked = stride(from: 0, to: mask.values.count, by: mask.channels).filter { mask.values[$0] > 0 }.count
        let kind: Trigger.Kind, poisonType: String
        switch masked {
        case Trigger.pixelsPerChannel: (kind, poisonType) = (.gaussianNoise, "blend")
        case 36: (kind, poisonType) = (.checkerboard4Corner, "clean-label")
        default: (kind, poisonType) = (.checkerboard1Corner, "badnets")
        }
        do {
            let trigger = try Trigger(kind: kind, pattern: pattern.values, patternChannels: pattern.channels,
                                      mask: mask.values, maskChannels: mask.channels, alpha: try number("trigger_alpha"))
            return try TriggerInfo(poisonType: poisonType, trigger: trigger, target: Int(try number("poison_target")),
                                   patternSource: "PyTorch trigger information \(path)")
        } catch let error as AttackError {
            throw fail("\(error)")
        }
    }
}
