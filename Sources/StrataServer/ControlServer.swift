// The control socket: a Unix socket in the pool directory (mode 0600) through which every
// `strata` command reaches a running daemon. One request per connection, one JSON object per
// line; requests run on the thread pool through `PoolService`. At shutdown
// (`shutdownAndWait`) it stops accepting, closes the connections that have not sent a request,
// and waits for every request in flight to answer, so none runs after the final commit.

import Foundation
import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd
import StrataNBD
import Synchronization

/// The daemon side of the control socket.
public final class ControlServer: Sendable {
    public static let socketName = "control.sock"
    /// Longest request line accepted.
    static let requestBytesMax = 64 << 10

    let channel: any Channel
    let connections: OpenChannels

    private init(channel: any Channel, connections: OpenChannels) {
        self.channel = channel
        self.connections = connections
    }

    public static func start(
        directory: String, service: PoolService, group: any EventLoopGroup, workers: any EngineWorkers, logger: Logger
    ) throws -> ControlServer {
        let path = directory + "/" + Self.socketName
        let connections = OpenChannels()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                connections.insert(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ControlConnectionHandler(service: service, workers: workers, logger: logger))
                }
            }
        let channel = try bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).wait()
        chmod(path, 0o600)
        return ControlServer(channel: channel, connections: connections)
    }

    /// Stops accepting, closes connections that have sent no request, and waits for the
    /// requests in flight to answer. Blocks: call it from a thread that is not an event loop.
    public func shutdownAndWait() {
        try? self.channel.close().wait()
        let open = self.connections.all
        for channel in open { channel.pipeline.fireUserInboundEventTriggered(DrainEvent()) }
        for channel in open { try? channel.closeFuture.wait() }
    }
}

/// The control connections open now.
final class OpenChannels: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func insert(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        self.channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in _ = self.channels.withLock { $0.removeValue(forKey: key) } }
    }

    var all: [any Channel] { self.channels.withLock { Array($0.values) } }
}

final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: state is touched on the channel's event loop only.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let service: PoolService
    let workers: any EngineWorkers
    let logger: Logger
    var buffer = ByteBuffer()
    var started = false

    init(service: PoolService, workers: any EngineWorkers, logger: Logger) {
        self.service = service
        self.workers = workers
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        self.buffer.writeBuffer(&bytes)
        guard !self.started else { return }
        guard let newline = self.buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if self.buffer.readableBytes > ControlServer.requestBytesMax { context.close(promise: nil) }
            return
        }
        self.started = true
        let line = self.buffer.readableBytesView.prefix(newline - self.buffer.readerIndex)
        let request: ControlRequest
        do throws(StrataError) {
            request = try JSONLines.decode(
                ControlRequest.self, from: line, error: StrataError(.invalidArgument, "control: malformed request"))
            guard !request.needsDescriptor else {
                throw StrataError(
                    .invalidArgument, "control: a stream request goes to \(StreamServer.socketName) with its descriptor")
            }
        } catch {
            Self.send(ControlMessage(error: ControlError(error)), on: context.channel)
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        let service = self.service
        let logger = self.logger
        self.workers.perform { active in
            guard active else {
                channel.close(promise: nil)
                return
            }
            let message: ControlMessage
            do throws(StrataError) {
                let progress = ProgressThrottle { done, total in Self.send(ControlMessage(progress: [done, total]), on: channel) }
                let result = try service.execute(request, progress: progress.report)
                message = ControlMessage(result: result)
            } catch {
                logger.debug("control request failed: \(error.message)")
                message = ControlMessage(error: ControlError(error))
            }
            Self.send(message, on: channel).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    @discardableResult
    static func send(_ message: ControlMessage, on channel: any Channel) -> EventLoopFuture<Void> {
        channel.writeAndFlush(ByteBuffer(bytes: JSONLines.encodeReply(message)))
    }

    /// At shutdown a connection that has not sent its request is closed; one whose request runs
    /// closes once it has answered.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent, !self.started { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
