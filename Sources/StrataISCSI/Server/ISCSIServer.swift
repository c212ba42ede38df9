// The iSCSI listeners of `strata serve` (default 127.0.0.1:3260): every volume is a target
// `iqn.2026-11.org.strata:VOLUME` with LUN 0, every snapshot a read-only target
// `iqn.2026-11.org.strata:VOLUME:SNAPSHOT`. Connections share the pool with the NBD server, so
// both see the same data at the same time.
//
// `--iscsi` given more than once opens one portal per address, all in portal group 1 and all
// in front of one `ISCSITarget`: a session through either portal reaches the same logical
// units (their reservations, unit attentions and mode state), which is what a multipath
// initiator needs to see one LUN down two paths.

import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd

public final class ISCSIServer: Sendable {
    let listeners: [Listener]
    public let target: ISCSITarget

    private init(listeners: [Listener], target: ISCSITarget) {
        self.listeners = listeners
        self.target = target
    }

    /// A portal that could not be bound, and why.
    public struct BindError: Error {
        public let host: String
        public let port: Int
        public let underlying: any Error
    }

    /// Binds every portal and starts accepting; when one cannot be bound, closes the ones
    /// already bound.
    /// - Parameters:
    ///   - settings: what every logical unit reports (the physical block size).
    /// - Precondition: `portals` is not empty.
    /// - Throws: `BindError` naming the portal (address in use, permission).
    public static func start(
        portals: [(host: String, port: Int)], pool: Pool, directory: String?, group: any EventLoopGroup,
        workers: any EngineWorkers, registry: ConnectionRegistry, logger: Logger, foreign: (any ForeignExports)? = nil,
        settings: UnitSettings = UnitSettings()
    ) throws(BindError) -> ISCSIServer {
        precondition(!portals.isEmpty, "an iSCSI server needs at least one portal")
        let target = ISCSITarget(
            pool: pool, directory: directory, workers: workers, registry: registry, logger: logger, foreign: foreign,
            settings: settings)
        var listeners: [Listener] = []
        for portal in portals {
            do {
                listeners.append(
                    try Listener.bind(
                        host: portal.host, port: portal.port, group: group, registry: registry, protocolName: "iscsi"
                    ) { ISCSIConnectionHandler(target: target) })
            } catch {
                for listener in listeners { listener.stopAccepting() }
                throw BindError(host: portal.host, port: portal.port, underlying: error)
            }
        }
        return ISCSIServer(listeners: listeners, target: target)
    }

    /// The addresses it listens on, one per portal (the port, when 0 was asked for).
    public var localAddresses: [SocketAddress] { self.listeners.compactMap(\.localAddress) }

    /// Stops accepting on every portal, lets every session finish the commands it has running,
    /// and waits for the connections to close. Blocks: call it from a thread that is not an
    /// event loop.
    public func shutdownAndWait() {
        for listener in self.listeners { listener.stopAccepting() }
        self.listeners.first?.shutdownAndWait()
    }
}
