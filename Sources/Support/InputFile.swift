import Foundation

/// Opening files given as input, with the reason for a failure in plain words (Foundation's
/// "error 256" or "You don't have permission" for a folder is neither). A path that is not a
/// regular file is refused before it is opened: a FIFO would block the read forever.
public enum InputFile {
    /// The size of the regular file at `path`; `what` names the expected file in errors
    /// ("safetensors file", "mask file").
    @discardableResult
    public static func check(_ path: String, what: String) throws -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FileError(path, "cannot read the \(what): \(SystemError.describe(errno))")
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return Int(info.st_size)
        case S_IFDIR: throw FileError(path, "is a directory; expected the \(what)")
        case S_IFIFO: throw FileError(path, "is a FIFO (named pipe); expected the \(what) as a regular file")
        default: throw FileError(path, "is not a regular file (a device or socket); expected the \(what)")
        }
    }

    /// The whole file, memory-mapped: pages are read only when touched, so a parser that reads a
    /// header and a few tensors does not pull a multi-gigabyte file into memory.
    public static func map(_ path: String, what: String) throws -> Data {
        try check(path, what: what)
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw FileError(path, "cannot read the \(what): \(SystemError.describe(error))")
        }
    }

    /// The whole file as bytes.
    public static func bytes(_ path: String, what: String) throws -> [UInt8] {
        [UInt8](try map(path, what: what))
    }

    /// The whole file as UTF-8 text (invalid sequences replaced).
    public static func text(_ path: String, what: String) throws -> String {
        String(decoding: try map(path, what: what), as: UTF8.self)
    }

    /// A handle for reading a checked regular file.
    public static func open(_ path: String, what: String) throws -> FileHandle {
        try check(path, what: what)
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw FileError(path, "cannot open the \(what): \(SystemError.describe(errno))")
        }
        return handle
    }

    public static func size(of handle: FileHandle, path: String) throws -> Int {
        var info = stat()
        guard fstat(handle.fileDescriptor, &info) == 0 else {
            throw FileError(path, "cannot read the file's size: \(SystemError.describe(errno))")
        }
        return Int(info.st_size)
    }

    /// Exactly `count` bytes from the handle's position, or an error naming the shortfall.
    public static func read(_ handle: FileHandle, count: Int, path: String) throws -> [UInt8] {
        let data: Data
        do {
            data = try handle.read(upToCount: count) ?? Data()
        } catch {
            throw FileError(path, "cannot read: \(SystemError.describe(error))")
        }
        guard data.count == count else {
            throw FileError(path, "file ended after \(data.count) of the \(count) bytes expected")
        }
        return [UInt8](data)
    }
}

/// System errors in words that name the cause, with the errno name for searching.
public enum SystemError {
    public static func describe(_ code: Int32) -> String {
        let name: String
        switch code {
        case ENOENT: name = "ENOENT"
        case EACCES: name = "EACCES"
        case EPERM: name = "EPERM"
        case EROFS: return "the file system is read-only (EROFS)"
        case ENOSPC: return "no space left on the device (ENOSPC)"
        case EDQUOT: return "disk quota exceeded (EDQUOT)"
        case ENOTDIR: return "a component of the path is a file, not a directory (ENOTDIR)"
        case EISDIR: return "it is a directory (EISDIR)"
        case EEXIST: name = "EEXIST"
        case EIO: name = "EIO"
        default: name = "errno \(code)"
        }
        return "\(String(cString: strerror(code))) (\(name))"
    }

    /// Foundation and POSIX errors alike: the underlying errno when there is one.
    public static func describe(_ error: Error) -> String {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return describe(Int32(ns.code)) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return describe(Int32(underlying.code))
        }
        switch ns.code {
        case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return describe(ENOENT)
        case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return describe(EACCES)
        case NSFileWriteOutOfSpaceError: return describe(ENOSPC)
        case NSFileWriteVolumeReadOnlyError: return describe(EROFS)
        case NSFileWriteFileExistsError: return "a file is in the way (EEXIST)"
        default: return ns.localizedDescription
        }
    }
}
