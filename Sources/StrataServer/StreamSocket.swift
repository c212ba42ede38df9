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
// Each connection runs on a thread of its own that `run` starts and awaits (a stream can take
// hours, and must not hold a thread of the pool the NBD server uses for disk I/O); at most
// `streamsMax` run at once. At shutdown (`close`) the socket stops accepting and the streams in
// flight stop at their next read or write (within `pollMilliseconds` of an idle pipe) with an
// error reply; a receive keeps what it staged, so `strata send --resume` goes on from there.
// `run` returns once every stream has ended, so the pool is committed after the last one.

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
    /// How long a stream waits on an idle descriptor before checking for shutdown again.
    static let pollMilliseconds: Int32 = 200

    let listener: Int32
    let path: String
    let service: PoolService
    let logger: Logger
    let active = Mutex(0)
    let closed = Atomic<Bool>(false)

    private init(listener: Int32, path: String, service: PoolService, logger: Logger) {
        self.listener = listener
        self.path = path
        self.service = service
        self.logger = logger
    }

    /// Binds `stream.sock` in `directory`; `run` serves it.
    /// - Throws: `.io` when the socket cannot be bound.
    public static func bind(directory: String, service: PoolService, logger: Logger) throws(StrataError) -> StreamServer {
        let path = directory + "/" + Self.socketName
        let fd = try UnixSocketAddress.listen(path, backlog: 64)
        return StreamServer(listener: fd, path: path, service: service, logger: logger)
    }

    /// Accepts and serves streams until `close`; returns once every stream has ended.
    public func run() async {
        await withDiscardingTaskGroup { group in
            while let connection = await DedicatedThread.run(name: "strata-stream-accept", { self.acceptOne() }) {
                group.addTask {
                    await DedicatedThread.run(name: "strata-stream") {
                        self.serve(connection)
                        Glibc.close(connection)
                        self.active.withLock { $0 -= 1 }
                    }
                }
            }
        }
        Glibc.close(self.listener)
    }

    /// Stops accepting and stops the streams in flight at their next read or write. Does not block.
    public func close() {
        self.closed.store(true, ordering: .releasing)
        shutdown(self.listener, Int32(SHUT_RDWR))
        unlink(self.path)
    }

    var isClosed: Bool { self.closed.load(ordering: .acquiring) }

    /// The next admitted connection; nil once the socket is closed.
    private func acceptOne() -> Int32? {
        while !self.isClosed {
            let connection = Glibc.accept(self.listener, nil, nil)
            if connection < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return nil
            }
            let admitted = self.active.withLock { count in
                guard count < Limits.streamsMax else { return false }
                count += 1
                return true
            }
            if admitted { return connection }
            Self.reply(
                ControlMessage(error: ControlError(StrataError(.busy, "stream: \(Limits.streamsMax) streams are running; try again later"))),
                on: connection)
            Glibc.close(connection)
        }
        return nil
    }

    private func serve(_ connection: Int32) {
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
            let stream = StreamDescriptor(fd: descriptor, isCancelled: { self.isClosed })
            message = ControlMessage(result: try self.service.execute(decoded, stream: stream, progress: progress.report))
        } catch {
            self.logger.warning("stream request failed: \(error.message)")
            message = ControlMessage(error: ControlError(error))
        }
        Self.reply(message, on: connection)
    }

    static func reply(_ message: ControlMessage, on connection: Int32) {
        let line = JSONLines.encodeReply(message)
        _ = line.withUnsafeBytes { Glibc.send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
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
