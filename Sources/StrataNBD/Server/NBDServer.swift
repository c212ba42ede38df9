// The NBD listener: a `Listener` (StrataFrontEnd) whose connections each get an
// `NBDConnectionHandler`, which asks for bytes only when it can take them (backpressure).

import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd

/// A listening NBD server.
public final class NBDServer: Sendable {
    let listener: Listener
    public let registry: ConnectionRegistry

    private init(listener: Listener, registry: ConnectionRegistry) {
        self.listener = listener
        self.registry = registry
    }

    /// The address it listens on.
    public var localAddress: SocketAddress? { self.listener.localAddress }

    /// Binds and starts accepting; with `tls`, clients may (or, under `require`, must) upgrade
    /// with STARTTLS.
    /// - Throws: the bind error (address in use, permission).
    public static func start(
        host: String, port: Int, pool: Pool, group: any EventLoopGroup, workers: any EngineWorkers,
        registry: ConnectionRegistry, tls: NBDTLS? = nil, logger: Logger, foreign: (any ForeignExports)? = nil
    ) throws -> NBDServer {
        let catalog = PoolCatalog(pool: pool, foreign: foreign)
        let listener = try Listener.bind(
            host: host, port: port, group: group, registry: registry, protocolName: "nbd"
        ) {
            NBDConnectionHandler(
                pool: pool, catalog: catalog, workers: workers, registry: registry, tls: tls, logger: logger)
        }
        return NBDServer(listener: listener, registry: registry)
    }

    /// Stops accepting, lets every connection finish what is in flight, and waits for them to close.
    /// Blocks: call it from a thread that is not an event loop.
    public func shutdownAndWait() { self.listener.shutdownAndWait() }
}
