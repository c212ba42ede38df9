// The CLI side of the daemon's sockets: plain blocking POSIX I/O (the CLI is synchronous). A
// request goes to control.sock, or, when it carries a stream, to stream.sock with the stream's
// descriptor attached; either way it is one `JSONLines` request answered by progress lines and
// one result or error line.

import CStrata
import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

/// A connection to a running daemon's control or stream socket.
public struct ControlClient {
    let fd: Int32

    /// Connects to the daemon of the pool in `directory`: to stream.sock when `request` carries
    /// a stream, else to control.sock. Nil when no daemon listens.
    public static func connect(directory: String, for request: ControlRequest) -> ControlClient? {
        guard request.needsDescriptor else {
            return UnixSocketAddress.connect(directory + "/" + ControlServer.socketName).map(ControlClient.init)
        }
        // A daemon that is starting opens its control socket a moment before its stream socket,
        // so while the control socket answers, the stream socket is waited for (up to five seconds).
        for attempt in 0..<50 {
            if let fd = UnixSocketAddress.connect(directory + "/" + StreamServer.socketName) {
                return ControlClient(fd: fd)
            }
            if attempt == 0 {
                guard let control = UnixSocketAddress.connect(directory + "/" + ControlServer.socketName) else {
                    return nil
                }
                close(control)
            }
            usleep(100_000)
        }
        return nil
    }

    /// Sends `request` and returns its result, passing progress lines to `progress`.
    /// - Parameter stream: the descriptor of a `send` or `receive` stream, attached to the
    ///   request; -1 for every other request.
    /// - Throws: the daemon's error, or `.io` when the daemon goes away without answering.
    public func send(_ request: ControlRequest, stream: Int32 = -1, progress: (UInt64, UInt64) -> Void)
        throws(StrataError) -> ControlResult
    {
        defer { close(self.fd) }
        let line = try JSONLines.encode(request, what: "the request")
        let sent = line.withUnsafeBytes { raw in
            stream >= 0
                ? strata_send_with_fd(self.fd, raw.baseAddress, raw.count, stream)
                : Glibc.send(self.fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL))
        }
        guard sent == line.count else { throw StrataError(.io, "control: the daemon closed the socket") }
        var pending = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            while let line = JSONLines.takeLine(from: &pending) {
                let message = try JSONLines.decode(
                    ControlMessage.self, from: line, error: StrataError(.io, "control: unreadable reply from the daemon"))
                if let pair = message.progress, pair.count == 2 { progress(pair[0], pair[1]) }
                if let error = message.error { throw error.strataError }
                if let result = message.result { return result }
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
