// The daemon's replication parts, started after the front ends and stopped before them: the
// stream socket (send and receive from the CLI), the replication jobs this pool
// runs as a source (restarted from replication.json), and, with `--replication`, the listener
// that accepts replicas from peers.

import Logging
import StrataCore
import StrataReplication

struct DaemonReplication {
    let streams: StreamServer
    let replicator: Replicator
    let replicas: ReplicationServer?

    /// Starts all three; on failure stops what it started and throws.
    static func start(
        _ options: DaemonOptions, replicator: Replicator, pool: Pool, service: PoolService, logger: Logger
    ) throws(StrataError) -> DaemonReplication {
        var replicas: ReplicationServer?
        if let (host, port) = options.replication {
            replicas = try ReplicationServer.start(
                host: host, port: port, secretFile: options.replicationSecretFile ?? "", pool: pool, logger: logger)
            logger.notice("accepting replication on \(host):\(port)")
        }
        do throws(StrataError) {
            let streams = try StreamServer.start(
                directory: options.directory, service: service, logger: logger)
            replicator.resumeSavedJobs()
            return DaemonReplication(streams: streams, replicator: replicator, replicas: replicas)
        } catch {
            replicas?.close()
            throw error
        }
    }

    /// Stops accepting streams and replicas, and stops the jobs (they resume at the next start).
    func close() {
        self.streams.close()
        self.replicas?.close()
        self.replicator.shutdown()
    }
}
