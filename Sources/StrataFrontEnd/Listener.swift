// A front end's listening socket: the socket options NBD and iSCSI share, and the drain at
// shutdown (stop accepting, let each connection finish what is in flight, wait for it to close).

import NIOCore
import NIOPosix

/// A bound listening socket of one front end.
public final class Listener: Sendable {
    let channel: any Channel
    let registry: ConnectionRegistry
    let protocolName: String

    /// Binds `host:port`; each accepted connection gets the handler `makeHandler` returns. The
    /// connections read only when their handler asks (autoRead off), read up to 1 MiB at a time
    /// (large writes arrive whole), and hold a few large replies before the socket counts as not
    /// writable; with each handler's in-flight limits this bounds what one client can make the
    /// daemon hold.
    /// - Throws: the bind error (address in use, permission).
    public static func bind(
        host: String, port: Int, group: any EventLoopGroup, registry: ConnectionRegistry, protocolName: String,
        makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) throws -> Listener {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20))
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 4 << 20, high: 16 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        return Listener(channel: channel, registry: registry, protocolName: protocolName)
    }

    private init(channel: any Channel, registry: ConnectionRegistry, protocolName: String) {
        self.channel = channel
        self.registry = registry
        self.protocolName = protocolName
    }

    /// The address it listens on (the port, when 0 was asked for).
    public var localAddress: SocketAddress? { self.channel.localAddress }

    /// Closes the listening socket; connections already accepted go on. A front end with
    /// several sockets closes all of them before it drains, so none accepts during the drain.
    /// Blocks: call it from a thread that is not an event loop.
    public func stopAccepting() {
        try? self.channel.close().wait()
    }

    /// Stops accepting, sends every connection of this front end a `DrainEvent`, and waits for
    /// them to close. Blocks: call it from a thread that is not an event loop.
    public func shutdownAndWait() {
        self.stopAccepting()
        let connections = self.registry.all.filter { $0.protocolName == self.protocolName }
        for entry in connections {
            entry.channel.pipeline.fireUserInboundEventTriggered(DrainEvent())
        }
        for entry in connections {
            try? entry.channel.closeFuture.wait()
        }
    }
}
