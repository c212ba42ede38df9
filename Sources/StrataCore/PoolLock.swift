// The pool directory's lock: `flock` on DIR/lock, with the holder's PID written inside so a
// second opener's error can name it. The kernel drops the lock when the holder dies, so a
// crashed daemon never leaves a pool locked.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An exclusive (read-write) or shared (read-only) lock on a pool directory.
public final class PoolLock: @unchecked Sendable {
    let fd: Int32
    public let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Takes the lock without waiting.
    /// - Throws: `.busy` naming the holder's PID when another process holds it.
    public static func acquire(directory: String, exclusive: Bool) throws(StrataError) -> PoolLock {
        let path = directory + "/lock"
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 { throw StrataError.io("open lock file", path, errno: Glibc.errno) }
        if flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let code = Glibc.errno
            let holder = Self.recordedHolder(fd)
            Glibc.close(fd)
            if code == EWOULDBLOCK {
                let who = Self.isAlive(holder) ? "process \(holder!)" : "another process"
                throw StrataError(
                    .busy,
                    "open pool \(directory): locked by \(who); stop that process (or use its control socket) and retry"
                )
            }
            throw StrataError.io("lock pool", directory, errno: code)
        }
        // Record who holds the lock so a refused opener can name it. A shared holder replaces
        // the PID only when the recorded process is gone, so a live writer is never hidden.
        if exclusive || !Self.isAlive(Self.recordedHolder(fd)) {
            let text = Array("\(getpid())\n".utf8)
            _ = ftruncate(fd, 0)
            _ = pwrite(fd, text, text.count, 0)
        }
        return PoolLock(fd: fd, path: path)
    }

    deinit { Glibc.close(self.fd) }

    private static func recordedHolder(_ fd: Int32) -> Int32? {
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = pread(fd, &bytes, 32, 0)
        guard count > 0 else { return nil }
        return Int32(String(decoding: bytes[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private static func isAlive(_ pid: Int32?) -> Bool {
        guard let pid, pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }
}
