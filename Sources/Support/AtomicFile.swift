import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Errors about files that name the file and what was expected.
public struct FileError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}

/// Writes whole files through a temporary sibling: write, fsync, rename over the target, fsync
/// the folder. A reader, a crash or `kill -9` sees the old file or the new one, never a part.
/// (Foundation's `createFile` and atomic `write` skip the fsyncs and leave `.dat.nosync*`
/// temporaries behind when killed.)
public enum AtomicFile {
    /// Temporaries are `.NAME.tmp-PID-RANDOM` in the target's folder (a rename cannot cross file systems).
    static let temporaryMarker = ".tmp-"

    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        try Folder.create(directory)
        let temporary = directory + "/.\(url.lastPathComponent)\(temporaryMarker)\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw FileError(path, "cannot write: \(Folder.whyUnwritable(directory, errno: errno))")
        }
        do {
            try data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw FileError(path, "cannot write \(raw.count) bytes: \(SystemError.describe(errno))")
                    }
                    offset += written
                }
            }
            guard fsync(descriptor) == 0 else { throw FileError(path, "cannot write: \(SystemError.describe(errno))") }
        } catch {
            close(descriptor)
            unlink(temporary)
            throw error
        }
        close(descriptor)
        if rename(temporary, path) != 0 {
            let reason = errno == EISDIR ? "a directory of that name is in the way" : SystemError.describe(errno)
            unlink(temporary)
            throw FileError(path, "cannot put the new file in place: \(reason)")
        }
        Folder.sync(directory)
    }

    public static func write(_ text: String, to path: String) throws {
        try write(Data(text.utf8), to: path)
    }

    /// Removes temporaries that a killed writer left in `directory` (ours and Foundation's
    /// `.dat.nosync*`); call it only where no other process writes, e.g. on `--resume`.
    /// Returns the names removed.
    @discardableResult
    public static func removeStaleTemporaries(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let stale = names.filter { $0.hasPrefix(".") && ($0.contains(temporaryMarker) || $0.hasPrefix(".dat.nosync")) }
        for name in stale { unlink(directory + "/" + name) }
        return stale.sorted()
    }
}

/// Output folders, created with errors that say which part of the path is in the way.
public enum Folder {
    /// Creates `path` and its parents when missing.
    public static func create(_ path: String) throws {
        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else {
                throw FileError(path, "is a file, not a folder; expected a folder for the outputs (or a path that does not exist yet)")
            }
            return
        }
        // Name the ancestor that is a file, which Foundation's Code 512 does not.
        var ancestor = (path as NSString).deletingLastPathComponent
        while !ancestor.isEmpty, ancestor != "/" {
            if stat(ancestor, &info) == 0 {
                if info.st_mode & S_IFMT != S_IFDIR {
                    throw FileError(path, "cannot create the folder: \(ancestor) is a file, not a folder")
                }
                break
            }
            ancestor = (ancestor as NSString).deletingLastPathComponent
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw FileError(path, "cannot create the folder: \(SystemError.describe(error))")
        }
    }

    /// Why a file cannot be created in `directory`, given the errno of the attempt.
    static func whyUnwritable(_ directory: String, errno code: Int32) -> String {
        switch code {
        case EACCES, EPERM: return "the folder \(directory) is not writable (\(code == EACCES ? "EACCES" : "EPERM"))"
        case EROFS: return "the folder \(directory) is on a read-only file system (EROFS)"
        default: return SystemError.describe(code)
        }
    }

    /// Checks that files can be created in `directory` (e.g. before resuming a run there).
    public static func checkWritable(_ directory: String) throws {
        guard access(directory, W_OK) == 0 else {
            throw FileError(directory, "cannot write here: \(whyUnwritable(directory, errno: errno))")
        }
    }

    /// Makes a rename in `directory` durable; best effort (some file systems refuse it).
    static func sync(_ directory: String) {
        let descriptor = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }
}

/// Log files that grow by appending.
public enum AppendFile {
    /// Opens `path` for appending (created when missing, emptied when `truncate`), creating its folder.
    public static func open(_ path: String, truncate: Bool) throws -> FileHandle {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try Folder.create(directory) }
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o644)
        guard descriptor >= 0 else {
            throw FileError(path, "cannot open the log file for appending: \(SystemError.describe(errno))")
        }
        return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }
}
