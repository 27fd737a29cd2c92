import Backend
import CDNNL
import Foundation

/// The oneDNN CPU backend. Its options are oneDNN's own: the thread count (OpenMP's, process
/// wide) and the convolution algorithm. Kernels are cached per backend value by configuration.
public final class OneDNN: Backend {
    public struct Options: Equatable {
        /// Compute threads; nil uses the cores available.
        public var threads: Int?
        public var convolutionAlgorithm: ConvolutionAlgorithm
        /// Where `auto` keeps its timed choices across runs (`ConvolutionChoices`); nil: in memory only.
        public var convolutionChoicesFile: String?
        public init(threads: Int? = nil, convolutionAlgorithm: ConvolutionAlgorithm = .auto,
                    convolutionChoicesFile: String? = ConvolutionChoices.defaultPath) {
            self.threads = threads
            self.convolutionAlgorithm = convolutionAlgorithm
            self.convolutionChoicesFile = convolutionChoicesFile
        }
    }

    public let options: Options

    /// More threads than this only slow the run down (64 on 2 cores made a 0.3 s evaluation take
    /// 27 s) and, by the thousands, crash OpenMP.
    public static var maximumThreads: Int { 4 * availableCores }
    public static var availableCores: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Checks the options and sets the process's compute threads.
    public init(_ options: Options = Options()) throws {
        if let threads = options.threads, !(1...Self.maximumThreads).contains(threads) {
            throw BackendError(operation: "oneDNN: --threads \(threads)",
                               reason: "expected 1 to \(Self.maximumThreads) (4 per core; this machine has \(Self.availableCores) cores)")
        }
        self.options = options
        omp_set_num_threads(Int32(options.threads ?? Self.availableCores))
    }

    public var threads: Int { Int(omp_get_max_threads()) }

    public var summary: String {
        "oneDNN \(Self.version), \(threads) thread(s), \(options.convolutionAlgorithm) convolutions"
            + (options.convolutionAlgorithm == .auto ? " (timed per shape; choices in \(options.convolutionChoicesFile ?? "memory"))" : "")
            + ", ISA \(Self.isa)"
    }

    /// Whether oneDNN runs its AVX-512 kernels here (it has Winograd convolutions only for those).
    public static var hasAVX512: Bool { dispatches(to: dnnl_cpu_isa_avx512_core) }

    /// Whether oneDNN runs at least its AVX2 kernels here (our Winograd transforms need AVX2 too).
    public static var hasAVX2: Bool { dispatches(to: dnnl_cpu_isa_avx2) }

    /// ISA values are bit sets, each containing the ones below it.
    private static func dispatches(to isa: dnnl_cpu_isa_t) -> Bool {
        dnnl_get_effective_cpu_isa().rawValue & isa.rawValue == isa.rawValue
    }

    /// The instruction set oneDNN dispatches to.
    public static var isa: String {
        let names: [(dnnl_cpu_isa_t, String)] = [(dnnl_cpu_isa_avx512_core, "AVX-512"), (dnnl_cpu_isa_avx2, "AVX2"),
                                                 (dnnl_cpu_isa_avx, "AVX"), (dnnl_cpu_isa_sse41, "SSE4.1")]
        return names.first { dispatches(to: $0.0) }?.1 ?? "baseline"
    }

    public static var version: String {
        guard let v = dnnl_version() else { return "unknown" }
        return "\(v.pointee.major).\(v.pointee.minor).\(v.pointee.patch)"
    }

    // MARK: Memory

    public func plainLayout(_ shape: [Int]) throws -> TensorLayout { try MemoryDesc.plain(shape).layout }

    public func makeTensor(_ layout: TensorLayout) throws -> Tensor { try DNNLTensor(desc: layout.desc, owner: self) }

    public func upload(_ values: [Float], shape: [Int]) throws -> Tensor {
        let count = shape.reduce(1, *)
        guard values.count == count else {
            throw BackendError(operation: "oneDNN: upload \(shape)", reason: "\(values.count) values for \(count) elements")
        }
        let t = try DNNLTensor(desc: .plain(shape), owner: self)
        values.withUnsafeBytes { t.buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return t
    }

    public func upload(_ values: [Float], into tensor: Tensor) throws {
        let target = try DNNLTensor.cast(tensor)
        try (upload(values, shape: target.desc.shape) as! DNNLTensor).reorder(into: target)
    }

    public func download(_ tensor: Tensor) throws -> [Float] {
        let t = try DNNLTensor.cast(tensor)
        let plain = try t.reordered(to: .plain(t.desc.shape))
        return plain.withStorage { Array($0.prefix(t.layout.elementCount)) }
    }

    public func copy(_ tensor: Tensor, to layout: TensorLayout) throws -> Tensor {
        let t = try DNNLTensor.cast(tensor)
        let out = try DNNLTensor(desc: layout.desc, owner: self)
        try t.reorder(into: out)
        return out
    }

    public func copy(_ source: Tensor, into destination: Tensor) throws {
        try DNNLTensor.cast(source).reorder(into: DNNLTensor.cast(destination))
    }

    public func fill(_ tensor: Tensor, with value: Float) throws {
        let t = try DNNLTensor.cast(tensor)
        if value == 0 {
            memset(t.buffer, 0, t.byteCount)
        } else {
            // Blocked padding must stay zero: fill the plain values and reorder.
            try upload([Float](repeating: value, count: t.layout.elementCount), into: t)
        }
    }

    // MARK: Kernels

    private let convolutions = KernelCache<Convolution.Key, ConvolutionKernel>()
    private let winogradScratch = WinogradScratch()
    private let batchNorms = KernelCache<BatchNormalization.Key, BatchNormalization>()
    private let additions = KernelCache<AddReLU.Key, AddReLU>()
    private let poolings = KernelCache<Pooling.Key, Pooling>()
    private let linears = KernelCache<InnerProduct.Key, InnerProduct>()
    private let reorders = KernelCache<[MemoryDesc], Primitive>()

    public func convolution(_ geometry: ConvolutionGeometry) throws -> ConvolutionKernel {
        let algorithm = options.convolutionAlgorithm
        let key = Convolution.Key(geometry: geometry, algorithm: algorithm)
        return try convolutions.get(key) {
            let ours = WinogradConvolution.applies(to: geometry) && Self.hasAVX2  // the transforms are AVX2 code
            switch algorithm {
            case .direct:
                return try Convolution(geometry, algorithm: .direct)
            case .winograd:
                // On AVX-512 CPUs too: there its nChw8c tensors meet oneDNN's nChw16c kernels (the heap
                // corruption this once caused, issue 19, was oneDNN's fused add+ReLU on nChw8c, which
                // `AddReLU` now avoids).
                guard ours else { return try Convolution(geometry, algorithm: .direct) }
                return try WinogradConvolution(geometry, tile: WinogradConvolution.defaultTile, scratch: winogradScratch, owner: self)
            case .auto:
                let direct = try Convolution(geometry, algorithm: .direct)
                var candidates: [(label: String, kernel: ConvolutionKernel)] = [(ConvolutionChoices.direct, direct)]
                // oneDNN's own choice, where it is not its direct kernel (its Winograd, on AVX-512 CPUs).
                let onednn = try Convolution(geometry, algorithm: .auto)
                if try onednn.implementations() != direct.implementations() { candidates.append((ConvolutionChoices.onednn, onednn)) }
                if ours {
                    candidates.append((ConvolutionChoices.winograd, try WinogradConvolution(
                        geometry, tile: WinogradConvolution.defaultTile, scratch: winogradScratch, owner: self)))
                }
                guard candidates.count > 1 else { return direct }
                return TimedConvolution(candidates, choices: .store(path: options.convolutionChoicesFile))
            }
        }
    }

    /// Per kernel shape and pass, the convolution implementation used so far ("pass: name" ->
    /// number of shapes): what `bench` reports.
    public func convolutionImplementations() throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for kernel in convolutions.kernels {
            for (pass, name) in zip(["forward", "backward data", "backward weights"], try kernel.implementations()) {
                counts["\(pass): \(name)", default: 0] += 1
            }
        }
        return counts
    }

    public func batchNormalization(_ layout: TensorLayout, fuseReLU: Bool, globalStatistics: Bool) throws
        -> BatchNormalizationKernel {
        let key = BatchNormalization.Key(data: try layout.desc, fuseReLU: fuseReLU, globalStatistics: globalStatistics)
        return try batchNorms.get(key) {
            try BatchNormalization(dataDesc: key.data, fuseReLU: fuseReLU, globalStatistics: globalStatistics)
        }
    }

    public func addition(_ layout: TensorLayout, relu: Bool) throws -> AdditionKernel {
        let key = AddReLU.Key(desc: try layout.desc, relu: relu)
        return try additions.get(key) { try AddReLU(desc: key.desc, relu: relu) }
    }

    public func pooling(_ geometry: PoolingGeometry, input: TensorLayout) throws -> PoolingKernel {
        let key = Pooling.Key(src: try input.desc, geometry: geometry)
        return try poolings.get(key) { try Pooling(srcDesc: key.src, geometry: geometry) }
    }

    public func linear(input: TensorLayout, outputs: Int) throws -> LinearKernel {
        let key = InnerProduct.Key(src: try input.desc, outputs: outputs)
        return try linears.get(key) { try InnerProduct(srcDesc: key.src, outputs: outputs) }
    }

    /// A reorder between two layouts, cached by the pair.
    func reorder(from source: MemoryDesc, to destination: MemoryDesc) throws -> Primitive {
        try reorders.get([source, destination]) {
            var src = source.raw, dst = destination.raw
            var pd: dnnl_primitive_desc_t?
            try check(dnnl_reorder_primitive_desc_create(&pd, &src, Runtime.engine, &dst, Runtime.engine, nil),
                      "reorder \(source) -> \(destination)")
            return try Primitive("reorder \(source.shape)", descriptor: pd!)
        }
    }

    // MARK: Elementwise (host loops over the stored floats: every operand shares one layout)

    private func storages(_ tensors: [Tensor], _ what: String) throws -> [UnsafeMutableBufferPointer<Float>] {
        let ts = try tensors.map(DNNLTensor.cast)
        guard let first = ts.first, ts.allSatisfy({ $0.desc == first.desc }) else {
            throw BackendError(operation: "oneDNN: \(what)", reason: "operands in different layouts: \(ts.map(\.desc))")
        }
        return ts.map { t in t.withStorage { $0 } }
    }

    public func sgdStep(value: Tensor, gradient: Tensor, momentum: Tensor, learningRate lr: Float,
                        momentumFactor mu: Float, weightDecay wd: Float, nesterov: Bool, firstStep: Bool) throws {
        let s = try storages([value, gradient, momentum], "SGD step")
        let (w, g, buffer) = (s[0], s[1], s[2])
        for i in 0..<w.count {
            let d = g[i] + wd * w[i]
            buffer[i] = firstStep ? d : mu * buffer[i] + d
            w[i] -= lr * (nesterov ? d + mu * buffer[i] : buffer[i])
        }
    }

    public func updateRunningStatistics(mean: Tensor, variance: Tensor, batchMean: Tensor, batchVariance: Tensor,
                                        momentum m: Float, varianceCorrection: Float) throws {
        let s = try storages([mean, variance, batchMean, batchVariance], "running statistics")
        for c in 0..<s[0].count {
            s[0][c] = (1 - m) * s[0][c] + m * s[2][c]
            s[1][c] = (1 - m) * s[1][c] + m * s[3][c] * varianceCorrection
        }
    }

    public func multiply(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        let s = try storages([a, b, out], "multiply")
        for i in 0..<s[0].count { s[2][i] = s[0][i] * s[1][i] }
    }

    public func add(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        let s = try storages([a, b, out], "add")
        for i in 0..<s[0].count { s[2][i] = s[0][i] + s[1][i] }
    }

    public func addSignStep(_ x: Tensor, direction: Tensor, step: Float) throws {
        let s = try storages([x, direction], "sign step")
        for i in 0..<s[0].count {
            let d = s[1][i]
            s[0][i] += step * (d > 0 ? 1 : (d < 0 ? -1 : 0))
        }
    }

    public func clamp(_ x: Tensor, low: Float, high: Float) throws {
        let s = try storages([x], "clamp")
        for i in 0..<s[0].count { s[0][i] = min(max(s[0][i], low), high) }
    }
}
