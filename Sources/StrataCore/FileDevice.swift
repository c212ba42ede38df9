// A pool device backed by one sparse file (or a block device) through pread/pwrite/fdatasync.
// The file's size never changes after `pool init`, so fdatasync is a full barrier for it.
// Calls block: the engine runs on caller threads (front ends use a thread pool), never on an
// event loop.

import CStrata

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads all of `buffer` at `offset` from `fd` if every byte is in the page cache (preadv2 with
/// RWF_NOWAIT); false when any is not, the file ends first, or the kernel cannot tell (the
/// caller then reads on a thread that may wait, which also reports any error).
public func readWithoutWaiting(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
    buffer.isEmpty || strata_pread_nowait(fd, buffer.baseAddress, buffer.count, offset) == buffer.count
}

/// A `PoolDevice` over a file descriptor.
public final class FileDevice: PoolDevice, @unchecked Sendable {
    // `fd` and `size` are immutable after init; pread/pwrite are thread-safe on one descriptor.
    let fd: Int32
    public let path: String
    public let size: UInt64

    /// Opens an existing pool file.
    /// - Throws: `StrataError` with code `.notFound` or `.io`.
    public init(path: String, readOnly: Bool = false) throws(StrataError) {
        let fd = Glibc.open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        if fd < 0 {
            let code = Glibc.errno
            if code == ENOENT { throw StrataError(.notFound, "open pool file \(path): no such file") }
            throw StrataError.io("open pool file", path, errno: code)
        }
        var info = stat()
        if fstat(fd, &info) != 0 {
            let code = Glibc.errno
            Glibc.close(fd)
            throw StrataError.io("stat pool file", path, errno: code)
        }
        self.fd = fd
        self.path = path
        self.size = UInt64(info.st_size)
    }

    /// Creates a sparse file of `size` bytes; fails if the file exists.
    /// - Throws: `StrataError` with code `.alreadyExists` or `.io`.
    public static func create(path: String, size: UInt64) throws(StrataError) -> FileDevice {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            let code = Glibc.errno
            if code == EEXIST {
                throw StrataError(.alreadyExists, "create pool file \(path): file exists; choose another --pool")
            }
            throw StrataError.io("create pool file", path, errno: code)
        }
        if ftruncate(fd, off_t(size)) != 0 {
            let code = Glibc.errno
            Glibc.close(fd)
            unlink(path)
            throw StrataError.io("size pool file", path, errno: code)
        }
        Glibc.close(fd)
        return try FileDevice(path: path)
    }

    deinit { Glibc.close(self.fd) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(StrataError) {
        var done = 0
        while done < buffer.count {
            let n = pread(self.fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw StrataError.io("read pool file", self.path, errno: Glibc.errno)
            }
            if n == 0 {
                // Past the end of a file: reads as zeros, like a hole.
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += n
        }
    }

    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        readWithoutWaiting(self.fd, into: buffer, at: offset)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(self.fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw StrataError.io("write pool file", self.path, errno: Glibc.errno)
            }
            done += n
        }
    }

    public func sync() throws(StrataError) {
        if fdatasync(self.fd) != 0 {
            throw StrataError.io("sync pool file", self.path, errno: Glibc.errno)
        }
    }

    @discardableResult
    public func discard(at offset: UInt64, length: UInt64) -> Bool {
        // A filesystem without hole punching keeps the old bytes; the caller then zero-fills.
        strata_punch_hole(self.fd, offset, length) == 0
    }
}

/// Linux's lseek whence values for the next data and the next hole (<unistd.h> hides them behind
/// _GNU_SOURCE, which Swift's Glibc module does not define).
public enum FileSeek {
    public static let data: Int32 = 3
    public static let hole: Int32 = 4
}
