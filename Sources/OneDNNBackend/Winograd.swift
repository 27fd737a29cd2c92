import Backend
import CDNNL
import CWinograd
import Foundation

/// Winograd F(m x m, 3 x 3) convolution (m = 2 or 4) for 3x3, stride-1, padding-1 layers without
/// groups or bias: the work oneDNN 2.6 has no Winograd kernel for on AVX2 CPUs. Activations stay
/// in nChw8c (the layout oneDNN's AVX2 direct kernels pass between layers), weights in their
/// OIhw8i8o, so `auto` switches kernels without reorders.
/// Each pass is transform (C, `CWinograd`), then one batched product per chunk of images by
/// oneDNN's matmul over the (m + 2)^2 tile positions, then the inverse transform:
/// - forward: Y = A^T [(G g G^T) . (B^T d B)] A per tile;
/// - input gradient: the same with the filters rotated by 180 degrees and transposed;
/// - weight gradient: dW = G^T [sum over tiles (B^T d B) . (A dY A^T)] G, the exact gradient of
///   the forward above (the products sum over tiles, a matmul with the tile index as its depth).
/// Chunks of images bound the transformed tiles' memory, groups of tile positions that of the
/// transformed filters (`scratchBudget`); all kernels of a backend share one scratch
/// (`WinogradScratch`), so the extra memory is three budgets at most.
final class WinogradConvolution: ConvolutionKernel {
    /// 3x3, stride 1, padding 1, no groups, no bias.
    static func applies(to g: ConvolutionGeometry) -> Bool {
        g.kernel == 3 && g.stride == 1 && g.padding == 1 && g.groups == 1 && !g.bias
    }

    /// Floats (10 MiB) of each scratch buffer: a chunk's tiles, its products, and one position
    /// group's filters. ResNet-18's 512-channel layers then take a batch of 128 in one chunk and
    /// their filters in four groups (9.4 MiB instead of 37.7 MiB: width-64, batch-128 training
    /// otherwise peaked at 1,013-1,028 MiB, against the 1,024 MiB target).
    static let scratchBudget = 10 << 18

    /// Floats (4 MiB) of tiles per chunk where the filters are not grouped: 4x larger chunks
    /// measured no faster, and the 10 MiB budget for every layer slower in evaluation (one noisy
    /// A/B, 259-269 against 283-319 images/s).
    static let chunkBudget = 1 << 20

    /// F(4x4, 3x3): 4x fewer multiplications than direct, against 2.25x for F(2x2, 3x3).
    static let defaultTile = 4

    let geometry: ConvolutionGeometry
    /// m: output pixels per tile side.
    let tile: Int
    let srcDesc, dstDesc, weightsDesc: MemoryDesc
    private let scratch: WinogradScratch
    private let owner: OneDNN
    private let inPadded, outPadded, positions, tilesPerImage: Int
    /// Images per chunk, and the chunks [n0, n0 + count).
    private let chunks: [(start: Int, count: Int)]
    /// Tile positions [first, first + count) whose products run together (equal groups).
    private let groups: [(first: Int, count: Int)]
    private var products: [ProductKey: Product] = [:]

    private(set) lazy var inputLayout: TensorLayout = srcDesc.layout
    private(set) lazy var weightLayout: TensorLayout = weightsDesc.layout
    private(set) lazy var outputLayout: TensorLayout = dstDesc.layout
    func inputGradientLayout() throws -> TensorLayout { inputLayout }

    var name: String { "winograd F(\(tile)x\(tile),3x3)" }

    /// Chunks and position groups the passes run in (what the tests check at small budgets).
    var chunkCount: Int { chunks.count }
    var groupCount: Int { groups.count }

    init(_ g: ConvolutionGeometry, tile: Int, scratch: WinogradScratch, owner: OneDNN, budget: Int = scratchBudget) throws {
        guard Self.applies(to: g), tile == 2 || tile == 4, g.batch >= 1, g.height >= 1, g.width >= 1 else {
            throw BackendError(operation: "oneDNN: winograd \(g) tile \(tile)",
                               reason: "expected 3x3, stride 1, padding 1, no groups or bias, tile 2 or 4")
        }
        geometry = g
        self.tile = tile
        self.scratch = scratch
        self.owner = owner
        srcDesc = try MemoryDesc(shape: g.inputShape, tag: dnnl_nChw8c)
        dstDesc = try MemoryDesc(shape: g.outputShape, tag: dnnl_nChw8c)
        weightsDesc = try MemoryDesc(shape: g.weightShape, tag: dnnl_OIhw8i8o)
        inPadded = (g.inChannels + 7) / 8 * 8
        outPadded = (g.outChannels + 7) / 8 * 8
        positions = (tile + 2) * (tile + 2)
        tilesPerImage = ((g.height + tile - 1) / tile) * ((g.width + tile - 1) / tile)
        let filterPlane = wino_plane(inPadded, outPadded), positions = positions
        let groupSize = (1...positions).reversed().first { positions % $0 == 0 && $0 * filterPlane <= budget } ?? 1
        // Grouped layers take the whole budget per chunk (their filters would otherwise be
        // transformed once per chunk); the others `chunkBudget`.
        let chunkBudget = groupSize < positions ? budget : min(budget, Self.chunkBudget)
        let perImage = positions * tilesPerImage * max(inPadded, outPadded)
        let fitting = max(1, chunkBudget / perImage)  // images whose tiles fit the budget
        let count = (g.batch + fitting - 1) / fitting, size = (g.batch + count - 1) / count  // even chunks
        chunks = stride(from: 0, to: g.batch, by: size).map { ($0, min(size, g.batch - $0)) }
        groups = stride(from: 0, to: positions, by: groupSize).map { ($0, groupSize) }
    }

    // MARK: Passes

    func forward(input: Tensor, weight: Tensor, bias: Tensor?, output: Tensor) throws {
        let x = try argument(input, srcDesc), w = try argument(weight, weightsDesc)
        try writing(output, in: dstDesc) { y in try convolve(x, w, into: y, transposed: false) }
    }

    func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws {
        let dy = try argument(outputGradient, dstDesc), w = try argument(weight, weightsDesc)
        try writing(inputGradient, in: srcDesc) { dx in try convolve(dy, w, into: dx, transposed: true) }
    }

    /// The forward convolution, or (`transposed`) the input gradient's: output to input channels
    /// with the filters rotated.
    private func convolve(_ source: DNNLTensor, _ w: DNNLTensor, into target: DNNLTensor, transposed: Bool) throws {
        let g = geometry
        let (from, to) = transposed ? (outPadded, inPadded) : (inPadded, outPadded)
        try withScratch { tiles, products, filters in
            func transformFilters(_ group: (first: Int, count: Int)) {
                wino_filter_transform(Int32(tile), w.floats, Int32(g.inChannels), Int32(g.outChannels), transposed ? 1 : 0,
                                      filters, Int32(from), to, Int32(group.first), Int32(group.count))
            }
            if groups.count == 1 { transformFilters(groups[0]) }
            for (start, count) in chunks {
                wino_input_transform(Int32(tile), source.floats, Int32(start), Int32(count), Int32(from / 8),
                                     Int32(g.height), Int32(g.width), tiles, from)
                let (tilePlane, productPlane) = (wino_plane(count * tilesPerImage, from), wino_plane(count * tilesPerImage, to))
                for group in groups {
                    if groups.count > 1 { transformFilters(group) }
                    try product(transposed ? .backwardData : .forward, count, group.count)
                        .run(tiles + group.first * tilePlane, filters, products + group.first * productPlane, in: scratch,
                             owner: owner)
                }
                wino_output_transform(Int32(tile), products, to, Int32(start), Int32(count), Int32(to / 8),
                                      Int32(g.height), Int32(g.width), target.floats)
            }
        }
    }

    func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor?) throws {
        let g = geometry
        let x = try argument(input, srcDesc), dy = try argument(outputGradient, dstDesc)
        try writing(weightGradient, in: weightsDesc) { dw in
            try withScratch { tiles, gradientTiles, sums in
                func transform(_ chunk: (start: Int, count: Int)) {
                    wino_input_transform(Int32(tile), x.floats, Int32(chunk.start), Int32(chunk.count), Int32(inPadded / 8),
                                         Int32(g.height), Int32(g.width), tiles, inPadded)
                    wino_gradient_transform(Int32(tile), dy.floats, Int32(chunk.start), Int32(chunk.count),
                                            Int32(outPadded / 8), Int32(g.height), Int32(g.width), gradientTiles, outPadded)
                }
                if chunks.count == 1 { transform(chunks[0]) }
                // Per position group: the sums over every chunk's tiles, then that group's part of dW.
                for (k, group) in groups.enumerated() {
                    for (i, chunk) in chunks.enumerated() {
                        if chunks.count > 1 { transform(chunk) }
                        let rows = chunk.count * tilesPerImage
                        try product(i == 0 ? .backwardWeights : .backwardWeightsAccumulating, chunk.count, group.count)
                            .run(tiles + group.first * wino_plane(rows, inPadded),
                                 gradientTiles + group.first * wino_plane(rows, outPadded), sums, in: scratch, owner: owner)
                    }
                    wino_weight_gradient(Int32(tile), sums, Int32(g.inChannels), Int32(g.outChannels), Int32(inPadded),
                                         outPadded, Int32(group.first), Int32(group.count), k > 0 ? 1 : 0, dw.floats)
                }
            }
        }
    }

    func implementations() throws -> [String] { [name, name, name] }

    // MARK: Scratch and products

    /// Two chunks of tiles and one position group's transformed filters (or weight-gradient sums).
    private func withScratch(_ body: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                      UnsafeMutablePointer<Float>) throws -> Void) throws {
        let widest = max(inPadded, outPadded)
        let tileFloats = positions * wino_plane(tilesPerImage * chunks[0].count, widest)
        try scratch.use([tileFloats, tileFloats, groups[0].count * wino_plane(inPadded, outPadded)]) {
            try body($0[0], $0[1], $0[2])
        }
    }

    enum Pass { case forward, backwardData, backwardWeights, backwardWeightsAccumulating }
    struct ProductKey: Hashable {
        var pass: Pass
        var images, positions: Int
    }

    /// The batched matrix product of one pass over `images` images and `group` tile positions,
    /// planned once.
    private func product(_ pass: Pass, _ images: Int, _ group: Int) throws -> Product {
        let key = ProductKey(pass: pass, images: images, positions: group)
        if let p = products[key] { return p }
        let (b, t, c, o) = (group, images * tilesPerImage, inPadded, outPadded)
        /// rows x columns matrices, one per tile position, at the transforms' plane stride.
        func planes(_ rows: Int, _ columns: Int) throws -> MemoryDesc {
            try MemoryDesc(shape: [b, rows, columns], strides: [wino_plane(rows, columns), columns, 1])
        }
        let p: Product
        switch pass {
        case .forward:
            p = try Product("\(geometry) winograd forward", a: planes(t, c), b: planes(c, o), c: planes(t, o))
        case .backwardData:
            p = try Product("\(geometry) winograd backward data", a: planes(t, o), b: planes(o, c), c: planes(t, c))
        case .backwardWeights, .backwardWeightsAccumulating:
            // The input tiles, t x c per position, read transposed: the tiles are the depth.
            p = try Product("\(geometry) winograd backward weights",
                            a: MemoryDesc(shape: [b, c, t], strides: [wino_plane(t, c), 1, c]),
                            b: planes(t, o), c: planes(c, o), accumulate: pass == .backwardWeightsAccumulating)
        }
        products[key] = p
        return p
    }

    /// C = A B (or C += A B) over a batch of matrices, by oneDNN's matmul, on scratch memory.
    final class Product {
        let a, b, c: MemoryDesc
        let primitive: Primitive

        init(_ name: String, a: MemoryDesc, b: MemoryDesc, c: MemoryDesc, accumulate: Bool = false) throws {
            (self.a, self.b, self.c) = (a, b, c)
            var desc = dnnl_matmul_desc_t()
            var (ra, rb, rc) = (a.raw, b.raw, c.raw)
            try check(dnnl_matmul_desc_init(&desc, &ra, &rb, nil, &rc), "\(name): matmul")
            var attributes: dnnl_primitive_attr_t?
            try check(dnnl_primitive_attr_create(&attributes), "\(name): attributes")
            defer { dnnl_primitive_attr_destroy(attributes) }
            if accumulate {
                var postOps: dnnl_post_ops_t?
                try check(dnnl_post_ops_create(&postOps), "\(name): post-ops")
                defer { dnnl_post_ops_destroy(postOps) }
                try check(dnnl_post_ops_append_sum(postOps, 1), "\(name): sum post-op")
                try check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "\(name): set post-ops")
            }
            primitive = try Primitive(name, opDesc: desc, attributes: attributes)
        }

        func run(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ z: UnsafeMutablePointer<Float>,
                 in scratch: WinogradScratch, owner: OneDNN) throws {
            try primitive.execute([
                DNNL_ARG_SRC: DNNLTensor(desc: a, viewing: x, base: scratch, owner: owner),
                DNNL_ARG_WEIGHTS: DNNLTensor(desc: b, viewing: y, base: scratch, owner: owner),
                DNNL_ARG_DST: DNNLTensor(desc: c, viewing: z, base: scratch, owner: owner),
            ])
        }
    }
}

/// Scratch memory shared by a backend's Winograd kernels (they run one at a time): buffers grow
/// to the largest request and are kept, so a training step allocates nothing after the first.
final class WinogradScratch {
    private var buffers: [(pointer: UnsafeMutableRawPointer, floats: Int)] = []
    private let lock = NSLock()

    func use(_ floats: [Int], _ body: ([UnsafeMutablePointer<Float>]) throws -> Void) throws {
        lock.lock()
        defer { lock.unlock() }
        for (i, count) in floats.enumerated() {
            if i == buffers.count { buffers.append((UnsafeMutableRawPointer(bitPattern: 64)!, 0)) }
            guard buffers[i].floats < count else { continue }
            if buffers[i].floats > 0 { free(buffers[i].pointer) }
            buffers[i].floats = 0
            var pointer: UnsafeMutableRawPointer?
            guard posix_memalign(&pointer, 64, count * 4) == 0, let pointer else {
                throw BackendError(operation: "oneDNN: winograd scratch of \(count * 4) bytes", reason: "out of memory")
            }
            buffers[i] = (pointer, count)
        }
        try body(buffers.prefix(floats.count).map { $0.pointer.assumingMemoryBound(to: Float.self) })
    }

    private func release() {
        for b in buffers where b.floats > 0 { free(b.pointer) }
        buffers = []
    }

    deinit { release() }
}
