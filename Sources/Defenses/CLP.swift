import NN

/// Channel Lipschitzness-based Pruning (Zheng et al., ECCV 2022), data-free, as the authors' code
/// and BackdoorBench compute it: for each BatchNorm2d and the convolution before it, channel k's
/// upper bound of the Lipschitz constant is the largest singular value of the kernel W[k]
/// (reshaped in_channels x kh*kw) times |gamma_k / sqrt(running_var_k)|. A backdoor tends to
/// live in channels whose bound stands out, so those above mean + u * std of their layer (std
/// unbiased, as torch.std) lose their BN weight and bias.
public enum CLP {
    /// Each BatchNorm's per-channel bounds, in model order.
    public struct LayerBounds: Equatable {
        public var layer: String
        public var bounds: [Double]
    }

    /// The bounds of every BatchNorm that follows a convolution (in tree order, as the reference
    /// walks `named_modules`).
    public static func channelBounds(_ model: Model) throws -> [LayerBounds] {
        var conv: Conv2d?
        var out: [LayerBounds] = []
        for (_, module) in model.namedModules() {
            if let c = module as? Conv2d { conv = c }
            guard let bn = module as? BatchNorm2d, let conv, conv.outChannels == bn.channels else { continue }
            let weights = try conv.weight.plainValues()
            let gamma = try bn.weight.plainValues(), variance = try bn.runningVar.plainValues()
            let rows = conv.inChannels / conv.groups, columns = conv.kernel * conv.kernel
            let bounds = (0..<bn.channels).map { k -> Double in
                let kernel = weights[(k * rows * columns)..<((k + 1) * rows * columns)].map(Double.init)
                return largestSingularValue(Array(kernel), rows: rows, columns: columns)
                    * abs(Double(gamma[k]) / Double(variance[k]).squareRoot())
            }
            out.append(LayerBounds(layer: bn.name, bounds: bounds))
        }
        return out
    }

    /// The channels above mean + u * std of their layer, with their bound as the value.
    public static func select(_ layers: [LayerBounds], u: Double) -> [NeuronScore] {
        layers.flatMap { layer -> [NeuronScore] in
            let b = layer.bounds
            guard b.count > 1 else { return [] }
            let mean = b.reduce(0, +) / Double(b.count)
            let std = (b.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(b.count - 1)).squareRoot()
            return b.indices.filter { b[$0] > mean + u * std }.map { NeuronScore(layer: layer.layer, index: $0, value: b[$0]) }
        }
    }

    /// Zeroes the BN weight and bias of the selected channels; returns them.
    @discardableResult
    public static func prune(_ model: Model, u: Double = 3) throws -> [NeuronScore] {
        let chosen = select(try channelBounds(model), u: u)
        let layers = Dictionary(uniqueKeysWithValues: model.batchNorms.map { ($0.name, $0) })
        for (name, neurons) in Dictionary(grouping: chosen, by: \.layer) {
            guard let bn = layers[name] else { continue }
            var weight = try bn.weight.plainValues(), bias = try bn.bias.plainValues()
            for n in neurons { (weight[n.index], bias[n.index]) = (0, 0) }
            try bn.weight.setPlainValues(weight)
            try bn.bias.setPlainValues(bias)
        }
        return chosen
    }

    /// sigma_max of a rows x columns matrix (row-major): the square root of the largest
    /// eigenvalue of its columns x columns Gram matrix, by cyclic Jacobi rotations (columns is
    /// kh*kw, at most a few dozen).
    static func largestSingularValue(_ m: [Double], rows: Int, columns n: Int) -> Double {
        var g = [Double](repeating: 0, count: n * n)
        for r in 0..<rows {
            for i in 0..<n { for j in 0..<n { g[i * n + j] += m[r * n + i] * m[r * n + j] } }
        }
        for _ in 0..<50 {
            var off = 0.0
            for p in 0..<n { for q in 0..<n where p != q { off += g[p * n + q] * g[p * n + q] } }
            if off < 1e-24 * max(g.map(abs).max() ?? 0, 1e-300) { break }
            for p in 0..<n - 1 {
                for q in (p + 1)..<n where g[p * n + q] != 0 {
                    // The rotation that zeroes g[p][q] (Golub & Van Loan, symmetric Schur).
                    let tau = (g[q * n + q] - g[p * n + p]) / (2 * g[p * n + q])
                    let t = (tau >= 0 ? 1 : -1) / (abs(tau) + (1 + tau * tau).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = t * c
                    for k in 0..<n {
                        let (gkp, gkq) = (g[k * n + p], g[k * n + q])
                        g[k * n + p] = c * gkp - s * gkq
                        g[k * n + q] = s * gkp + c * gkq
                    }
                    for k in 0..<n {
                        let (gpk, gqk) = (g[p * n + k], g[q * n + k])
                        g[p * n + k] = c * gpk - s * gqk
                        g[q * n + k] = s * gpk + c * gqk
                    }
                }
            }
        }
        return (0..<n).map { max(g[$0 * n + $0], 0) }.max().map { $0.squareRoot() } ?? 0
    }
}
