import Formats
import Foundation

/// torch.optim.Adam (no weight decay, eps 1e-8, PyTorch's default betas) on one host array; with
/// `amsgrad`, the denominator uses the running maximum of the second moment (`amsgrad=True`).
public struct Adam {
    public var learningRate: Float, beta1: Float, beta2: Float, epsilon: Float = 1e-8
    public var amsgrad = false
    var m: [Float], v: [Float], vMax: [Float] = [], t = 0

    public init(count: Int, learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, amsgrad: Bool = false) {
        (self.learningRate, self.beta1, self.beta2, self.amsgrad) = (learningRate, beta1, beta2, amsgrad)
        m = [Float](repeating: 0, count: count)
        v = m
        if amsgrad { vMax = m }
    }

    public mutating func step(_ x: inout [Float], gradient g: [Float]) {
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

/// Adam over a network's parameters (SAU's and the Input-aware generators' optimiser), host-side:
/// one `Adam` per parameter, stepped on its plain values and gradient.
public final class ParameterAdam {
    public var learningRate: Float
    public let beta1, beta2: Float
    public let amsgrad: Bool
    /// Keyed by parameter identity; holding the parameter keeps the key from being reused (as SGD's buffers).
    private var states: [ObjectIdentifier: (parameter: Parameter, adam: Adam)] = [:]

    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, amsgrad: Bool = false) {
        (self.learningRate, self.beta1, self.beta2, self.amsgrad) = (learningRate, beta1, beta2, amsgrad)
    }

    public func step(_ parameters: [Parameter]) throws {
        for p in parameters {
            let key = ObjectIdentifier(p)
            var adam = states[key]?.adam ?? Adam(count: p.count, learningRate: learningRate, beta1: beta1, beta2: beta2, amsgrad: amsgrad)
            adam.learningRate = learningRate
            var values = try p.plainValues()
            adam.step(&values, gradient: try p.plainGradient())
            try p.setPlainValues(values)
            states[key] = (p, adam)
        }
    }

    /// The moments and step counts in PyTorch's shapes, keyed `m.`, `v.`, `v_max.` (amsgrad) and
    /// `step.` + the parameter name (for resuming; parameters never stepped are left out).
    public func state(_ parameters: [Parameter]) -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for p in parameters {
            guard let adam = states[ObjectIdentifier(p)]?.adam else { continue }
            out["m." + p.name] = HostTensor(floats: adam.m, shape: p.plainShape)
            out["v." + p.name] = HostTensor(floats: adam.v, shape: p.plainShape)
            if amsgrad { out["v_max." + p.name] = HostTensor(floats: adam.vMax, shape: p.plainShape) }
            out["step." + p.name] = HostTensor(int64s: [Int64(adam.t)], shape: [])
        }
        return out
    }

    /// Restores what `state` wrote; a parameter without a saved step starts afresh.
    public func restore(_ parameters: [Parameter], from state: [String: HostTensor], source: String) throws {
        for p in parameters {
            let key = ObjectIdentifier(p)
            guard let step = state["step." + p.name] else {
                states[key] = nil
                continue
            }
            func moment(_ prefix: String) throws -> [Float] {
                guard let t = state[prefix + p.name], t.shape == p.plainShape else {
                    throw ShapeError("\(source): Adam state \(prefix)\(p.name) is missing or not of shape \(p.plainShape)")
                }
                return try t.floats()
            }
            var adam = Adam(count: p.count, learningRate: learningRate, beta1: beta1, beta2: beta2, amsgrad: amsgrad)
            (adam.m, adam.v) = (try moment("m."), try moment("v."))
            if amsgrad { adam.vMax = try moment("v_max.") }
            guard let t = try step.int64s().first, t >= 0 else { throw ShapeError("\(source): Adam step.\(p.name) is not a count") }
            adam.t = Int(t)
            states[key] = (p, adam)
        }
    }
}
