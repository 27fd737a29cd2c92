import Backend
import CDNNL
import Foundation

@inline(__always)
func check(_ status: dnnl_status_t, _ operation: @autoclosure () -> String) throws {
    if status != dnnl_success {
        throw BackendError(operation: "oneDNN: " + operation(), reason: String(cString: dnnl_status2str(status)))
    }
}

/// The CPU engine and the one stream every primitive runs on (oneDNN's CPU engine is a
/// process-wide resource; backends share it).
enum Runtime {
    final class Handles {
        let engine: dnnl_engine_t
        let stream: dnnl_stream_t
        init() {
            var engine: dnnl_engine_t?
            var stream: dnnl_stream_t?
            guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success, let engine,
                  dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success,
                  let stream else {
                fatalError("oneDNN: cannot create the CPU engine and stream")
            }
            self.engine = engine
            self.stream = stream
        }
    }

    static let handles = Handles()
    static var engine: dnnl_engine_t { handles.engine }
    static var stream: dnnl_stream_t { handles.stream }
}

/// A cache of kernels by configuration, safe to use from loading threads.
final class KernelCache<Key: Hashable, Kernel> {
    private var entries: [Key: Kernel] = [:]
    private let lock = NSLock()

    func get(_ key: Key, make: () throws -> Kernel) rethrows -> Kernel {
        lock.lock()
        defer { lock.unlock() }
        if let kernel = entries[key] { return kernel }
        let kernel = try make()
        entries[key] = kernel
        return kernel
    }

    var kernels: [Kernel] {
        lock.lock()
        defer { lock.unlock() }
        return Array(entries.values)
    }
}
