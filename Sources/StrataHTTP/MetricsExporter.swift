// /metrics: the daemon's numbers in the Prometheus text format (exposition format 0.0.4).
//
// Counters and gauges go through the swift-metrics API (`Counter`, `Meter`) into a
// swift-prometheus registry of the exporter's own (not the process-wide `MetricsSystem`, so two
// daemons in one test process do not mix). The engine keeps its counts in atomics
// (StrataCore's IOStatistics: no lock per request, no metrics types in the engine); at each
// scrape the exporter reads them and moves each swift-metrics counter by what it gained since
// the last scrape, so the registry's counters equal the engine's. Latency histograms are kept
// by the engine as atomic buckets too; swift-prometheus's histograms take one value at a time
// under a lock, which is what the hot path must not pay, so the exporter writes those families
// itself, in the same format, after the registry's.
//
// A volume that is gone loses its series (their metrics are destroyed), as node_exporter drops
// an unmounted file system. Names follow Prometheus conventions: `strata_…_total` for counters,
// `_bytes` and `_seconds` for units.

import CoreMetrics
import Foundation
import Prometheus
import StrataCore
import StrataReplication
import Synchronization

/// What one scrape shows: read by the daemon from the pool, the front ends and the jobs.
public struct MetricsSnapshot: Sendable {
    public var pool: PoolStatus
    public var commits: HistogramSnapshot
    public var volumes: [VolumeInfo]
    public var snapshots: [SnapshotInfo]
    /// Each volume's or snapshot's I/O counters with its current name.
    public var io: [(name: String, counters: VolumeIOSnapshot)]
    /// Open connections by protocol (every front end listed, with 0 when none).
    public var connections: [(protocolName: String, count: Int)]
    public var replication: [ReplicationStatus]
    public var memory: ProcessMemory

    public init(
        pool: PoolStatus, commits: HistogramSnapshot, volumes: [VolumeInfo], snapshots: [SnapshotInfo],
        io: [(name: String, counters: VolumeIOSnapshot)], connections: [(protocolName: String, count: Int)],
        replication: [ReplicationStatus], memory: ProcessMemory
    ) {
        self.pool = pool
        self.commits = commits
        self.volumes = volumes
        self.snapshots = snapshots
        self.io = io
        self.connections = connections
        self.replication = replication
        self.memory = memory
    }
}

/// Where the daemon's memory is: what an operator checks against the configured bounds.
public struct ProcessMemory: Sendable, Equatable {
    /// Resident set size (/proc/self/statm).
    public var residentBytes: UInt64
    /// The C heap's bytes in use, and the freed bytes it keeps for reuse (bounded by the daemon's
    /// trim threshold) rather than returning them to the system.
    public var heapInUseBytes: UInt64
    public var heapFreeBytes: UInt64
    /// Decoded tree nodes cached (at most `Limits.nodeCachePagesMax`).
    public var metadataCachePages: UInt64

    public init(residentBytes: UInt64, heapInUseBytes: UInt64, heapFreeBytes: UInt64, metadataCachePages: UInt64) {
        self.residentBytes = residentBytes
        self.heapInUseBytes = heapInUseBytes
        self.heapFreeBytes = heapFreeBytes
        self.metadataCachePages = metadataCachePages
    }
}

/// Turns snapshots into the Prometheus text format; one per daemon.
public final class MetricsExporter: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let state = Mutex(State())

    /// A metric's identity: its name and label values in order.
    struct Key: Hashable {
        let name: String
        let labels: [String]
    }

    struct State {
        var counters: [Key: (counter: CoreMetrics.Counter, published: UInt64)] = [:]
        var gauges: [Key: Meter] = [:]
    }

    public init() {}

    /// Publishes `snapshot` and returns the whole page.
    public func render(_ snapshot: MetricsSnapshot) -> [UInt8] {
        let factory = PrometheusMetricsFactory(registry: self.registry)
        var out: [UInt8] = []
        self.state.withLock { state in
            var batch = Batch(factory: factory, state: state)
            batch.publish(snapshot)
            state = batch.finish()
            self.registry.emit(into: &out)
        }
        var histograms = HistogramWriter()
        histograms.family(
            "strata_pool_commit_duration_seconds", help: "Time each commit took: pages written, synced, superblock flipped.")
        histograms.series(labels: [], snapshot.commits)
        histograms.family(
            "strata_io_latency_seconds", help: "Time each front-end request took in the engine, per volume, protocol and op.")
        for (name, counters) in snapshot.io {
            for operation in counters.operations where operation.count > 0 {
                histograms.series(
                    labels: [("volume", name), ("protocol", counters.frontEnd.rawValue), ("op", operation.operation.label)],
                    operation.latency)
            }
        }
        return out + histograms.text
    }
}

/// One scrape's updates: every metric it sets is marked seen; the rest are destroyed at `finish`.
private struct Batch {
    let factory: PrometheusMetricsFactory
    var state: MetricsExporter.State
    var seen: Set<MetricsExporter.Key> = []

    init(factory: PrometheusMetricsFactory, state: MetricsExporter.State) {
        self.factory = factory
        self.state = state
    }

    mutating func publish(_ snapshot: MetricsSnapshot) {
        let pool = snapshot.pool
        self.gauge("strata_pool_capacity_bytes", [], pool.capacityBytes)
        self.gauge("strata_pool_data_used_bytes", [], pool.dataUsedBytes)
        self.gauge("strata_pool_data_free_bytes", [], pool.dataFreeBytes)
        self.gauge("strata_pool_metadata_bytes", [], pool.metadataBytes)
        self.gauge("strata_pool_metadata_used_bytes", [], pool.metadataUsedBytes)
        self.gauge("strata_pool_volumes", [], UInt64(pool.volumes))
        self.gauge("strata_pool_snapshots", [], UInt64(pool.snapshots))
        self.gauge("strata_pool_generation", [], pool.generation)
        self.counter("strata_pool_commits_total", [], snapshot.commits.count)
        let memory = snapshot.memory
        self.gauge("strata_process_resident_bytes", [], memory.residentBytes)
        self.gauge("strata_process_heap_in_use_bytes", [], memory.heapInUseBytes)
        self.gauge("strata_process_heap_free_bytes", [], memory.heapFreeBytes)
        self.gauge("strata_metadata_cache_pages", [], memory.metadataCachePages)
        for volume in snapshot.volumes {
            self.gauge("strata_volume_size_bytes", [("volume", volume.name)], volume.sizeBytes)
            self.gauge("strata_volume_allocated_bytes", [("volume", volume.name)], volume.allocatedBytes)
        }
        for item in snapshot.snapshots {
            self.gauge(
                "strata_snapshot_exclusive_bytes", [("volume", item.volume), ("snapshot", item.name)], item.exclusiveBytes)
        }
        for (name, counters) in snapshot.io {
            let labels = [("volume", name), ("protocol", counters.frontEnd.rawValue)]
            self.gauge("strata_io_in_flight_requests", labels, counters.inFlight)
            for operation in counters.operations where operation.count > 0 {
                let withOp = labels + [("op", operation.operation.label)]
                self.counter("strata_io_operations_total", withOp, operation.count)
                self.counter("strata_io_bytes_total", withOp, operation.bytes)
                self.counter("strata_io_errors_total", withOp, operation.errors)
            }
        }
        for (protocolName, count) in snapshot.connections {
            self.gauge("strata_connections", [("protocol", protocolName)], UInt64(count))
        }
        for job in snapshot.replication {
            let labels = [("volume", job.volume), ("peer", job.peer)]
            if let lag = job.lagSeconds { self.gauge("strata_replication_lag_seconds", labels, lag) }
            self.counter("strata_replication_sent_bytes_total", labels, job.bytesSent)
            self.counter("strata_replication_cycles_total", labels, job.cycles)
            self.counter("strata_replication_errors_total", labels, job.errors)
            self.gauge("strata_replication_transfer_done_bytes", labels, job.transferDone)
            self.gauge("strata_replication_transfer_total_bytes", labels, job.transferTotal)
        }
    }

    mutating func gauge(_ name: String, _ labels: [(String, String)], _ value: UInt64) {
        self.gauge(name, labels, Double(value))
    }

    mutating func gauge(_ name: String, _ labels: [(String, String)], _ value: Double) {
        let key = MetricsExporter.Key(name: name, labels: labels.map { $0.1 })
        self.seen.insert(key)
        let meter = self.state.gauges[key] ?? Meter(label: name, dimensions: labels, factory: self.factory)
        self.state.gauges[key] = meter
        meter.set(value)
    }

    /// Moves the counter to `value` (the engine's monotonic total) by the difference since the
    /// last scrape.
    mutating func counter(_ name: String, _ labels: [(String, String)], _ value: UInt64) {
        let key = MetricsExporter.Key(name: name, labels: labels.map { $0.1 })
        self.seen.insert(key)
        var entry =
            self.state.counters[key]
            ?? (counter: CoreMetrics.Counter(label: name, dimensions: labels, factory: self.factory), published: 0)
        if value > entry.published {
            entry.counter.increment(by: Int64(clamping: value - entry.published))
            entry.published = value
        }
        self.state.counters[key] = entry
    }

    /// Destroys the metrics this scrape did not set (their volume or job is gone).
    func finish() -> MetricsExporter.State {
        var state = self.state
        for (key, entry) in state.counters where !self.seen.contains(key) {
            entry.counter.destroy()
            state.counters[key] = nil
        }
        for (key, meter) in state.gauges where !self.seen.contains(key) {
            meter.destroy()
            state.gauges[key] = nil
        }
        return state
    }
}

/// Writes histogram families in the text format from bucket counts.
struct HistogramWriter {
    var text: [UInt8] = []

    mutating func family(_ name: String, help: String) {
        self.current = name
        self.append("# HELP \(name) \(help)\n# TYPE \(name) histogram\n")
    }

    private var current = ""

    mutating func series(labels: [(String, String)], _ snapshot: HistogramSnapshot) {
        var cumulative: UInt64 = 0
        for (index, bound) in LatencyHistogram.boundsNanos.enumerated() {
            cumulative += snapshot.counts[index]
            let le = Self.seconds(bound)
            self.append("\(self.current)_bucket\(Self.labelText(labels + [("le", le)])) \(cumulative)\n")
        }
        cumulative += snapshot.counts[LatencyHistogram.boundsNanos.count]
        self.append("\(self.current)_bucket\(Self.labelText(labels + [("le", "+Inf")])) \(cumulative)\n")
        self.append("\(self.current)_sum\(Self.labelText(labels)) \(Self.seconds(snapshot.sumNanos))\n")
        self.append("\(self.current)_count\(Self.labelText(labels)) \(cumulative)\n")
    }

    private mutating func append(_ line: String) { self.text += Array(line.utf8) }

    /// Nanoseconds as seconds in the shortest exact decimal form.
    static func seconds(_ nanos: UInt64) -> String {
        let whole = nanos / 1_000_000_000
        var fraction = String(nanos % 1_000_000_000)
        if fraction == "0" { return "\(whole).0" }
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(whole).\(fraction)"
    }

    /// `{a="x",b="y"}`, values escaped as the text format requires; empty for no labels.
    static func labelText(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        let parts = labels.map { name, value in
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(name)=\"\(escaped)\""
        }
        return "{" + parts.joined(separator: ",") + "}"
    }
}
