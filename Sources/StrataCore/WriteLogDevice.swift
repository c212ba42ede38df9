// A testing-only pool device that records every write, discard and sync of the device under
// it, in order, with a CLOCK_MONOTONIC timestamp: a user-space dm-log-writes. With a copy of
// the pool file from before the daemon opened it, `tests/crash/replay.py` rebuilds the device
// as a power loss at any point of the log could have left it (the synced writes, plus each
// later write lost, kept or torn per 512-byte sector), which is how the power-loss test cuts
// power under a real daemon serving real clients.
//
// It is chosen only where `Pool.open` opens the pool file, and only when the environment
// variable `STRATA_TEST_WRITE_LOG` names a log file (docs/TESTING.md); otherwise the pool
// gets the bare `FileDevice` and the hot path is untouched. A process that turns it on says
// so on standard error: the log holds every byte written and grows without bound.
//
// Ordering contract (what makes the replay conservative and never optimistic):
// - a write or discard is logged after the device call returns, so a write that completed
//   before a sync began is logged before that sync's begin record;
// - a sync logs a begin record before calling the device and an end record after it returns;
//   a failed sync logs no end record;
// - timestamps are taken under the log's lock, so they never decrease along the log, and a
//   client that saw a flush acknowledged at time t knows its sync's end record is stamped
//   before t (the same clock: CLOCK_MONOTONIC is system-wide on Linux).
//
// Log layout, little-endian:
//
//   OFFSET SIZE FIELD
//   0      8    magic "STRATAWL"
//   8      4    version (1)
//   12     4    zero
//   16     8    device size in bytes
//
// then records:
//
//   OFFSET SIZE FIELD
//   0      1    kind: "W" write, "D" discard (the range now reads as zeros), "B" sync begins,
//               "E" sync ended
//   1      7    zero
//   8      8    CLOCK_MONOTONIC nanoseconds
//   16     8    offset in the device (zero for B and E)
//   24     8    length in bytes (zero for B and E)
//   32     …    for W only: the bytes written (length bytes)

import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `PoolDevice` that appends every write, discard and sync of the device it wraps to a log
/// file, for replaying power loss in tests.
public final class WriteLogDevice: PoolDevice, @unchecked Sendable {
    /// The environment variable that turns the log on.
    public static let environmentVariable = "STRATA_TEST_WRITE_LOG"
    static let magic: [UInt8] = Array("STRATAWL".utf8)
    static let version: UInt32 = 1

    enum Kind: UInt8 {
        case write = 0x57  // "W"
        case discard = 0x44  // "D"
        case syncBegin = 0x42  // "B"
        case syncEnd = 0x45  // "E"
    }

    let base: any PoolDevice
    let path: String
    // The log descriptor; appends happen under `appending`, which also orders the timestamps.
    let fd: Int32
    let appending = Mutex<Void>(())

    public var size: UInt64 { self.base.size }

    /// The log file the environment asks for, or nil when the mode is off. Says on standard
    /// error that the mode is on, every time a pool is opened with it.
    public static var requestedPath: String? {
        guard let value = getenv(Self.environmentVariable), value.pointee != 0 else { return nil }
        let path = String(cString: value)
        let warning =
            "strata: \(Self.environmentVariable)=\(path): TESTING ONLY: every write to the pool is copied to this log, "
            + "which grows without bound; unset it outside tests\n"
        _ = warning.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
        return path
    }

    /// Wraps `base`, appending to the log at `path` (created with its header when missing or empty).
    /// - Throws: `.io` naming the log when it cannot be opened or written.
    public init(logging base: any PoolDevice, to path: String) throws(StrataError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if fd < 0 { throw StrataError.io("open write log", path, errno: errno) }
        self.base = base
        self.path = path
        self.fd = fd
        var info = stat()
        if fstat(fd, &info) != 0 { throw StrataError.io("stat write log", path, errno: errno) }
        if info.st_size == 0 {
            var header = Self.magic
            Self.append(Self.version, to: &header)
            Self.append(UInt32(0), to: &header)
            Self.append(base.size, to: &header)
            try self.appendLocked(header)
        }
    }

    deinit { close(self.fd) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(StrataError) {
        try self.base.read(into: buffer, at: offset)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError) {
        try self.base.write(bytes, at: offset)
        try self.record(.write, offset: offset, length: UInt64(bytes.count), payload: bytes)
    }

    public func sync() throws(StrataError) {
        try self.record(.syncBegin, offset: 0, length: 0, payload: nil)
        try self.base.sync()
        try self.record(.syncEnd, offset: 0, length: 0, payload: nil)
    }

    @discardableResult
    public func discard(at offset: UInt64, length: UInt64) -> Bool {
        let zeroed = self.base.discard(at: offset, length: length)
        guard zeroed else { return false }
        do throws(StrataError) {
            try self.record(.discard, offset: offset, length: length, payload: nil)
        } catch {
            // A discard cannot report an error; a log that lost a record is useless for replay,
            // and this mode exists only in tests, so stop here rather than write a wrong log.
            fatalError("\(error.message)")
        }
        return true
    }

    private func record(_ kind: Kind, offset: UInt64, length: UInt64, payload: UnsafeRawBufferPointer?)
        throws(StrataError)
    {
        var bytes: [UInt8] = [kind.rawValue, 0, 0, 0, 0, 0, 0, 0]
        bytes.reserveCapacity(32 + (payload?.count ?? 0))
        try self.appending.withLock { _ throws(StrataError) in
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            Self.append(UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec), to: &bytes)
            Self.append(offset, to: &bytes)
            Self.append(length, to: &bytes)
            if let payload { bytes.append(contentsOf: payload) }
            try self.appendLocked(bytes)
        }
    }

    private func appendLocked(_ bytes: [UInt8]) throws(StrataError) {
        var done = 0
        while done < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(self.fd, $0.baseAddress! + done, $0.count - done) }
            if written < 0 {
                if errno == EINTR { continue }
                throw StrataError.io("append to write log", self.path, errno: errno)
            }
            done += written
        }
    }

    private static func append<Integer: FixedWidthInteger>(_ value: Integer, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}
