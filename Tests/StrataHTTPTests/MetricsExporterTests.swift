// The exporter's page: counters equal the engine's totals and move by exactly what was added
// between scrapes, histograms are cumulative with +Inf equal to _count, and a volume that is
// gone loses its series.

import Foundation
import StrataCore
import StrataReplication
import Testing

@testable import StrataHTTP

@Suite struct MetricsExporterTests {
    /// A status as the control plane encodes it (its memberwise initializer is the engine's own).
    let pool = try! JSONDecoder().decode(
        PoolStatus.self,
        from: Data(
            """
            {"capacityBytes": 1073741824, "dataUsedBytes": 1048576, "dataFreeBytes": 1072693248,
             "metadataBytes": 4194304, "metadataUsedBytes": 8192, "chunkSize": 65536, "volumes": 1,
             "snapshots": 0, "generation": 9, "createdAt": "2026-12-06T00:00:00Z", "uuid": "u", "unavailable": {}}
            """.utf8))

    func io(reads: UInt64, readNanos: [UInt64]) -> VolumeIOSnapshot {
        var counts = [UInt64](repeating: 0, count: LatencyHistogram.boundsNanos.count + 1)
        for nanos in readNanos {
            counts[LatencyHistogram.boundsNanos.firstIndex { nanos <= $0 } ?? LatencyHistogram.boundsNanos.count] += 1
        }
        let empty = HistogramSnapshot(counts: [UInt64](repeating: 0, count: counts.count), sumNanos: 0)
        return VolumeIOSnapshot(
            volumeID: 1, frontEnd: .nbd,
            operations: IOOperation.allCases.map { operation in
                operation == .read
                    ? OperationSnapshot(
                        operation: .read, count: reads, bytes: reads * 4096, errors: 0,
                        latency: HistogramSnapshot(counts: counts, sumNanos: readNanos.reduce(0, +)))
                    : OperationSnapshot(operation: operation, count: 0, bytes: 0, errors: 0, latency: empty)
            }, inFlight: 0)
    }

    func snapshot(volumes: [String], reads: UInt64, readNanos: [UInt64]) -> MetricsSnapshot {
        MetricsSnapshot(
            pool: self.pool, commits: HistogramSnapshot(counts: [UInt64](repeating: 0, count: 19), sumNanos: 0),
            volumes: [], snapshots: [],
            io: volumes.map { ($0, self.io(reads: reads, readNanos: readNanos)) },
            connections: [("nbd", 2), ("iscsi", 0)], replication: [],
            memory: ProcessMemory(
                residentBytes: 96 << 20, heapInUseBytes: 40 << 20, heapFreeBytes: 8 << 20, metadataCachePages: 1234))
    }

    func lines(_ bytes: [UInt8]) -> [String] {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func value(_ lines: [String], _ prefix: String) -> String? {
        lines.first { $0.hasPrefix(prefix + " ") }.map { String($0.dropFirst(prefix.count + 1)) }
    }

    @Test func countersFollowTheEngineTotals() {
        let exporter = MetricsExporter()
        let first = self.lines(exporter.render(self.snapshot(volumes: ["vm1"], reads: 5, readNanos: [1, 30_000, 30_000, 2_000_000, 5])))
        let series = "strata_io_operations_total{volume=\"vm1\",protocol=\"nbd\",op=\"read\"}"
        let bytesSeries = "strata_io_bytes_total{volume=\"vm1\",protocol=\"nbd\",op=\"read\"}"
        #expect(first.contains("# TYPE strata_io_operations_total counter"))
        #expect(self.value(first, series) == "5")
        #expect(self.value(first, bytesSeries) == "20480")
        #expect(self.value(first, "strata_pool_capacity_bytes") == "1073741824.0")
        #expect(self.value(first, "strata_connections{protocol=\"nbd\"}") == "2.0")
        #expect(self.value(first, "strata_process_resident_bytes") == "100663296.0")
        #expect(self.value(first, "strata_process_heap_in_use_bytes") == "41943040.0")
        #expect(self.value(first, "strata_process_heap_free_bytes") == "8388608.0")
        #expect(self.value(first, "strata_metadata_cache_pages") == "1234.0")
        // Histogram: cumulative buckets, +Inf == _count, exact sum in seconds.
        let labels = "volume=\"vm1\",protocol=\"nbd\",op=\"read\""
        #expect(self.value(first, "strata_io_latency_seconds_bucket{\(labels),le=\"0.00001\"}") == "2")
        #expect(self.value(first, "strata_io_latency_seconds_bucket{\(labels),le=\"0.00005\"}") == "4")
        #expect(self.value(first, "strata_io_latency_seconds_bucket{\(labels),le=\"+Inf\"}") == "5")
        #expect(self.value(first, "strata_io_latency_seconds_count{\(labels)}") == "5")
        #expect(self.value(first, "strata_io_latency_seconds_sum{\(labels)}") == "0.002060006")
        // Only operations that happened get series.
        #expect(!first.contains { $0.contains("op=\"trim\"") })
        let second = self.lines(exporter.render(self.snapshot(volumes: ["vm1"], reads: 12, readNanos: [])))
        #expect(self.value(second, series) == "12")
        #expect(self.value(second, bytesSeries) == "49152")
        let gone = self.lines(exporter.render(self.snapshot(volumes: [], reads: 0, readNanos: [])))
        #expect(!gone.contains { $0.contains("volume=\"vm1\"") })
    }

    @Test func secondsAreExactDecimals() {
        #expect(HistogramWriter.seconds(0) == "0.0")
        #expect(HistogramWriter.seconds(10_000) == "0.00001")
        #expect(HistogramWriter.seconds(2_500_000_000) == "2.5")
        #expect(HistogramWriter.seconds(1_000_000_000) == "1.0")
    }

    @Test func labelValuesAreEscaped() {
        #expect(HistogramWriter.labelText([("a", "x\"y\\z\n")]) == "{a=\"x\\\"y\\\\z\\n\"}")
        #expect(HistogramWriter.labelText([]) == "")
    }
}
