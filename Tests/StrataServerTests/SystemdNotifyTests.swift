// sd_notify without libsystemd: the datagram reaches a socket bound where NOTIFY_SOCKET says,
// by path and in the abstract namespace; without NOTIFY_SOCKET nothing is sent.

import Foundation
import StrataServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct SystemdNotifyTests {
    /// Binds a datagram socket at `name` (a path, or '@' for the abstract namespace).
    func listen(_ name: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        try #require(bound == 0, "bind \(name): \(String(cString: strerror(errno)))")
        return fd
    }

    func receive(_ fd: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
    }

    @Test(arguments: ["path", "abstract"])
    func readyReachesTheNotifySocket(_ kind: String) throws {
        let name = kind == "path"
            ? NSTemporaryDirectory() + "strata-notify-\(getpid()).sock"
            : "@strata-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = try self.listen(name)
        defer {
            close(fd)
            if kind == "path" { unlink(name) }
        }
        #expect(SystemdNotify.send("READY=1\nSTATUS=serving", environment: ["NOTIFY_SOCKET": name]) == nil)
        #expect(self.receive(fd) == "READY=1\nSTATUS=serving")
    }

    @Test func withoutNotifySocketNothingIsSent() {
        #expect(SystemdNotify.send("READY=1", environment: [:]) == nil)
    }

    @Test func aMissingSocketIsReportedNotThrown() {
        let problem = SystemdNotify.send("READY=1", environment: ["NOTIFY_SOCKET": "/nonexistent/notify.sock"])
        #expect(problem?.contains("/nonexistent/notify.sock") == true)
    }
}
