import CDNNL
import Foundation

/// A failed oneDNN call, naming the operation, the shapes involved and oneDNN's status.
public struct DNNLError: Error, CustomStringConvertible {
    public let operation: String
    public let status: String
    public var description: String { "oneDNN: \(operation) failed: \(status)" }
}

@inline(__always)
func check(_ status: dnnl_status_t, _ operation: @autoclosure () -> String) throws {
    if status != dnnl_success {
        throw DNNLError(operation: operation(), status: String(cString: dnnl_status2str(status)))
    }
}

/// The CPU engine and the one stream every primitive runs on. oneDNN here is built on OpenMP,
/// so the thread count is OpenMP's.
public enum Runtime {
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

    /// Sets the number of compute threads (default: the cores available).
    public static func setThreads(_ count: Int) {
        omp_set_num_threads(Int32(max(1, count)))
    }

    public static var threads: Int { Int(omp_get_max_threads()) }

    public static var availableCores: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Whether oneDNN runs its AVX-512 kernels here (it has Winograd convolutions only for those).
    public static var hasAVX512: Bool {
        let core = dnnl_cpu_isa_avx512_core.rawValue
        return dnnl_get_effective_cpu_isa().rawValue & core == core
    }

    /// oneDNN's version, for reports and checkpoints' metadata.
    public static var version: String {
        guard let v = dnnl_version() else { return "unknown" }
        return "\(v.pointee.major).\(v.pointee.minor).\(v.pointee.patch)"
    }
}
