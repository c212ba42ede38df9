// The NBD listener: a SwiftNIO server bootstrap whose child channels each get an
// `NBDConnectionHandler`. Auto-read is off: each handler asks for bytes only when it can take
// them (backpressure).

import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd

/// A listening NBD server.
public final class NBDServer: Sendable {
    public let channel: any Channel
    public let registry: ConnectionRegistry

    private init(channel: any Channel, registry: ConnectionRegistry) {
        self.channel = channel
        self.registry = registry
    }

    /// Binds and starts accepting.
    /// - Throws: the bind error (address in use, permission).
    public static func start(
        host: String, port: Int, pool: Pool, group: any EventLoopGroup, threadPool: NIOThreadPool,
        registry: ConnectionRegistry, logger: Logger
    ) throws -> NBDServer {
        let catalog = PoolCatalog(pool: pool)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // Large writes arrive in large reads (up to 1 MiB), not 64 KiB at a time.
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20))
            // Room for a few 1 MiB read replies before the connection stops reading; together
            // with the in-flight limits this bounds what one client can make the daemon hold.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 4 << 20, high: 16 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NBDConnectionHandler(
                            pool: pool, catalog: catalog, threadPool: threadPool, registry: registry, logger: logger))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        return NBDServer(channel: channel, registry: registry)
    }

    /// Stops accepting, lets every connection finish what is in flight, and waits for them to close.
    /// Blocks: call it from a thread that is not an event loop.
    public func shutdownAndWait() {
        try? self.channel.close().wait()
        let connections = self.registry.all.filter { $0.protocolName == "nbd" }
        for entry in connections {
            entry.channel.pipeline.fireUserInboundEventTriggered(DrainEvent())
        }
        for entry in connections {
            try? entry.channel.closeFuture.wait()
        }
    }
}
