// The CLI side of the control socket: plain blocking POSIX I/O (the CLI is synchronous).

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

/// A connection to a running daemon's control socket.
public struct ControlClient {
    let fd: Int32

    /// Connects to the daemon of the pool in `directory`; nil when none is listening.
    public static func connect(directory: String, socketName: String = ControlServer.socketName) -> ControlClient? {
        let path = directory + "/" + socketName
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            return nil
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        // A full listen queue (EAGAIN on a Unix socket) means a busy daemon, not an absent one:
        // retry for up to five seconds. Only "nobody listens" falls back to opening the pool.
        for _ in 0..<500 {
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if result == 0 { return ControlClient(fd: fd) }
            guard errno == EAGAIN || errno == EINTR else { break }
            usleep(10_000)
        }
        // A stale socket from a daemon that died: no one is listening.
        close(fd)
        return nil
    }

    /// Sends `request` and returns its result, passing progress lines to `progress`.
    public func send(_ request: ControlRequest, progress: (UInt64, UInt64) -> Void) throws(StrataError) -> ControlResult {
        defer { close(self.fd) }
        guard var data = try? JSONEncoder().encode(request) else {
            throw StrataError(.invalidArgument, "control: cannot encode the request")
        }
        data.append(UInt8(ascii: "\n"))
        let sent = data.withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == data.count else { throw StrataError(.io, "control: the daemon closed the socket") }
        return try self.readReply(ControlMessage.self) { message throws(StrataError) in
            if let pair = message.progress, pair.count == 2 { progress(pair[0], pair[1]) }
            if let error = message.error { throw error.strataError }
            return message.result
        }
    }

    /// Reads reply lines of type `M` until `handle` returns a value.
    func readReply<M: Decodable, R>(_ type: M.Type, _ handle: (M) throws(StrataError) -> R?) throws(StrataError) -> R {
        var pending = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Data(pending[..<newline])
                pending.removeSubrange(...newline)
                guard let message = try? JSONDecoder().decode(M.self, from: line) else {
                    throw StrataError(.io, "control: unreadable reply from the daemon")
                }
                if let result = try handle(message) { return result }
                continue
            }
            let count = recv(self.fd, &chunk, chunk.count, 0)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw StrataError(.io, "control: the daemon closed the connection before answering")
            }
            pending.append(contentsOf: chunk[0..<count])
        }
    }
}
