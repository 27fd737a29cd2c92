import Backend
import CDNNL
import Foundation

/// The three passes of a convolution, as `ConvolutionKernel.implementations()` lists them.
enum ConvolutionPass: Int, CaseIterable {
    case forward, backwardData, backwardWeights

    var name: String { ["forward", "backward data", "backward weights"][rawValue] }
}

/// `auto`: per pass, whichever candidate (oneDNN's direct kernel, oneDNN's own Winograd where it
/// has one, this backend's Winograd) ran fastest at this shape on this machine. Each pass is timed
/// on its first call, on that call's own tensors (no extra memory), then the choice is kept in
/// `ConvolutionChoices` (read back in later runs) so that reruns on one machine compute alike.
/// The first call ends with the chosen candidate's run, so its results are the choice's.
final class TimedConvolution: ConvolutionKernel {
    /// Candidates by label; the first is oneDNN's direct kernel, whose layouts the callers use.
    let candidates: [(label: String, kernel: ConvolutionKernel)]
    private let choices: ConvolutionChoices
    private var chosen: [ConvolutionPass: Int] = [:]

    init(_ candidates: [(label: String, kernel: ConvolutionKernel)], choices: ConvolutionChoices) {
        precondition(candidates.first?.label == ConvolutionChoices.direct)
        self.candidates = candidates
        self.choices = choices
    }

    var geometry: ConvolutionGeometry { candidates[0].kernel.geometry }
    var inputLayout: TensorLayout { candidates[0].kernel.inputLayout }
    var weightLayout: TensorLayout { candidates[0].kernel.weightLayout }
    var outputLayout: TensorLayout { candidates[0].kernel.outputLayout }
    func inputGradientLayout() throws -> TensorLayout { try candidates[0].kernel.inputGradientLayout() }

    /// The key of a pass in the choices file: the shape and the pass.
    func key(_ pass: ConvolutionPass) -> String { "\(geometry) \(pass.name)" }

    private func run(_ pass: ConvolutionPass, _ body: (ConvolutionKernel) throws -> Void) throws {
        if let i = chosen[pass] { return try body(candidates[i].kernel) }
        if let label = choices.choice(for: key(pass)), let i = candidates.firstIndex(where: { $0.label == label }) {
            chosen[pass] = i
            return try body(candidates[i].kernel)
        }
        var milliseconds: [String: Double] = [:]
        for (label, kernel) in candidates {
            try body(kernel)  // warm-up: primitive creation, scratch, caches
            var best = Double.infinity
            for _ in 0..<2 {
                let start = DispatchTime.now().uptimeNanoseconds
                try body(kernel)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            milliseconds[label] = best
        }
        let label = ConvolutionChoices.fastest(milliseconds)
        let i = candidates.firstIndex { $0.label == label }!
        chosen[pass] = i
        choices.record(key(pass), choice: label, milliseconds: milliseconds)
        if i != candidates.count - 1 { try body(candidates[i].kernel) }  // leave the choice's results
    }

    func forward(input: Tensor, weight: Tensor, bias: Tensor?, output: Tensor) throws {
        try run(.forward) { try $0.forward(input: input, weight: weight, bias: bias, output: output) }
    }

    func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws {
        try run(.backwardData) { try $0.backwardData(outputGradient: outputGradient, weight: weight, inputGradient: inputGradient) }
    }

    func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor?) throws {
        try run(.backwardWeights) {
            try $0.backwardWeights(input: input, outputGradient: outputGradient, weightGradient: weightGradient,
                                   biasGradient: biasGradient)
        }
    }

    /// Each pass's chosen implementation; a pass not run yet lists its candidates' ("untimed: a | b").
    func implementations() throws -> [String] {
        let all = try candidates.map { try $0.kernel.implementations() }
        return ConvolutionPass.allCases.map { pass in
            guard let i = chosen[pass] else { return "untimed: " + all.map { $0[pass.rawValue] }.joined(separator: " | ") }
            return all[i][pass.rawValue]
        }
    }
}

/// The `auto` choices of one machine, by shape and pass, kept in a JSON file across runs
/// (`{"machines": {MACHINE: {KEY: {"choice": LABEL, "ms": {LABEL: best of two}}}}}`). The machine
/// is the CPU, the ISA oneDNN dispatches to, oneDNN's version and the thread count: a choice
/// timed under one of them says nothing of another. Without a file the choices last the process.
public final class ConvolutionChoices {
    static let direct = "direct", onednn = "onednn", winograd = "winograd"

    /// A candidate must beat direct by this share to be chosen: within timing noise direct's
    /// rounding (the smallest) wins, and choices do not flip between equal kernels.
    static let margin = 0.05

    /// The fastest label, direct unless another is `margin` faster.
    static func fastest(_ milliseconds: [String: Double]) -> String {
        guard let (label, best) = milliseconds.filter({ $0.key != direct }).min(by: { $0.value < $1.value }),
              let directTime = milliseconds[direct] else { return milliseconds.min { $0.value < $1.value }?.key ?? direct }
        return best < directTime * (1 - margin) ? label : direct
    }

    /// `$BACKDOOR_CONV_CHOICES` (empty: none, choices last the process), else
    /// `$XDG_CACHE_HOME/backdoorlab/convolution-choices.json` (default `~/.cache`).
    public static var defaultPath: String? {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["BACKDOOR_CONV_CHOICES"] { return path.isEmpty ? nil : path }
        let cache = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".cache")
        return (cache as NSString).appendingPathComponent("backdoorlab/convolution-choices.json")
    }

    /// One store per file (and one for no file), shared by every backend of the process.
    public static func store(path: String?) -> ConvolutionChoices {
        storesLock.lock()
        defer { storesLock.unlock() }
        let key = path ?? ""
        if let store = stores[key] { return store }
        let store = ConvolutionChoices(path: path)
        stores[key] = store
        return store
    }
    private static var stores: [String: ConvolutionChoices] = [:]
    private static let storesLock = NSLock()

    public let path: String?
    /// Machines -> keys -> {"choice", "ms"}.
    private var machines: [String: [String: [String: Any]]]
    private let lock = NSLock()

    private init(path: String?) {
        self.path = path
        machines = path.map(Self.read) ?? [:]
    }

    /// This machine's identity in the file (the thread count as set now: it may change between backends).
    static var machine: String { "\(cpu), \(OneDNN.isa), oneDNN \(OneDNN.version), \(omp_get_max_threads()) threads" }

    private static let cpu: String = {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        func field(_ name: String) -> String {
            info.split(separator: "\n").first { $0.hasPrefix(name) }?.split(separator: ":", maxSplits: 1).last?
                .trimmingCharacters(in: .whitespaces) ?? "?"
        }
        return "\(field("model name")) (family \(field("cpu family")), model \(field("model")))"
    }()

    /// Machines -> keys -> entries of a choices file; a missing or unreadable file has none (the
    /// shapes are timed again and the file rewritten).
    private static func read(_ path: String) -> [String: [String: [String: Any]]] {
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let machines = object["machines"] as? [String: [String: [String: Any]]] else { return [:] }
        return machines
    }

    func choice(for key: String) -> String? {
        lock.lock()
        defer { lock.unlock() }
        return machines[Self.machine]?[key]?["choice"] as? String
    }

    /// Keeps a timed choice, and writes it to the file (merged with what other processes wrote
    /// meanwhile; temp file and rename). A file that cannot be written leaves the choice in memory.
    func record(_ key: String, choice: String, milliseconds: [String: Double]) {
        lock.lock()
        defer { lock.unlock() }
        let machine = Self.machine, entry: [String: Any] = ["choice": choice, "ms": milliseconds]
        machines[machine, default: [:]][key] = entry
        guard let path else { return }
        var merged = Self.read(path)
        merged[machine, default: [:]][key] = entry
        guard let data = try? JSONSerialization.data(withJSONObject: ["machines": merged], options: [.prettyPrinted, .sortedKeys])
        else { return }
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                 withIntermediateDirectories: true)
        try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
