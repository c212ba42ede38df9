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
        guard let address = UnixSocketAddress(path, abstractPrefix: true) else {
            return "NOTIFY_SOCKET \(path) is too long"
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "notify systemd: socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        let message = Array(state.utf8)
        let sent = address.withSockaddr { socketAddress, length in
            sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), socketAddress, length)
        }
        guard sent == message.count else { return "notify systemd at \(path): \(String(cString: strerror(errno)))" }
        return nil
    }
}
