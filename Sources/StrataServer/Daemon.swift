// `strata serve`: opens (or creates) the pool, commits on a timer, serves NBD, answers the
// control socket, and on SIGINT or SIGTERM shuts down gracefully: stop accepting, let every
// connection finish what is in flight, commit, exit 0. Nothing acknowledged is lost.

import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd
import StrataISCSI
import StrataNBD
import StrataReplication

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's settings.
public struct DaemonOptions: Sendable {
    public var directory: String
    public var nbdHost: String
    public var nbdPort: Int
    /// The iSCSI portal, or nil when iSCSI is off.
    public var iscsi: (host: String, port: Int)?
    public var createSize: UInt64
    public var commitIntervalSeconds: Double
    /// Where to accept replication from peers (`--replication`), and the shared secret's file.
    public var replication: (host: String, port: Int)? = nil
    public var replicationSecretFile: String? = nil
    /// An image file to serve a volume over (`--overlay`), created on first use, and its name.
    public var overlay: String? = nil
    public var overlayName: String? = nil

    public init(
        directory: String, nbdHost: String, nbdPort: Int, iscsi: (host: String, port: Int)?, createSize: UInt64,
        commitIntervalSeconds: Double
    ) {
        self.directory = directory
        self.nbdHost = nbdHost
        self.nbdPort = nbdPort
        self.iscsi = iscsi
        self.createSize = createSize
        self.commitIntervalSeconds = commitIntervalSeconds
    }
}

public enum Daemon {
    /// Runs until SIGINT or SIGTERM. Returns after a clean shutdown.
    /// - Throws: `StrataError` when the pool cannot be opened, or the bind error.
    public static func run(_ options: DaemonOptions, logger: Logger) throws {
        signal(SIGPIPE, SIG_IGN)
        Self.raiseFileLimit()
        let directory = options.directory
        if !FileManager.default.fileExists(atPath: directory + "/" + Pool.fileName) {
            try Pool.create(directory: directory, size: options.createSize)
            logger.notice("created pool \(directory) (\(SizeParser.format(options.createSize)), sparse)")
        }
        let pool = try Pool.openServing(directory: directory)
        try pool.collectBases()
        var overlayVolume: String?
        if let file = options.overlay {
            do throws(StrataError) {
                let (name, created) = try Overlay.ensure(pool: pool, file: file, name: options.overlayName)
                logger.notice("\(created ? "created" : "reusing") volume \(name) over \(file)")
                overlayVolume = name
            } catch {
                _ = Result { () throws(StrataError) in try pool.close() }
                throw error
            }
        }
        pool.startCommitTimer(interval: options.commitIntervalSeconds)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(System.coreCount, 2))
        let threadPool = NIOThreadPool(numberOfThreads: 16)
        threadPool.start()
        let registry = ConnectionRegistry()
        let replicator = Replicator(pool: pool, directory: directory, logger: logger)
        let service = PoolService(pool: pool, registry: registry, replicator: replicator)

        let nbd: NBDServer
        var iscsi: ISCSIServer?
        let control: ControlServer
        do {
            nbd = try NBDServer.start(
                host: options.nbdHost, port: options.nbdPort, pool: pool, group: group, threadPool: threadPool,
                registry: registry, logger: logger)
            if let portal = options.iscsi {
                do {
                    iscsi = try ISCSIServer.start(
                        host: portal.host, port: portal.port, pool: pool, directory: directory, group: group,
                        threadPool: threadPool, registry: registry, logger: logger)
                } catch {
                    nbd.shutdownAndWait()
                    throw StrataError(
                        .io,
                        "serve: cannot listen for iSCSI on \(portal.host):\(portal.port) (\(error)); is another target using it? Choose another with --iscsi ADDR:PORT, or --iscsi off"
                    )
                }
            }
            control = try ControlServer.start(
                directory: directory, service: service, group: group, threadPool: threadPool, logger: logger)
        } catch {
            _ = Result { () throws(StrataError) in try pool.close() }
            try? threadPool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            if let error = error as? StrataError { throw error }
            throw StrataError(.io, "serve: cannot listen on \(options.nbdHost):\(options.nbdPort) (\(error)); is another server using it?")
        }
        let iscsiNote = options.iscsi.map { "iSCSI on \($0.host):\($0.port)" } ?? "iSCSI off"
        logger.notice(
            "serving pool \(directory): NBD on \(options.nbdHost):\(options.nbdPort), \(iscsiNote), control socket \(directory)/\(ControlServer.socketName)"
        )

        if let overlayVolume {
            // The URIs go to stdout, for people and scripts; everything else is logged.
            var lines = ["nbd://\(options.nbdHost):\(options.nbdPort)/\(overlayVolume)"]
            if let portal = options.iscsi {
                lines.append("iscsi://\(portal.host):\(portal.port)/\(TargetNames.targetName(for: overlayVolume))/0")
            }
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        let flattens = FlattenResumer.start(pool: pool, logger: logger)
        let replication = try DaemonReplication.start(options, replicator: replicator, pool: pool, service: service, logger: logger)
        // Wait for SIGINT or SIGTERM.
        let stop = DispatchSemaphore(value: 0)
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        logger.notice("shutting down: finishing requests in flight")
        control.close()
        flattens.stop()
        replication.close()
        nbd.shutdownAndWait()
        iscsi?.shutdownAndWait()
        var exitError: StrataError?
        do throws(StrataError) {
            try pool.close()
        } catch {
            exitError = error
        }
        unlink(directory + "/" + ControlServer.socketName)
        try? threadPool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
        withExtendedLifetime(sources) {}
        if let exitError { throw exitError }
        logger.notice("stopped; pool \(directory) committed at generation \(pool.committedGeneration)")
    }

    /// Lets the daemon hold as many connections as the hard limit allows.
    private static func raiseFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }
}
