// What the daemon's HTTP service shows (StrataHTTP asks, this answers): every API resource is
// a read-only control request run by `PoolService`, the same code the CLI's listings run, and
// encoded by `ControlJSON`, the CLI's `--json` encoder, so each object has one shape
// (docs/openapi.yaml). /metrics is a `MetricsSnapshot` of the pool, the front ends' counters,
// the connections and the replication jobs, rendered by StrataHTTP's `MetricsExporter`.
//
// Runs on the thread pool (it reads the pool under its locks), never on an event loop.

import CStrata
import Foundation
import StrataCore
import StrataFrontEnd
import StrataHTTP
import StrataObjectStore
import StrataReplication

/// One volume's (or snapshot's) front-end I/O through one protocol, for /api/v1/statistics.
public struct VolumeIOStatistics: Codable, Sendable, Equatable {
    /// Totals of one operation since the daemon started.
    public struct Operation: Codable, Sendable, Equatable {
        public let count: UInt64
        public let bytes: UInt64
        public let errors: UInt64
    }

    public let volume: String
    public let protocolName: String
    /// By operation: read, write, trim, write_zeroes, flush.
    public let operations: [String: Operation]
    public let inFlight: UInt64
}

/// The daemon's `HTTPContentSource`.
struct DaemonHTTPContent: HTTPContentSource {
    let service: PoolService
    let exporter = MetricsExporter()

    func json(for resource: APIResource) throws(StrataError) -> [UInt8] {
        switch resource {
        case .pool:
            guard case .status(let status) = try self.service.execute(.poolStatus) else { return try self.unexpected() }
            return try self.encode(status)
        case .volumes:
            return try self.encode(try self.volumes())
        case .volume(let name):
            guard var volume = try self.volumes().first(where: { $0.name == name }) else {
                throw StrataError(.notFound, "GET volume \(name): no such volume; list them at /api/v1/volumes")
            }
            // A volume over a remote base carries `strata volume status --json`'s object.
            if case .volumeStatus(let status) = try self.service.execute(.volumeStatus(name: name)),
                status.remote != nil || status.state == "done"
            {
                volume.hydration = status
            }
            return try self.encode(volume)
        case .volumeSnapshots(let name):
            return try self.encode(try self.snapshots(of: name))
        case .snapshots:
            return try self.encode(try self.snapshots(of: nil))
        case .connections:
            guard case .connections(let connections) = try self.service.execute(.connections) else {
                return try self.unexpected()
            }
            return try self.encode(connections)
        case .replication:
            return try self.encode(self.service.replicator?.status() ?? [])
        case .remotes:
            guard case .remote(.remotes(let remotes)) = try self.service.execute(.remote(.list)) else {
                return try self.unexpected()
            }
            return try self.encode(remotes)
        case .statistics:
            return try self.encode(self.statistics())
        }
    }

    func metricsText() -> [UInt8] {
        let pool = self.service.pool
        let volumes = (try? self.volumes()) ?? []
        let snapshots = (try? self.snapshots(of: nil)) ?? []
        let connections = self.service.registry?.all ?? []
        let snapshot = MetricsSnapshot(
            pool: pool.status(), commits: pool.statistics.commits.snapshot, volumes: volumes, snapshots: snapshots,
            io: self.namedCounters(), connections: FrontEnd.allCases.map { frontEnd in
                (protocolName: frontEnd.rawValue, count: connections.filter { $0.protocolName == frontEnd.rawValue }.count)
            }, replication: self.service.replicator?.status() ?? [], memory: Self.memory(of: pool))
        return self.exporter.render(snapshot)
    }

    /// The daemon's resident set, its C heap in use and kept free, and the metadata cache.
    static func memory(of pool: Pool) -> ProcessMemory {
        var inUse: UInt64 = 0
        var free: UInt64 = 0
        strata_heap_usage(&inUse, &free)
        // statm: size resident shared … in pages.
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let residentPages = statm.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        return ProcessMemory(
            residentBytes: residentPages * UInt64(sysconf(Int32(_SC_PAGESIZE))), heapInUseBytes: inUse,
            heapFreeBytes: free, metadataCachePages: UInt64(pool.metadataCachePages))
    }

    private func volumes() throws(StrataError) -> [VolumeInfo] {
        guard case .volumes(let volumes) = try self.service.execute(.listVolumes) else { return try self.unexpected() }
        return volumes
    }

    private func snapshots(of volume: String?) throws(StrataError) -> [SnapshotInfo] {
        guard case .snapshots(let snapshots) = try self.service.execute(.listSnapshots(volume: volume)) else {
            return try self.unexpected()
        }
        return snapshots
    }

    /// Each counted volume or snapshot that still exists, by its current name.
    private func namedCounters() -> [(name: String, counters: VolumeIOSnapshot)] {
        self.service.pool.statistics.volumes().compactMap { counters in
            self.service.pool.handle(id: counters.volumeID).map { (name: $0.name, counters: counters) }
        }
    }

    private func statistics() -> [VolumeIOStatistics] {
        self.namedCounters().map { name, counters in
            VolumeIOStatistics(
                volume: name, protocolName: counters.frontEnd.rawValue,
                operations: Dictionary(
                    uniqueKeysWithValues: counters.operations.map { operation in
                        (
                            operation.operation.label,
                            VolumeIOStatistics.Operation(
                                count: operation.count, bytes: operation.bytes, errors: operation.errors)
                        )
                    }), inFlight: counters.inFlight)
        }
    }

    private func encode<T: Encodable>(_ value: T) throws(StrataError) -> [UInt8] {
        do {
            return Array(try ControlJSON.encode(value))
        } catch {
            throw StrataError(.io, "encode \(T.self): \(error)")
        }
    }

    private func unexpected<T>() throws(StrataError) -> T {
        throw StrataError(.io, "the control plane answered a listing with another result")
    }
}
