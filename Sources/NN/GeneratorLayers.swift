import Backend
import Foundation

/// PyTorch's `nn.Upsample(scale_factor=2, mode="bilinear")` (align_corners False): output pixel
/// o reads input coordinate max((o + 0.5) / 2 - 0.5, 0) with linear weights, the last row and
/// column repeated. Host-side: the generators it serves are small next to the convolutions.
public final class Upsample2d: Module, Layer {
    private let backend: Backend
    private var input: Tensor?
    private var output = OutputSlot()

    public init(on backend: Backend) { self.backend = backend }

    /// Per output coordinate of a side of `size` inputs: the two source indices and the second's weight.
    static func taps(inputSize size: Int) -> [(Int, Int, Float)] {
        (0..<2 * size).map { o in
            let source = max((Float(o) + 0.5) / 2 - 0.5, 0)
            let low = min(Int(source), size - 1)
            return (low, min(low + 1, size - 1), source - Float(low))
        }
    }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        let s = x.shape
        guard s.count == 4 else { throw ShapeError("\(name): Upsample2d takes N x C x H x W, got \(s)") }
        input = x
        let (h, w) = (s[2], s[3])
        let rows = Self.taps(inputSize: h), columns = Self.taps(inputSize: w)
        let values = try x.plainValues()
        var out = [Float](repeating: 0, count: s[0] * s[1] * 4 * h * w)
        for plane in 0..<s[0] * s[1] {
            let (src, dst) = (plane * h * w, plane * 4 * h * w)
            for (oy, (y0, y1, fy)) in rows.enumerated() {
                for (ox, (x0, x1, fx)) in columns.enumerated() {
                    let top = values[src + y0 * w + x0] * (1 - fx) + values[src + y0 * w + x1] * fx
                    let bottom = values[src + y1 * w + x0] * (1 - fx) + values[src + y1 * w + x1] * fx
                    out[dst + oy * 2 * w + ox] = top * (1 - fy) + bottom * fy
                }
            }
        }
        let y = try output.get(backend.plainLayout([s[0], s[1], 2 * h, 2 * w]), on: backend)
        try y.setPlainValues(out)
        return y
    }

    /// The transpose of the forward's weights; the input gradient comes in the input's layout.
    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        guard let input else { throw ShapeError("\(name): backward before forward") }
        defer { pass.pool.give(gradient) }
        guard needsInputGradient else { return nil }
        let s = input.shape
        let (h, w) = (s[2], s[3])
        let rows = Self.taps(inputSize: h), columns = Self.taps(inputSize: w)
        let g = try gradient.plainValues()
        var gx = [Float](repeating: 0, count: input.elementCount)
        for plane in 0..<s[0] * s[1] {
            let (src, dst) = (plane * h * w, plane * 4 * h * w)
            for (oy, (y0, y1, fy)) in rows.enumerated() {
                for (ox, (x0, x1, fx)) in columns.enumerated() {
                    let v = g[dst + oy * 2 * w + ox]
                    gx[src + y0 * w + x0] += v * (1 - fy) * (1 - fx)
                    gx[src + y0 * w + x1] += v * (1 - fy) * fx
                    gx[src + y1 * w + x0] += v * fy * (1 - fx)
                    gx[src + y1 * w + x1] += v * fy * fx
                }
            }
        }
        let out = try pass.pool.take(input.layout)
        try out.setPlainValues(gx)
        return out
    }
}

/// y = tanh(scale x + shift) / (2 + 1e-7) + 0.5: the Input-aware generators' output squash
/// (scale 1, shift 0) and their mask threshold (scale 20, shift -10), as the reference writes them.
public final class ScaledTanh: Module, Layer {
    public static let epsilon: Float = 1e-7
    public let scale, shift: Float
    private let backend: Backend
    private var tanh: [Float] = []
    private var inputLayout: TensorLayout?
    private var output = OutputSlot()

    public init(scale: Float = 1, shift: Float = 0, on backend: Backend) {
        (self.scale, self.shift, self.backend) = (scale, shift, backend)
    }

    public func forward(_ x: Tensor, _ pass: ForwardPass) throws -> Tensor {
        inputLayout = x.layout
        tanh = try x.plainValues().map { Foundation.tanh(scale * $0 + shift) }
        let y = try output.get(backend.plainLayout(x.shape), on: backend)
        try y.setPlainValues(tanh.map { $0 / (2 + Self.epsilon) + 0.5 })
        return y
    }

    public func backward(_ gradient: Tensor, _ pass: BackwardPass, needsInputGradient: Bool) throws -> Tensor? {
        guard let inputLayout else { throw ShapeError("\(name): backward before forward") }
        defer { pass.pool.give(gradient) }
        guard needsInputGradient else { return nil }
        let g = try gradient.plainValues()
        let factor = scale / (2 + Self.epsilon)
        let gx = try pass.pool.take(inputLayout)
        try gx.setPlainValues((0..<g.count).map { g[$0] * factor * (1 - tanh[$0] * tanh[$0]) })
        return gx
    }
}
