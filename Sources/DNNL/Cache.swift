/// Primitives are expensive to create: each op object is built once per configuration.
final class OpCache<Key: Hashable, Op> {
    private var entries: [Key: Op] = [:]
    private let lock = NSLockShim()

    func get(_ key: Key, make: () throws -> Op) rethrows -> Op {
        try lock.withLock {
            if let op = entries[key] { return op }
            let op = try make()
            entries[key] = op
            return op
        }
    }
}

extension Tensor {
    /// This tensor in the layout a primitive expects (reordered only when it differs).
    func matching(_ target: MemoryDesc) throws -> Tensor {
        try reordered(to: target)
    }
}
