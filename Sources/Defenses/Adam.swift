import Foundation
import NN

/// torch.optim.Adam (eps 1e-8, no weight decay) on one host array; with `amsgrad`, the
/// denominator uses the running maximum of the second moment (PyTorch's `amsgrad=True`).
struct Adam {
    var learningRate: Float, beta1: Float, beta2: Float, epsilon: Float = 1e-8
    var amsgrad = false
    var m: [Float], v: [Float], vMax: [Float] = [], t = 0

    init(count: Int, learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, amsgrad: Bool = false) {
        (self.learningRate, self.beta1, self.beta2, self.amsgrad) = (learningRate, beta1, beta2, amsgrad)
        m = [Float](repeating: 0, count: count)
        v = m
        if amsgrad { vMax = m }
    }

    mutating func step(_ x: inout [Float], gradient g: [Float]) {
        t += 1
        let c1 = 1 - pow(beta1, Float(t)), c2 = 1 - pow(beta2, Float(t))
        for i in x.indices {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            var second = v[i]
            if amsgrad {
                vMax[i] = max(vMax[i], v[i])
                second = vMax[i]
            }
            x[i] -= learningRate * (m[i] / c1) / ((second / c2).squareRoot() + epsilon)
        }
    }
}

/// Adam over a model's parameters (SAU's optimiser): one host-side state per parameter, the
/// values and gradients read and written in PyTorch's order.
final class ParameterAdam {
    let learningRate: Float, beta1: Float, beta2: Float, amsgrad: Bool
    /// Keyed by parameter identity; holding the parameter keeps the key from being reused (as SGD's buffers).
    private var states: [ObjectIdentifier: (parameter: Parameter, adam: Adam)] = [:]

    init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, amsgrad: Bool = false) {
        (self.learningRate, self.beta1, self.beta2, self.amsgrad) = (learningRate, beta1, beta2, amsgrad)
    }

    func step(_ parameters: [Parameter]) throws {
        for p in parameters {
            var state = states[ObjectIdentifier(p)]?.adam
                ?? Adam(count: p.count, learningRate: learningRate, beta1: beta1, beta2: beta2, amsgrad: amsgrad)
            var x = try p.plainValues()
            state.step(&x, gradient: try p.plainGradient())
            try p.setPlainValues(x)
            states[ObjectIdentifier(p)] = (p, state)
        }
    }
}
