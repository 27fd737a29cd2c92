import Foundation

/// A mutex for the primitive caches (loading threads may create reorders).
final class NSLockShim {
    private let lock = NSLock()
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
