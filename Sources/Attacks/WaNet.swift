import Datasets
import Support

/// WaNet's fixed warp (Nguyen & Tran, ICLR 2021), as BackdoorBench's `attack/wanet.py` builds
/// and applies it: `ins = U(-1, 1)^(2 x k x k)` divided by its mean absolute value, upsampled
/// bicubically (align_corners) to the `noise_grid` (1 x 32 x 32 x 2), the sampling grid
/// `clamp((identity_grid + s * noise_grid / 32) * grid_rescale, -1, 1)`, and bilinear
/// `grid_sample` with align_corners. Grids hold (x, y) in [-1, 1], x along columns.
public struct WaNetWarp: ImageTrigger, Equatable {
    public static let defaultK = 4, defaultS = 0.5, defaultGridRescale = 1.0
    public static let size = ImageSet.width
    public let k: Int
    public let s: Double
    public let gridRescale: Double
    /// 32 x 32 x 2 float32, as the reference keeps them (without the leading axis of 1).
    public let identityGrid: [Float]
    public let noiseGrid: [Float]
    /// The warp's sampling grid.
    public let grid: [Float]

    public init(k: Int, s: Double, gridRescale: Double, noiseGrid: [Float], identityGrid: [Float] = WaNetWarp.identity) throws {
        guard (2...Self.size).contains(k) else {
            throw AttackError.invalidValue(name: "WaNet k", value: "\(k)", allowed: "an integer in 2...32")
        }
        guard s.isFinite && s >= 0 else { throw AttackError.invalidValue(name: "WaNet s", value: "\(s)", allowed: "a number >= 0") }
        guard gridRescale.isFinite && gridRescale > 0 else {
            throw AttackError.invalidValue(name: "grid rescale", value: "\(gridRescale)", allowed: "a number > 0")
        }
        let count = Self.size * Self.size * 2
        guard noiseGrid.count == count, identityGrid.count == count, (noiseGrid + identityGrid).allSatisfy(\.isFinite) else {
            throw AttackError.invalidTrigger("WaNet grids must each hold 32 x 32 x 2 finite values")
        }
        self.k = k
        self.s = s
        self.gridRescale = gridRescale
        self.noiseGrid = noiseGrid
        self.identityGrid = identityGrid
        // float32 throughout, as the reference's tensors.
        let (sf, rescale, n) = (Float(s), Float(gridRescale), Float(Self.size))
        grid = (0..<count).map { min(max((identityGrid[$0] + sf * noiseGrid[$0] / n) * rescale, -1), 1) }
    }

    /// A fresh warp drawn from `seed` (the reference draws `ins` with torch.rand).
    public static func random(k: Int = defaultK, s: Double = defaultS, gridRescale: Double = defaultGridRescale,
                              seed: UInt64) throws -> WaNetWarp {
        guard (2...size).contains(k) else { throw AttackError.invalidValue(name: "WaNet k", value: "\(k)", allowed: "an integer in 2...32") }
        var generator = SeededGenerator(seed: seed, stream: "wanet noise grid")
        let ins = (0..<2 * k * k).map { _ in generator.nextFloat() * 2 - 1 }
        return try WaNetWarp(k: k, s: s, gridRescale: gridRescale, noiseGrid: noiseGrid(ins: ins, k: k))
    }

    /// `torch.linspace(-1, 1, 32)` as (x, y) pairs: x follows the column, y the row.
    public static let identity: [Float] = {
        let line = (0..<size).map { i -> Float in i == size - 1 ? 1 : -1 + Float(i) * (2 / Float(size - 1)) }
        return (0..<size * size).flatMap { [line[$0 % size], line[$0 / size]] }
    }()

    /// The noise grid from `ins` (2 x k x k, channel-major): scaled by its mean absolute value,
    /// bicubic upsampling with align_corners (PyTorch's A = -0.75, edge taps clamped), HWC.
    public static func noiseGrid(ins: [Float], k: Int) -> [Float] {
        precondition(ins.count == 2 * k * k)
        let mean = ins.reduce(Float(0)) { $0 + abs($1) } / Float(ins.count)
        let scaled = ins.map { $0 / mean }
        let scale = Float(k - 1) / Float(size - 1)
        // Taps and weights of each output coordinate (the same along rows and columns).
        let taps: [(first: Int, weights: [Float])] = (0..<size).map { o in
            let source = Float(o) * scale
            let floor = Int(source)
            let t = source - Float(floor)
            return (floor - 1, cubicWeights(t))
        }
        var out = [Float](repeating: 0, count: size * size * 2)
        for c in 0..<2 {
            for y in 0..<size {
                for x in 0..<size {
                    var value: Float = 0
                    for (i, wy) in taps[y].weights.enumerated() {
                        let row = min(max(taps[y].first + i, 0), k - 1)
                        var line: Float = 0
                        for (j, wx) in taps[x].weights.enumerated() {
                            line += wx * scaled[(c * k + row) * k + min(max(taps[x].first + j, 0), k - 1)]
                        }
                        value += wy * line
                    }
                    out[(y * size + x) * 2 + c] = value
                }
            }
        }
        return out
    }

    static func cubicWeights(_ t: Float) -> [Float] {
        let a: Float = -0.75
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
        return [far(t + 1), near(t), near(1 - t), far(2 - t)]
    }

    /// Bilinear sampling of one image's float planes (CHW) at `grid` (align_corners, zero padding).
    public static func sample(_ planes: [Double], grid: [Float]) -> [Double] {
        let plane = size * size
        var out = [Double](repeating: 0, count: planes.count)
        let channels = planes.count / plane
        for p in 0..<plane {
            let ix = (Double(grid[2 * p]) + 1) / 2 * Double(size - 1)
            let iy = (Double(grid[2 * p + 1]) + 1) / 2 * Double(size - 1)
            let (x0, y0) = (Int(ix.rounded(.down)), Int(iy.rounded(.down)))
            let (fx, fy) = (ix - Double(x0), iy - Double(y0))
            for c in 0..<channels {
                let base = c * plane
                func at(_ y: Int, _ x: Int) -> Double { (0..<size).contains(y) && (0..<size).contains(x) ? planes[base + y * size + x] : 0 }
                out[base + p] = (at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy) + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy
            }
        }
        return out
    }

    /// The warped test image, rounded to the nearest byte (the reference keeps floats).
    public func apply(to set: inout ImageSet, at indices: [Int]) {
        ImagePlanes.map(&set, at: indices, rule: .toNearestOrAwayFromZero) { Self.sample($0, grid: grid) }
    }

    /// Noise mode: the warp grid plus `U(-1, 1) / 32` per position and coordinate, clamped.
    func noisyGrid(using generator: inout SeededGenerator) -> [Float] {
        grid.map { min(max($0 + (generator.nextFloat() * 2 - 1) / Float(Self.size), -1), 1) }
    }
}
