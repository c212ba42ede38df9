// Blocking Unix-domain sockets by path: the one place a `sockaddr_un` is built. The CLI
// connects with it to control.sock and stream.sock; the daemon listens on stream.sock with it
// and notifies systemd through it (SystemdNotify); control.sock is bound by SwiftNIO, which
// builds its own address.

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

/// A `sockaddr_un` for a path, and the calls that take one.
struct UnixSocketAddress {
    private var address = sockaddr_un()
    private let length: socklen_t

    /// Nil when `path` does not fit in `sun_path` (108 bytes on Linux, with its terminating zero).
    /// With `abstractPrefix`, a path starting with '@' names a socket in the abstract namespace
    /// (sd_notify's convention for NOTIFY_SOCKET): a zero byte in its place, no terminator, and
    /// an address length that counts exactly the name.
    init?(_ path: String, abstractPrefix: Bool = false) {
        var bytes = Array(path.utf8)
        let abstract = abstractPrefix && bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: self.address.sun_path) else { return nil }
        self.address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &self.address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            if !abstract { raw[bytes.count] = 0 }
        }
        self.length =
            abstract ? socklen_t(MemoryLayout<sa_family_t>.size + bytes.count) : socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: self.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, self.length) }
        }
    }

    /// Connects to the socket at `path`; nil when nobody listens there. A full listen queue
    /// (EAGAIN on a Unix socket) means a busy daemon, not an absent one: it is retried for up to
    /// five seconds.
    static func connect(_ path: String) -> Int32? {
        guard FileManager.default.fileExists(atPath: path), let address = UnixSocketAddress(path) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        for _ in 0..<500 {
            if address.withSockaddr({ Glibc.connect(fd, $0, $1) }) == 0 { return fd }
            guard errno == EAGAIN || errno == EINTR else { break }
            usleep(10_000)
        }
        // A stale socket file from a daemon that died: no one is listening.
        close(fd)
        return nil
    }

    /// Binds a listening socket at `path` (replacing a stale file), mode 0600.
    /// - Throws: `.io` naming the path and the reason.
    static func listen(_ path: String, backlog: Int32) throws(StrataError) -> Int32 {
        unlink(path)
        guard let address = UnixSocketAddress(path) else {
            throw StrataError(.io, "serve: the socket path \(path) is too long; use a shorter pool directory")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw StrataError(.io, "serve: cannot create the socket \(path)") }
        guard address.withSockaddr({ bind(fd, $0, $1) }) == 0, Glibc.listen(fd, backlog) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw StrataError(.io, "serve: cannot listen on \(path) (\(reason))")
        }
        chmod(path, 0o600)
        return fd
    }
}
