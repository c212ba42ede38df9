// One file of a base image, opened read-only: its descriptor, size and identity, and
// positioned reads that never return short except at the end of the file.
//
// Invariants: the descriptor is opened O_RDONLY|O_CLOEXEC and closed only when the last
// reference goes; the size is taken once at open (base images are immutable while open, and
// the engine checks the file's identity before trusting it), so every bound check against
// `size` is against one value. `pread` keeps no file position, so many threads read at once.

import StrataCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A base image file opened read-only.
final class ImageFile: Sendable {
    /// The path as resolved (absolute), for messages and `layers`.
    let path: String
    let descriptor: Int32
    /// Bytes in the file (for a block device, the device's size).
    let size: UInt64
    /// The file's device and inode, to find a backing chain that loops.
    let identity: FileKey

    /// A file's device and inode number: equal for two paths naming the same file.
    struct FileKey: Hashable, Sendable {
        let device: UInt64
        let inode: UInt64
    }

    /// Opens `path` read-only.
    /// - Throws: `.notFound` when it does not exist, `.io` for any other failure.
    init(path: String) throws(StrataError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            if code == ENOENT {
                throw StrataError(.notFound, "open base image \(path): no such file; check the path")
            }
            throw ImageErrors.io("open base image", path, errno: code)
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let code = errno
            close(descriptor)
            throw ImageErrors.io("stat base image", path, errno: code)
        }
        var size = UInt64(max(status.st_size, 0))
        if (status.st_mode & S_IFMT) == S_IFBLK {
            let end = lseek(descriptor, 0, SEEK_END)
            guard end >= 0 else {
                let code = errno
                close(descriptor)
                throw ImageErrors.io("size base image", path, errno: code)
            }
            size = UInt64(end)
        } else if (status.st_mode & S_IFMT) != S_IFREG {
            close(descriptor)
            throw StrataError(
                .invalidArgument, "open base image \(path): not a regular file or block device; name an image file")
        }
        self.path = path
        self.descriptor = descriptor
        self.size = size
        self.identity = FileKey(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }

    deinit {
        close(self.descriptor)
    }

    /// Reads `buffer.count` bytes at `offset`; bytes at or past the end of the file read as zeros.
    /// - Throws: `.io` naming the file and the offset.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
        guard offset < self.size else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            guard position < self.size else { break }
            let want = Int(min(UInt64(buffer.count - done), self.size - position))
            let got = pread(self.descriptor, buffer.baseAddress! + done, want, off_t(position))
            if got < 0 {
                let code = errno
                if code == EINTR { continue }
                throw ImageErrors.io("read base image", "\(self.path) (offset=\(position))", errno: code)
            }
            if got == 0 { break }
            done += got
        }
        if done < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Reads as `read(at:into:)` does if every byte is in the page cache; false otherwise.
    func readIfCached(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard offset < self.size else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
        // A read that runs past the end of the file takes the waiting path, which zero-fills.
        guard UInt64(buffer.count) <= self.size - offset else { return false }
        return readWithoutWaiting(self.descriptor, into: buffer, at: offset)
    }

    /// Reads `count` bytes at `offset` into a new array (zeros past the end of the file).
    /// - Precondition: `count` was bounded by a limit or by the file's size by the caller.
    func bytes(at offset: UInt64, count: Int) throws(StrataError) -> [UInt8] {
        precondition(count >= 0, "negative read length")
        var bytes = [UInt8](repeating: 0, count: count)
        try self.read(at: offset, into: &bytes)
        return bytes
    }

    /// Fills `array`'s memory with the file's bytes at `offset` (zeros past the end of the file).
    func read<Element>(at offset: UInt64, into array: inout [Element]) throws(StrataError) {
        var failure: StrataError?
        array.withUnsafeMutableBytes { bytes in
            do throws(StrataError) {
                try self.read(at: offset, into: bytes)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }
}

/// Builders of the errors every decoder throws, so messages keep one shape.
enum ImageErrors {
    /// `<op> <object>: <strerror> (errno=…)`.
    static func io(_ operation: String, _ object: String, errno code: Int32) -> StrataError {
        StrataError(.io, "\(operation) \(object): \(String(cString: strerror(code))) (errno=\(code))")
    }

    /// `open base image <path>: <what> (<fields>)`, with `fix` appended when the user can act.
    static func corrupt(_ path: String, _ what: String, _ fields: String = "", fix: String = "") -> StrataError {
        StrataError(.corrupt, self.message("open base image", path, what, fields, fix))
    }

    /// `open base image <path>: <feature> is not supported (<fields>); <fix>`.
    static func unsupported(_ path: String, _ what: String, _ fields: String = "", fix: String) -> StrataError {
        StrataError(.invalidArgument, self.message("open base image", path, what, fields, fix))
    }

    /// A damaged structure found while reading, naming the file and where.
    static func corruptRead(_ path: String, _ what: String, _ fields: String) -> StrataError {
        StrataError(.corrupt, self.message("read base image", path, what, fields, ""))
    }

    private static func message(
        _ operation: String, _ path: String, _ what: String, _ fields: String, _ fix: String
    ) -> String {
        var text = "\(operation) \(path): \(what)"
        if !fields.isEmpty { text += " (\(fields))" }
        if !fix.isEmpty { text += "; \(fix)" }
        return text
    }
}
