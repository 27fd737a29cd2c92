import Backend
import Formats
import Foundation

/// SGD as PyTorch's `torch.optim.SGD` with momentum, no dampening, no Nesterov: weight decay is
/// added to every parameter's gradient, the momentum buffer starts as the first gradient. The
/// optimiser owns its momentum buffers (training, fine-tuning and ANP's masks all use this one).
public final class SGD {
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    /// PyTorch's `nesterov=True` (ABL's optimiser): the step is d + momentum x buffer.
    public var nesterov = false
    /// Keyed by parameter identity; holding the parameter keeps the key from being reused.
    private var buffers: [ObjectIdentifier: (parameter: Parameter, tensor: Tensor)] = [:]

    public init(learningRate: Float = 0.1, momentum: Float = 0.9, weightDecay: Float = 5e-4) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter]) throws {
        for p in parameters {
            let key = ObjectIdentifier(p)
            let fresh = buffers[key] == nil
            var buffer = try buffers[key]?.tensor ?? p.value.backend.makeTensor(p.value.layout)
            // A buffer restored before the parameter took its compute layout follows it there.
            if buffer.layout != p.value.layout { buffer = try buffer.relayout(to: p.value.layout) }
            buffers[key] = (p, buffer)
            try p.value.backend.sgdStep(value: p.value, gradient: p.gradient, momentum: buffer,
                                        learningRate: learningRate, momentumFactor: momentum, weightDecay: weightDecay,
                                        nesterov: nesterov, firstStep: fresh)
        }
    }

    /// Forgets every momentum buffer (the next step starts afresh).
    public func reset() { buffers.removeAll() }

    /// The momentum buffer of a parameter in PyTorch's order and shape (nil before its first step).
    public func momentumValues(_ parameter: Parameter) throws -> [Float]? {
        try buffers[ObjectIdentifier(parameter)]?.tensor.plainValues()
    }

    /// Momentum buffers in PyTorch's shapes, keyed `momentum.<parameter name>` (for resuming).
    public func state(_ parameters: [Parameter]) throws -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for p in parameters {
            guard let m = try momentumValues(p) else { continue }
            out["momentum." + p.name] = HostTensor(floats: m, shape: p.plainShape)
        }
        return out
    }

    /// Restores buffers saved by `state`; parameters without one start afresh.
    public func restore(_ parameters: [Parameter], from state: [String: HostTensor]) throws {
        for p in parameters {
            guard let saved = state["momentum." + p.name] else {
                buffers[ObjectIdentifier(p)] = nil
                continue
            }
            try setMomentum(p, try saved.floats())
        }
    }

    /// Sets one parameter's buffer from plain values.
    public func setMomentum(_ parameter: Parameter, _ values: [Float]) throws {
        let buffer = try parameter.value.backend.makeTensor(parameter.value.layout)
        try buffer.setPlainValues(values)
        buffers[ObjectIdentifier(parameter)] = (parameter, buffer)
    }
}

/// Learning rate multiplied by `gamma` at each milestone epoch (PyTorch's MultiStepLR).
public struct MultiStepSchedule: Codable, Equatable {
    public var baseLearningRate: Float
    public var milestones: [Int]
    public var gamma: Float

    public init(baseLearningRate: Float, milestones: [Int], gamma: Float = 0.1) {
        self.baseLearningRate = baseLearningRate
        self.milestones = milestones.sorted()
        self.gamma = gamma
    }

    /// Learning rate for a 0-based epoch index.
    public func learningRate(epoch: Int) -> Float {
        let passed = milestones.filter { epoch >= $0 }.count
        var lr = baseLearningRate
        for _ in 0..<passed { lr *= gamma }
        return lr
    }
}

/// PyTorch's CosineAnnealingLR (eta_min 0) stepped once per epoch:
/// lr = base * (1 + cos(pi * epoch / tMax)) / 2.
public struct CosineSchedule: Codable, Equatable {
    public var baseLearningRate: Float
    public var tMax: Int

    public init(baseLearningRate: Float, tMax: Int) {
        self.baseLearningRate = baseLearningRate
        self.tMax = max(tMax, 1)
    }

    /// Learning rate for a 0-based epoch index.
    public func learningRate(epoch: Int) -> Float {
        Float(Double(baseLearningRate) * (1 + cos(Double.pi * Double(epoch) / Double(tMax))) / 2)
    }
}
