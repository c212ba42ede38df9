// `strata serve`: opens (or creates) the pool, binds every socket, then runs the daemon's
// services as one `ServiceGroup` (Daemon+Services.swift): the commit timer, NBD, iSCSI, the
// replicator, the replica listener, the stream socket, the flatten resumer and the control
// socket. On SIGINT or SIGTERM the group shuts down gracefully: stop accepting, let every
// connection finish what is in flight, commit, exit 0. Nothing acknowledged is lost.

import CStrata
import Foundation
import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd
import StrataHTTP
import StrataISCSI
import StrataMirror
import StrataNBD
import ServiceLifecycle
import StrataReplication
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's settings.
public struct DaemonOptions: Sendable {
    public var directory: String
    public var nbdHost: String
    public var nbdPort: Int
    /// The iSCSI portals (`--iscsi`, once per portal); none when iSCSI is off.
    public var iscsi: [(host: String, port: Int)]
    public var createSize: UInt64
    public var commitIntervalSeconds: Double
    /// Where to accept replication from peers (`--replication`), and the shared secret's file.
    public var replication: (host: String, port: Int)? = nil
    public var replicationSecretFile: String? = nil
    /// An image file to serve a volume over (`--overlay`), created on first use, and its name.
    public var overlay: String? = nil
    public var overlayName: String? = nil
    /// TLS for NBD (`--tls`, `--tls-certificates`, `--tls-verify-peer`, `--tls-psk`).
    public var nbdTLS = NBDTLSSettings()
    /// Whether replication and mirror traffic (accepted and made) use mutual TLS with the
    /// `--tls-certificates` credentials (`--replication-tls`); it does only when those are given.
    public var replicationTLS = true
    /// The HTTP service (metrics, API, dashboard), or nil when off. `strata serve` turns it on at
    /// 127.0.0.1:10811 unless told `--http off`; a daemon made in a test listens only if asked.
    public var http: HTTPServerOptions? = nil
    /// Whether the front ends count their requests for /metrics (`--metrics on|off`).
    public var metrics: Bool = true
    /// What every iSCSI logical unit reports (`--iscsi-physical-block-size`).
    public var iscsiUnits = UnitSettings()

    public init(
        directory: String, nbdHost: String, nbdPort: Int, iscsi: [(host: String, port: Int)], createSize: UInt64,
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

extension DaemonOptions {
    /// The credentials directory replication and mirror traffic use; nil for plain TCP.
    var transportTLSDirectory: String? {
        self.replicationTLS ? self.nbdTLS.certificatesDirectory : nil
    }
}

public enum Daemon {
    /// Runs until SIGINT or SIGTERM. Returns after a clean shutdown.
    /// - Throws: `StrataError` when the pool cannot be opened or a socket cannot be bound, or
    ///   the error that stopped a service (a failed last commit).
    public static func run(_ options: DaemonOptions, logger: Logger) async throws {
        signal(SIGPIPE, SIG_IGN)
        Self.raiseFileLimit()
        Self.keepRequestBuffers()
        // Credentials are checked before anything is opened: a bad file stops the start with
        // nothing to undo.
        let tls = try NBDTLS.load(options.nbdTLS)
        let transportTLS = try options.transportTLSDirectory.map { directory throws(StrataError) in
            try TransportTLS.load(directory: directory)
        }
        let directory = options.directory
        if !FileManager.default.fileExists(atPath: directory + "/" + Pool.fileName) {
            try Pool.create(directory: directory, size: options.createSize)
            logger.notice("created pool \(directory) (\(SizeParser.format(options.createSize)), sparse)")
        }
        let pool = try Pool.openServing(directory: directory)
        // Before any front end opens a handle: handles take their counters when opened.
        pool.statistics.setEnabled(options.metrics)
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
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(System.coreCount, 2))
        let threadPool = NIOThreadPool(numberOfThreads: 16)
        threadPool.start()
        let services: DaemonServices
        do {
            services = try await Self.bind(
                options, tls: tls, transportTLS: transportTLS, pool: pool, group: group, threadPool: threadPool,
                logger: logger)
        } catch {
            _ = Result { () throws(StrataError) in try pool.close() }
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
        let iscsiNote =
            options.iscsi.isEmpty
            ? "iSCSI off" : "iSCSI on " + options.iscsi.map { "\($0.host):\($0.port)" }.joined(separator: " and ")
        let tlsNote = options.nbdTLS.mode == .off ? "" : " (TLS \(options.nbdTLS.mode.rawValue))"
        let httpNote = services.httpURL.map { "dashboard and metrics on \($0)" } ?? "HTTP off"
        logger.notice(
            "serving pool \(directory): NBD on \(options.nbdHost):\(options.nbdPort)\(tlsNote), \(iscsiNote), \(httpNote), control socket \(directory)/\(ControlServer.socketName)"
        )
        if let overlayVolume {
            // The URIs go to stdout, for people and scripts; everything else is logged.
            var lines = ["nbd://\(options.nbdHost):\(options.nbdPort)/\(overlayVolume)"]
            if let portal = options.iscsi.first {
                lines.append("iscsi://\(portal.host):\(portal.port)/\(TargetNames.targetName(for: overlayVolume))/0")
            }
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        // Every socket is bound and the pool is open: tell systemd (Type=notify) it may go on.
        if let problem = SystemdNotify.send("READY=1\nSTATUS=serving \(directory)") { logger.warning("\(problem)") }

        let serviceGroup = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.startOrder, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        var exitError: (any Error)?
        do {
            try await serviceGroup.run()
        } catch {
            exitError = error
        }
        do throws(StrataError) {
            try pool.close()
        } catch {
            exitError = exitError ?? error
        }
        unlink(directory + "/" + ControlServer.socketName)
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
        if let exitError { throw exitError }
        logger.notice("stopped; pool \(directory) committed at generation \(pool.committedGeneration)")
    }

    /// Binds every socket and makes the services; on failure closes what it bound and throws
    /// the error naming the address and the fix. `tls` is `options.nbdTLS` loaded, `transportTLS`
    /// the replication credentials.
    static func bind(
        _ options: DaemonOptions, tls: NBDTLS?, transportTLS: TransportTLS? = nil, pool: Pool, group: any EventLoopGroup,
        threadPool: NIOThreadPool, logger: Logger
    ) async throws -> DaemonServices {
        var undo: [() -> Void] = []
        do {
            let registry = ConnectionRegistry()
            let transport = NIOTransport(group: group, tls: transportTLS)
            let replicator = Replicator(
                pool: pool, directory: options.directory, transport: transport, workers: threadPool, logger: logger)
            replicator.resumeSavedJobs()
            undo.append { replicator.close() }
            // Mirrors open (and recover) their legs before any front end accepts a write; remote
            // legs reconnect through `links` once the services run.
            let links = MirrorLinks(transport: transport)
            undo.append { links.close() }
            let mirrors = try MirrorCoordinator.open(pool: pool, directory: options.directory, links: links) { message in
                logger.notice("\(message)")
            }
            undo.append { mirrors.shutdown() }
            let hydrator = Hydrator(pool: pool, logger: logger)
            let service = PoolService(
                pool: pool, registry: registry, replicator: replicator, mirrors: mirrors, hydrator: hydrator)
            let nbd = try Self.listening("NBD", on: (options.nbdHost, options.nbdPort), option: "--nbd ADDR:PORT") {
                try NBDServer.start(
                    host: options.nbdHost, port: options.nbdPort, pool: pool, group: group, workers: threadPool,
                    registry: registry, tls: tls, logger: logger, foreign: mirrors)
            }
            undo.append { nbd.shutdownAndWait() }
            let iscsi = try Self.iscsiServer(
                options, pool: pool, group: group, workers: threadPool, registry: registry, logger: logger, foreign: mirrors)
            undo.append { iscsi?.shutdownAndWait() }
            let control = try ControlServer.start(
                directory: options.directory, service: service, group: group, workers: threadPool, logger: logger)
            undo.append { control.shutdownAndWait() }
            let replicas: ReplicationServer?
            if let address = options.replication {
                replicas = try await ReplicationServer.bind(
                    TransportAddress(host: address.host, port: address.port),
                    secretFile: options.replicationSecretFile ?? "", pool: pool, transport: transport,
                    workers: threadPool, logger: logger, directory: options.directory)
            } else {
                replicas = nil
            }
            undo.append { replicas?.close() }
            if let address = options.replication {
                let note = transportTLS.map { " with TLS (certificates in \($0.directory))" } ?? ""
                logger.notice("accepting replication on \(address.host):\(address.port)\(note)")
            }
            let streams = try StreamServer.bind(directory: options.directory, service: service, logger: logger)
            let http = try options.http.map { address in
                try Self.listening("HTTP", on: (address.host, address.port), option: "--http ADDR:PORT, or --http off") {
                    try HTTPServer.start(
                        address, content: DaemonHTTPContent(service: service), group: group, workers: threadPool)
                }
            }
            undo.append { http?.shutdownAndWait() }
            let flattens = FlattenResumer(pool: pool, logger: logger)
            return DaemonServices(
                commit: CommitService(
                    pool: pool, interval: .milliseconds(Int64(options.commitIntervalSeconds * 1000)), workers: threadPool,
                    logger: logger),
                mirrorLinks: LifecycleService(work: { await links.run() }, stop: { links.close() }),
                mirrors: LifecycleService(
                    work: {
                        await DedicatedThread.run(name: "strata-mirrors") {
                            mirrors.run()
                            mirrors.shutdown()
                        }
                    }, stop: { mirrors.stop() }),
                iscsi: iscsi.map { server in LifecycleService.draining("iscsi") { server.shutdownAndWait() } },
                nbd: LifecycleService.draining("nbd") { nbd.shutdownAndWait() },
                replicator: LifecycleService(work: { await replicator.run() }, stop: { replicator.close() }),
                replicas: replicas.map { server in LifecycleService(work: { await server.run() }, stop: { server.close() }) },
                streams: LifecycleService(work: { await streams.run() }, stop: { streams.close() }),
                flattens: LifecycleService(work: { await flattens.run() }, stop: { flattens.stop() }),
                hydrations: LifecycleService(work: { await hydrator.run() }, stop: { hydrator.stop() }),
                control: LifecycleService.draining("control") {
                    logger.notice("shutting down: finishing requests in flight")
                    if let problem = SystemdNotify.send("STOPPING=1") { logger.warning("\(problem)") }
                    control.shutdownAndWait()
                },
                http: http.map { server in LifecycleService.draining("http") { server.shutdownAndWait() } },
                httpURL: options.http.map { "\(http?.scheme ?? "http")://\(Self.urlHost($0.host)):\($0.port)/" })
        } catch {
            for step in undo.reversed() { step() }
            throw error
        }
    }

    /// Runs `bind`, turning a bind error into one that names the front end, the address and the fix.
    /// The iSCSI server on every `--iscsi` portal, or nil when iSCSI is off.
    private static func iscsiServer(
        _ options: DaemonOptions, pool: Pool, group: any EventLoopGroup, workers: any EngineWorkers,
        registry: ConnectionRegistry, logger: Logger, foreign: (any ForeignExports)?
    ) throws(StrataError) -> ISCSIServer? {
        guard !options.iscsi.isEmpty else { return nil }
        do throws(ISCSIServer.BindError) {
            return try ISCSIServer.start(
                portals: options.iscsi, pool: pool, directory: options.directory, group: group, workers: workers,
                registry: registry, logger: logger, foreign: foreign, settings: options.iscsiUnits)
        } catch {
            throw Self.bindFailure(
                "iSCSI", on: (error.host, error.port), option: "--iscsi ADDR:PORT, or --iscsi off", error.underlying)
        }
    }

    private static func listening<T>(
        _ name: String, on address: (host: String, port: Int), option: String, _ bind: () throws -> T
    ) throws(StrataError) -> T {
        do {
            return try bind()
        } catch let error as StrataError {
            throw error  // already names the object and the fix (a refused address, a bad token file)
        } catch {
            throw Self.bindFailure(name, on: address, option: option, error)
        }
    }

    private static func bindFailure(
        _ name: String, on address: (host: String, port: Int), option: String, _ error: any Error
    ) -> StrataError {
        StrataError(
            .io,
            "serve: cannot listen for \(name) on \(address.host):\(address.port) (\(error)); is another server using it? Choose another with \(option)"
        )
    }

    /// A host as a URL writes it: IPv6 addresses in brackets.
    static func urlHost(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    /// Keeps the memory of freed request buffers in the process instead of returning it at once.
    ///
    /// glibc's defaults serve a buffer over 128 KiB (a 1 MiB READ's reply, a 1 MiB WRITE's
    /// payload) from a fresh mapping or a heap it trims back on free, so the next such buffer
    /// faults its pages in again and the kernel zeroes them: strace of the daemon under 1 MiB
    /// sequential reads counted about 150 `madvise` calls a second, and the reads ran at
    /// 0.6-0.8x nbdkit's. Up to the largest request (32 MiB, `NBDWire.requestBytesMax`) buffers
    /// now come from the heap, and a heap keeps up to 64 MiB free at its top before it gives
    /// memory back: the daemon keeps its high-water mark of buffers (bounded by the requests in
    /// flight, which the front ends bound) rather than mapping and zeroing it per request.
    private static func keepRequestBuffers() {
        _ = strata_keep_freed_buffers(32 << 20, 64 << 20)
    }

    /// Lets the daemon hold as many connections as the hard limit allows.
    private static func raiseFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }
}
