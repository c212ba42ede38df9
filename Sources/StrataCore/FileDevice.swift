// A pool device backed by one sparse file (or a block device) through pread/pwrite/fdatasync.
// The file's size never changes after `pool init`, so fdatasync is a full barrier for it.
// Calls block: the engine runs on caller threads (front ends use a thread pool), never on an
// event loop.

import CStrata
import Synchronization

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
    /// The same file opened with O_DIRECT for `writeUncached`, or -1 (read-only, or a
    /// filesystem without direct I/O); `directRefused` turns it off after a write it refused.
    /// fdatasync on `fd` makes its writes durable too: the barrier is per file, not per descriptor.
    private let directFD: Int32
    private let directRefused = Atomic<Bool>(false)
    private let directBytes = Atomic<UInt64>(0)
    /// Direct I/O's alignment of memory, offset and length: 4 KiB covers every logical block size.
    static let directAlignment = 4096
    /// The most one write around the cache copies into aligned memory at once.
    static let directBounceBytes = 1 << 20

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
        self.directFD = readOnly ? -1 : strata_open_direct(path)
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

    deinit {
        Glibc.close(self.fd)
        if self.directFD >= 0 { Glibc.close(self.directFD) }
    }

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

    /// Bytes written around the page cache (O_DIRECT) since the device was opened.
    public var bytesWrittenUncached: UInt64 { self.directBytes.load(ordering: .relaxed) }

    /// Writes with O_DIRECT when the descriptor, the offset and the length allow it (through
    /// aligned memory of its own when `bytes` is not aligned), otherwise as `write` does. A
    /// direct write the filesystem refuses (EINVAL) is written through the cache instead, and
    /// so is every later one.
    public func writeUncached(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError) {
        let alignment = Self.directAlignment
        guard self.directFD >= 0, !self.directRefused.load(ordering: .relaxed), !bytes.isEmpty,
            offset % UInt64(alignment) == 0, bytes.count % alignment == 0
        else { return try self.write(bytes, at: offset) }
        if Int(bitPattern: bytes.baseAddress!) % alignment == 0 {
            let done = try self.writeDirect(bytes, at: offset)
            if done < bytes.count { try self.write(UnsafeRawBufferPointer(rebasing: bytes[done...]), at: offset + UInt64(done)) }
            return
        }
        let bounce = UnsafeMutableRawBufferPointer.allocate(
            byteCount: min(bytes.count, Self.directBounceBytes), alignment: alignment)
        defer { bounce.deallocate() }
        var done = 0
        while done < bytes.count {
            let count = min(bounce.count, bytes.count - done)
            let piece = UnsafeMutableRawBufferPointer(rebasing: bounce[0..<count])
            piece.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<(done + count)]))
            let written = try self.writeDirect(UnsafeRawBufferPointer(piece), at: offset + UInt64(done))
            done += written
            if written < count {
                return try self.write(UnsafeRawBufferPointer(rebasing: bytes[done...]), at: offset + UInt64(done))
            }
        }
    }

    /// pwrite on the O_DIRECT descriptor until all of `bytes` is written or a write stops short
    /// of alignment; returns the bytes written (all of them unless the rest must go through the
    /// cache: a refused or short direct write).
    private func writeDirect(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError) -> Int {
        var done = 0
        while done < bytes.count {
            let n = pwrite(self.directFD, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                let code = Glibc.errno
                if code == EINTR { continue }
                if code == EINVAL {
                    self.directRefused.store(true, ordering: .relaxed)
                    return done
                }
                throw StrataError.io("write pool file", self.path, errno: code)
            }
            done += n
            self.directBytes.add(UInt64(n), ordering: .relaxed)
            if n == 0 || n % Self.directAlignment != 0 { return done }
        }
        return done
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
