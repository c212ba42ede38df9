// sd_notify(3) without libsystemd: when systemd starts the daemon with `Type=notify`, it sets
// NOTIFY_SOCKET to a Unix datagram socket (a path, or an abstract name starting with '@') and
// waits for "READY=1". The daemon sends READY=1 once it serves and STOPPING=1 when its graceful
// shutdown begins (contrib/strata.service). Without NOTIFY_SOCKET every call does nothing.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum SystemdNotify {
    /// Sends `state` (e.g. "READY=1\nSTATUS=serving") to systemd if it is listening; a failure
    /// to notify is not an error of the daemon's, so it is returned for logging, never thrown.
    @discardableResult
    public static func send(_ state: String, environment: [String: String] = ProcessInfo.processInfo.environment)
        -> String?
    {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // the abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return "NOTIFY_SOCKET \(path) is too long" }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "notify systemd: socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), socketAddress, length)
            }
        }
        guard sent == message.count else { return "notify systemd at \(path): \(String(cString: strerror(errno)))" }
        return nil
    }
}
