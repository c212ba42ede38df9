// The daemon's services (swift-service-lifecycle): each long-running part of `strata serve` is
// one `Service` in one `ServiceGroup`, which starts them together and, on SIGINT or SIGTERM,
// stops them one at a time in the reverse of their start order, each finishing before the next
// is asked. The order is the README's promise, "stop accepting, let every connection finish what
// is in flight, commit, exit 0":
//
//   http        stops accepting and closes its connections (metrics, API, dashboard: read-only)
//   hydrations  stop between objects (resumed at the next start); a `hydrate --wait` in flight
//               then answers, so control can drain
//   control     stops accepting; requests in flight answer (none runs after the commit)
//   flattens    stop between steps (resumed at the next start)
//   streams     stop accepting; sends and receives stop at their next read or write
//   replicas    stop accepting replication; receives in progress are cut (staging kept)
//   replicator  jobs stop (they resume at the next start)
//   nbd, iscsi  stop accepting; each connection answers what it has in flight, then closes
//   mirrors     copies stop; each connected leg takes a last split point, legs flush and close
//   mirrorLinks remote legs' connections close (after the mirrors' last split points used them)
//   commit      the timer stops and the last commit makes everything acknowledged durable
//
// Sockets are bound before the group runs, so a port in use fails `serve` at once with the
// fix; the services only run and stop. Replication (the replica listener and the jobs) runs
// on the SwiftNIO transport as child tasks of its services, with its engine work on the thread
// pool; the remaining blocking work (the stream socket's accept loop and streams, flattens,
// drains) runs on dedicated threads the services await, never on the cooperative pool.

import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import StrataCore
import StrataFrontEnd
import StrataHTTP
import StrataISCSI
import StrataNBD
import StrataReplication

/// The daemon's services by role; `startOrder` is the order the group starts them in (it stops
/// them in reverse).
struct DaemonServices {
    var commit: any Service
    var mirrorLinks: any Service
    var mirrors: any Service
    var iscsi: (any Service)?
    var nbd: any Service
    var replicator: any Service
    var replicas: (any Service)?
    var streams: any Service
    var flattens: any Service
    var hydrations: any Service
    var control: any Service
    var http: (any Service)?
    /// Where the HTTP service listens, for the start message; nil when it is off.
    var httpURL: String?

    /// The start order; the group stops them in reverse (see the file's note).
    var startOrder: [ServiceGroupConfiguration.ServiceConfiguration] {
        let services: [(String, (any Service)?)] = [
            ("commit", self.commit), ("mirrorLinks", self.mirrorLinks), ("mirrors", self.mirrors), ("iscsi", self.iscsi),
            ("nbd", self.nbd), ("replicator", self.replicator),
            ("replicas", self.replicas), ("streams", self.streams), ("flattens", self.flattens),
            ("control", self.control), ("hydrations", self.hydrations), ("http", self.http),
        ]
        return services.compactMap { name, service in
            service.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0, serviceName: name) }
        }
    }
}

/// A service whose `work` runs until the group stops it: graceful shutdown or cancellation
/// calls `stop` (which must not block), and `work` then returns once everything it started has
/// ended. Work that ends by itself (the flattens) waits for its turn to stop, because the group
/// takes a service that returns early for a failure.
struct LifecycleService: Service {
    let work: @Sendable () async throws -> Void
    let stop: @Sendable () -> Void

    func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await self.work()
        } onCancelOrGracefulShutdown: {
            self.stop()
        }
        try? await gracefulShutdown()
    }

    /// A server that accepts on its own (NIO): at its turn, `drain` stops it and waits for its
    /// connections, on a dedicated thread (it blocks).
    static func draining(_ name: String, _ drain: @escaping @Sendable () -> Void) -> LifecycleService {
        LifecycleService(
            work: {
                try? await gracefulShutdown()
                await DedicatedThread.run(name: "strata-drain-\(name)", drain)
            },
            stop: {})
    }
}

/// The commit timer: commits every `interval` when the metadata changed (`Pool.commitIfNeeded`:
/// overwrites are left to the kernel's writeback or the next flush); at its turn (after every
/// front end has drained) it commits a last time, so nothing acknowledged is lost. A failed
/// commit leaves the pool failed (read-only, reported by every later request) and stops the
/// timer; the daemon goes on serving reads until it is stopped.
struct CommitService: Service {
    let pool: Pool
    let interval: Duration
    let workers: any EngineWorkers
    let logger: Logger

    func run() async throws {
        while true {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            } catch {
                break  // graceful shutdown or cancellation
            }
            let commit = await self.workers.result { () throws(StrataError) in try self.pool.commitIfNeeded() }
            if case .failure(let error) = commit {
                self.logger.error("\(error.message)")
                try? await gracefulShutdown()
                break
            }
        }
        // Commits (syncs) on the thread pool: never on the cooperative pool.
        try await self.workers.engine { () throws(StrataError) in try self.pool.flush() }
    }
}
