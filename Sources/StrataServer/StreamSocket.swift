// The stream socket: how `strata send` and `strata receive` reach a running daemon. The daemon
// holds the pool, so a stream must be produced or applied inside it; rather than push the
// stream's bytes through the JSON control socket, the CLI hands the daemon the descriptor of
// its input or output (a pipe, a file, a socket) with SCM_RIGHTS, and the daemon reads or writes
// it directly, as `zfs send` hands its descriptor to the kernel. The socket is
// `stream.sock` (mode 0600) in the pool directory; one request per connection: a
// `ControlRequest` (`send` or `receive`, nothing else) as a JSON line with the descriptor
// attached, answered by progress lines and then one line holding the result or the error,
// exactly as on the control socket and with the same codec (`JSONLines`).
//
// Each connection runs on its own thread (a stream can take hours, and must not hold a thread
// of the pool the NBD server uses for disk I/O); at most `streamsMax` run at once.

import CStrata
import Foundation
import Logging
import StrataCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The daemon side of the stream socket.
public final class StreamServer: Sendable {
    public static let socketName = "stream.sock"

    let listener: Int32
    let path: String
    let active = Mutex(0)

    private init(listener: Int32, path: String) {
        self.listener = listener
        self.path = path
    }

    /// Binds `stream.sock` in `directory` and starts accepting.
    public static func start(
        directory: String, service: PoolService, logger: Logger
    ) throws(StrataError) -> StreamServer {
        let path = directory + "/" + Self.socketName
        let fd = try UnixSocketAddress.listen(path, backlog: 64)
        let server = StreamServer(listener: fd, path: path)
        let thread = Thread { server.acceptLoop(service: service, logger: logger) }
        thread.name = "strata-stream-accept"
        thread.start()
        return server
    }

    private func acceptLoop(service: PoolService, logger: Logger) {
        while true {
            let connection = Glibc.accept(self.listener, nil, nil)
            if connection < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // closed by `close()`
            }
            let admitted = self.active.withLock { count in
                guard count < Limits.streamsMax else { return false }
                count += 1
                return true
            }
            guard admitted else {
                Self.reply(
                    ControlMessage(error: ControlError(StrataError(.busy, "stream: \(Limits.streamsMax) streams are running; try again later"))),
                    on: connection)
                Glibc.close(connection)
                continue
            }
            let thread = Thread {
                Self.serve(connection, service: service, logger: logger)
                Glibc.close(connection)
                self.active.withLock { $0 -= 1 }
            }
            thread.name = "strata-stream"
            thread.start()
        }
    }

    private static func serve(_ connection: Int32, service: PoolService, logger: Logger) {
        var line: [UInt8] = []
        var descriptor: Int32 = -1
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !line.contains(UInt8(ascii: "\n")), line.count < Limits.streamRequestBytesMax {
            var received: Int32 = -1
            let count = buffer.withUnsafeMutableBytes { strata_receive_with_fd(connection, $0.baseAddress, $0.count, &received) }
            if received >= 0 {
                if descriptor >= 0 { Glibc.close(descriptor) }
                descriptor = received
            }
            guard count > 0 else { break }
            line.append(contentsOf: buffer[0..<count])
        }
        defer { if descriptor >= 0 { Glibc.close(descriptor) } }
        let message: ControlMessage
        do throws(StrataError) {
            let malformed = StrataError(.invalidArgument, "stream: malformed request")
            guard let request = JSONLines.takeLine(from: &line) else { throw malformed }
            let decoded = try JSONLines.decode(ControlRequest.self, from: request, error: malformed)
            guard decoded.needsDescriptor else {
                throw StrataError(
                    .invalidArgument, "stream: \(Self.socketName) takes send and receive only; other requests go to \(ControlServer.socketName)")
            }
            let progress = ProgressThrottle { done, total in Self.reply(ControlMessage(progress: [done, total]), on: connection) }
            message = ControlMessage(result: try service.execute(decoded, stream: descriptor, progress: progress.report))
        } catch {
            logger.warning("stream request failed: \(error.message)")
            message = ControlMessage(error: ControlError(error))
        }
        Self.reply(message, on: connection)
    }

    static func reply(_ message: ControlMessage, on connection: Int32) {
        let line = JSONLines.encodeReply(message)
        _ = line.withUnsafeBytes { Glibc.send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Stops accepting; streams in progress run to their end.
    public func close() {
        shutdown(self.listener, Int32(SHUT_RDWR))
        Glibc.close(self.listener)
        unlink(self.path)
    }
}

/// Passes on progress at most ten times a second, and always the last report (done == total).
final class ProgressThrottle {
    private let forward: (UInt64, UInt64) -> Void
    private var last = 0.0

    init(_ forward: @escaping (UInt64, UInt64) -> Void) { self.forward = forward }

    func report(_ done: UInt64, _ total: UInt64) {
        let now = Date().timeIntervalSince1970
        guard now - self.last > 0.1 || done == total else { return }
        self.last = now
        self.forward(done, total)
    }
}
