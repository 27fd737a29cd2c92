import DNNL
import Formats

/// SGD as PyTorch's `torch.optim.SGD` with momentum, no dampening, no Nesterov: weight decay is
/// added to every parameter's gradient, the momentum buffer starts as the first gradient.
public struct SGD {
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float

    public init(learningRate: Float = 0.1, momentum: Float = 0.9, weightDecay: Float = 5e-4) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter]) throws {
        for p in parameters {
            let fresh = p.momentum == nil
            if fresh { p.momentum = try Tensor(desc: p.value.desc) }
            let (lr, mu, wd) = (learningRate, momentum, weightDecay)
            p.value.withStorage { w in
                p.gradient.withStorage { g in
                    p.momentum!.withStorage { buffer in
                        // Padding of blocked layouts holds zeros in w and g, so it stays zero.
                        for i in 0..<w.count {
                            let d = g[i] + wd * w[i]
                            buffer[i] = fresh ? d : mu * buffer[i] + d
                            w[i] -= lr * buffer[i]
                        }
                    }
                }
            }
        }
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

extension SGD {
    /// Momentum buffers in PyTorch's shapes, keyed `momentum.<parameter name>` (for resuming).
    public static func momentumState(_ parameters: [Parameter]) throws -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for p in parameters {
            guard let m = p.momentum else { continue }
            out["momentum." + p.name] = HostTensor(floats: try m.plainValues(), shape: p.plainShape)
        }
        return out
    }

    /// Restores buffers saved by `momentumState`; parameters without one start afresh.
    public static func restoreMomentum(_ parameters: [Parameter], from state: [String: HostTensor]) throws {
        for p in parameters {
            guard let saved = state["momentum." + p.name] else {
                p.momentum = nil
                continue
            }
            let buffer = try Tensor(desc: p.value.desc)
            try buffer.setPlainValues(saved.floats())
            p.momentum = buffer
        }
    }
}
