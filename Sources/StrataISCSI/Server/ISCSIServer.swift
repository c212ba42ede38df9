// The iSCSI listener of `strata serve` (default 127.0.0.1:3260): every volume is a target
// `iqn.2026-11.org.strata:VOLUME` with LUN 0, every snapshot a read-only target
// `iqn.2026-11.org.strata:VOLUME:SNAPSHOT`. Connections share the pool with the NBD server, so
// both see the same data at the same time.

import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd

public final class ISCSIServer: Sendable {
    let channel: any Channel
    public let target: ISCSITarget

    private init(channel: any Channel, target: ISCSITarget) {
        self.channel = channel
        self.target = target
    }

    /// Binds and starts accepting.
    /// - Throws: the bind error (address in use, permission).
    public static func start(
        host: String, port: Int, pool: Pool, directory: String?, group: any EventLoopGroup, threadPool: NIOThreadPool,
        registry: ConnectionRegistry, logger: Logger
    ) throws -> ISCSIServer {
        let target = ISCSITarget(pool: pool, directory: directory, threadPool: threadPool, registry: registry, logger: logger)
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
                    try channel.pipeline.syncOperations.addHandler(ISCSIConnectionHandler(target: target))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        return ISCSIServer(channel: channel, target: target)
    }

    /// The address it listens on (the port, when 0 was asked for).
    public var localAddress: SocketAddress? { self.channel.localAddress }

    /// Stops accepting, lets every session finish the commands it has running, and waits for
    /// the connections to close. Blocks: call it from a thread that is not an event loop.
    public func shutdownAndWait() {
        try? self.channel.close().wait()
        let connections = self.target.registry.all.filter { $0.protocolName == "iscsi" }
        for entry in connections {
            entry.channel.pipeline.fireUserInboundEventTriggered(DrainEvent())
        }
        for entry in connections {
            try? entry.channel.closeFuture.wait()
        }
    }
}
