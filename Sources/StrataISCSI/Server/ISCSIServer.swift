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
    let listener: Listener
    public let target: ISCSITarget

    private init(listener: Listener, target: ISCSITarget) {
        self.listener = listener
        self.target = target
    }

    /// Binds and starts accepting.
    /// - Throws: the bind error (address in use, permission).
    public static func start(
        host: String, port: Int, pool: Pool, directory: String?, group: any EventLoopGroup, threadPool: NIOThreadPool,
        registry: ConnectionRegistry, logger: Logger, foreign: (any ForeignExports)? = nil
    ) throws -> ISCSIServer {
        let target = ISCSITarget(
            pool: pool, directory: directory, threadPool: threadPool, registry: registry, logger: logger, foreign: foreign)
        let listener = try Listener.bind(
            host: host, port: port, group: group, registry: registry, protocolName: "iscsi"
        ) { ISCSIConnectionHandler(target: target) }
        return ISCSIServer(listener: listener, target: target)
    }

    /// The address it listens on (the port, when 0 was asked for).
    public var localAddress: SocketAddress? { self.listener.localAddress }

    /// Stops accepting, lets every session finish the commands it has running, and waits for
    /// the connections to close. Blocks: call it from a thread that is not an event loop.
    public func shutdownAndWait() { self.listener.shutdownAndWait() }
}
