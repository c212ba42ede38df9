// The stream socket: how `strata send` and `strata receive` reach a running daemon. The daemon
// holds the pool, so a stream must be produced or applied inside it; rather than push the
// stream's bytes through the JSON control socket, the CLI hands the daemon the descriptor of
// its input or output (a pipe, a file, a socket) with SCM_RIGHTS, and the daemon reads or writes
// it directly, as `zfs send` hands its descriptor to the kernel. The socket is
// `stream.sock` (mode 0600) in the pool directory; one request per connection: a JSON line
// (`StreamRequest`) with the descriptor attached, answered by progress lines and then one line
// holding the result or the error, exactly as on the control socket.
//
// Each connection runs on its own thread (a stream can take hours, and must not hold a thread
// of the pool the NBD server uses for disk I/O); at most `streamsMax` run at once.

import CStrata
import Foundation
import Logging
import StrataCore
import StrataReplication
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the stream socket can be asked.
public enum StreamRequest: Codable, Sendable, Equatable {
    /// Write the stream to the attached descriptor.
    case send(SendRequest)
    /// Read a stream from the attached descriptor into `volume`.
    case receive(volume: String, force: Bool)
    /// Discard the staging of an interrupted receive.
    case abort(volume: String)
    /// The resume token of an interrupted receive.
    case token(volume: String)
    /// Start (or replace) a replication job; the daemon only.
    case replicateStart(ReplicationJob)
    /// Stop a replication job; the daemon only.
    case replicateStop(volume: String)
    /// Every replication job's state; the daemon only.
    case replicateStatus
    /// Make a replica writable.
    case promote(volume: String)

    var needsDescriptor: Bool {
        switch self {
        case .send, .receive: return true
        default: return false
        }
    }
}

/// What a stream request produced.
public enum StreamResult: Codable, Sendable {
    case sent(SendSummary)
    case received(ReceiveSummary)
    case token(String)
    case replication([ReplicationStatus])
    case done
}

/// One reply line on the stream socket.
public struct StreamMessage: Codable, Sendable {
    public var progress: [UInt64]?
    public var result: StreamResult?
    public var error: ControlError?

    public init(progress: [UInt64]? = nil, result: StreamResult? = nil, error: ControlError? = nil) {
        self.progress = progress
        self.result = result
        self.error = error
    }
}

extension PoolService {
    /// Runs a stream request with `fd` as the stream (the daemon's and the local CLI's one path).
    public func stream(_ request: StreamRequest, fd: Int32, progress: (UInt64, UInt64) -> Void) throws(StrataError)
        -> StreamResult
    {
        switch request {
        case .send(let send):
            let output = FileDescriptorStream(fd: fd, name: "the send output")
            return .sent(try StreamSender.send(pool: self.pool, send, to: output, progress: progress))
        case .receive(let volume, let force):
            let input = FileDescriptorStream(fd: fd, name: "the receive input")
            return .received(
                try StreamReceiver.receive(pool: self.pool, volume: volume, force: force, from: input, progress: progress))
        case .abort(let volume):
            try self.pool.abortReceive(volume)
            try self.pool.flush()
            return .done
        case .token(let volume):
            return .token(try StreamReceiver.token(pool: self.pool, volume: volume))
        case .promote(let volume):
            try self.pool.setReplica(volume, false)
            try self.pool.flush()
            return .done
        case .replicateStart, .replicateStop, .replicateStatus:
            throw StrataError(
                .notFound, "replicate: no daemon runs on this pool; replication jobs run in `strata serve`")
        }
    }
}

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
        directory: String, service: PoolService, replicator: Replicator, logger: Logger
    ) throws(StrataError) -> StreamServer {
        let path = directory + "/" + Self.socketName
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, let address = UnixAddress(path) else {
            throw StrataError(.io, "serve: cannot create the stream socket \(path)")
        }
        let bound = address.withSockaddr { bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 64) == 0 else {
            Glibc.close(fd)
            throw StrataError(.io, "serve: cannot listen on \(path) (\(String(cString: strerror(errno))))")
        }
        chmod(path, 0o600)
        let server = StreamServer(listener: fd, path: path)
        let thread = Thread { server.acceptLoop(service: service, replicator: replicator, logger: logger) }
        thread.name = "strata-stream-accept"
        thread.start()
        return server
    }

    private func acceptLoop(service: PoolService, replicator: Replicator, logger: Logger) {
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
                    StreamMessage(error: ControlError(StrataError(.busy, "stream: \(Limits.streamsMax) streams are running; try again later"))),
                    on: connection)
                Glibc.close(connection)
                continue
            }
            let thread = Thread {
                Self.serve(connection, service: service, replicator: replicator, logger: logger)
                Glibc.close(connection)
                self.active.withLock { $0 -= 1 }
            }
            thread.name = "strata-stream"
            thread.start()
        }
    }

    private static func serve(_ connection: Int32, service: PoolService, replicator: Replicator, logger: Logger) {
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
        guard let newline = line.firstIndex(of: UInt8(ascii: "\n")),
            let request = try? JSONDecoder().decode(StreamRequest.self, from: Data(line[..<newline]))
        else {
            Self.reply(StreamMessage(error: ControlError(StrataError(.invalidArgument, "stream: malformed request"))), on: connection)
            return
        }
        if request.needsDescriptor && descriptor < 0 {
            Self.reply(StreamMessage(error: ControlError(StrataError(.invalidArgument, "stream: no descriptor attached"))), on: connection)
            return
        }
        let message: StreamMessage
        do throws(StrataError) {
            let progress = ProgressThrottle { done, total in Self.reply(StreamMessage(progress: [done, total]), on: connection) }
            let result = try Self.execute(
                request, service: service, replicator: replicator, fd: descriptor, progress: progress.report)
            message = StreamMessage(result: result)
        } catch {
            logger.warning("stream request failed: \(error.message)")
            message = StreamMessage(error: ControlError(error))
        }
        Self.reply(message, on: connection)
    }

    /// Replication jobs live in the daemon; everything else is `PoolService.stream`.
    private static func execute(
        _ request: StreamRequest, service: PoolService, replicator: Replicator, fd: Int32,
        progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) -> StreamResult {
        switch request {
        case .replicateStart(let job):
            try replicator.start(job)
            return .done
        case .replicateStop(let volume):
            replicator.stop(volume)
            return .done
        case .replicateStatus:
            return .replication(replicator.status())
        default:
            return try service.stream(request, fd: fd, progress: progress)
        }
    }

    static func reply(_ message: StreamMessage, on connection: Int32) {
        var data = (try? JSONEncoder().encode(message)) ?? Data("{}".utf8)
        data.append(UInt8(ascii: "\n"))
        _ = data.withUnsafeBytes { Glibc.send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Stops accepting; streams in progress run to their end.
    public func close() {
        shutdown(self.listener, Int32(SHUT_RDWR))
        Glibc.close(self.listener)
        unlink(self.path)
    }
}

/// The CLI side: sends a stream request to the daemon with the descriptor attached.
public enum StreamClient {
    /// Runs `request` on the daemon of `directory`; nil when no daemon listens.
    public static func run(
        directory: String, _ request: StreamRequest, fd: Int32, progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) -> StreamResult? {
        guard let client = Self.connect(directory: directory) else { return nil }
        defer { close(client.fd) }
        guard var data = try? JSONEncoder().encode(request) else {
            throw StrataError(.invalidArgument, "stream: cannot encode the request")
        }
        data.append(UInt8(ascii: "\n"))
        let sent = data.withUnsafeBytes { raw in
            fd >= 0
                ? strata_send_with_fd(client.fd, raw.baseAddress, raw.count, fd)
                : Glibc.send(client.fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL))
        }
        guard sent == data.count else { throw StrataError(.io, "stream: the daemon closed the socket") }
        let result: StreamResult = try client.readReply(StreamMessage.self) { message throws(StrataError) -> StreamResult? in
            if let pair = message.progress, pair.count == 2 { progress(pair[0], pair[1]) }
            if let error = message.error { throw error.strataError }
            return message.result
        }
        return result
    }
}

extension StreamClient {
    /// Connects to the stream socket; nil when no daemon runs. A daemon that is starting opens
    /// its control socket a moment before its stream socket, so while the control socket
    /// answers, the stream socket is waited for (up to five seconds).
    static func connect(directory: String) -> ControlClient? {
        for attempt in 0..<50 {
            if let client = ControlClient.connect(directory: directory, socketName: StreamServer.socketName) {
                return client
            }
            if attempt == 0 {
                guard let control = ControlClient.connect(directory: directory) else { return nil }
                close(control.fd)
            }
            usleep(100_000)
        }
        return nil
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

/// A `sockaddr_un` for a path.
struct UnixAddress {
    var address = sockaddr_un()

    init?(_ path: String) {
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: self.address.sun_path) else { return nil }
        self.address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &self.address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: self.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}
