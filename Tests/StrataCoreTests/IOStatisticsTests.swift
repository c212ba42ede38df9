// I/O statistics at the engine's entry points: a front end's handle counts exactly the
// requests, bytes and errors it made, per operation; handles without counters (the control
// plane's, and every handle when statistics are off) count nothing; commits are timed.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct IOStatisticsTests {
    func makePool() throws -> Pool {
        let device = SimDevice(size: 512 * 4096 + 256 * 65536)
        try Pool.format(device: device, chunkSize: 65536, metadataPages: 512)
        return try Pool(device: device)
    }

    @Test func frontEndHandlesCountEachOperation() throws {
        let pool = try self.makePool()
        pool.statistics.setEnabled(true)
        try pool.createVolume("vm1", size: 8 << 20)
        let handle = try pool.handle("vm1", frontEnd: .nbd)
        let block = [UInt8](repeating: 7, count: 4096)
        for index in 0..<10 as Range<UInt64> { try pool.write(handle, at: index * 4096, block) }
        for index in 0..<3 as Range<UInt64> { _ = try pool.read(handle, at: index * 8192, count: 8192) }
        try pool.trim(handle, at: 0, length: 65536)
        try pool.writeZeroes(handle, at: 65536, length: 4096, allowTrim: false)
        try pool.flush(handle)
        // Past the end: counted as an error, and its bytes are not.
        #expect(throws: StrataError.self) { try pool.write(handle, at: 8 << 20, block) }
        let counted = try #require(pool.statistics.volumes().first)
        #expect(pool.statistics.volumes().count == 1)
        #expect(counted.frontEnd == .nbd)
        #expect(counted[.write].count == 11)
        #expect(counted[.write].bytes == 10 * 4096)
        #expect(counted[.write].errors == 1)
        #expect(counted[.read].count == 3)
        #expect(counted[.read].bytes == 3 * 8192)
        #expect(counted[.read].errors == 0)
        #expect(counted[.trim].count == 1)
        #expect(counted[.trim].bytes == 65536)
        #expect(counted[.writeZeroes].count == 1)
        #expect(counted[.writeZeroes].bytes == 4096)
        #expect(counted[.flush].count == 1)
        #expect(counted.inFlight == 0)
        #expect(counted[.write].latency.count == 11)
        #expect(counted[.read].latency.counts.count == LatencyHistogram.boundsNanos.count + 1)
        #expect(pool.statistics.commits.snapshot.count >= 1)
    }

    @Test func frontEndsAreCountedApart() throws {
        let pool = try self.makePool()
        pool.statistics.setEnabled(true)
        try pool.createVolume("vm1", size: 1 << 20)
        _ = try pool.read(try pool.handle("vm1", frontEnd: .nbd), at: 0, count: 512)
        _ = try pool.read(try pool.handle("vm1", frontEnd: .iscsi), at: 0, count: 1024)
        _ = try pool.read(try pool.handle("vm1", frontEnd: .iscsi), at: 0, count: 1024)
        let byFrontEnd = Dictionary(uniqueKeysWithValues: pool.statistics.volumes().map { ($0.frontEnd, $0) })
        #expect(byFrontEnd[.nbd]?[.read].bytes == 512)
        #expect(byFrontEnd[.iscsi]?[.read].count == 2)
        #expect(byFrontEnd[.iscsi]?[.read].bytes == 2048)
    }

    @Test func deletedVolumesAndSnapshotsLeaveNoCounters() throws {
        let pool = try self.makePool()
        pool.statistics.setEnabled(true)
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.createSnapshot("vm1", "s1")
        try pool.clone("vm1", "s1", to: "c1")
        for name in ["vm1", "vm1@s1", "c1"] {
            _ = try pool.read(try pool.handle(name, frontEnd: .nbd), at: 0, count: 512)
            _ = try pool.read(try pool.handle(name, frontEnd: .iscsi), at: 0, count: 512)
        }
        let ids = { Set(pool.statistics.volumes().map(\.volumeID)) }
        #expect(ids().count == 3)
        let clone = try pool.handle("c1").id
        try pool.deleteVolume("c1")
        #expect(!ids().contains(clone) && ids().count == 2)
        try pool.deleteVolume("vm1", recursive: true)
        #expect(pool.statistics.volumes().isEmpty)
    }

    @Test func offAndControlPlaneHandlesCountNothing() throws {
        let pool = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        let off = try pool.handle("vm1", frontEnd: .nbd)
        #expect(off.counters == nil)
        try pool.write(off, at: 0, [UInt8](repeating: 1, count: 512))
        pool.statistics.setEnabled(true)
        try pool.write(try pool.handle("vm1"), at: 0, [UInt8](repeating: 1, count: 512))
        #expect(pool.statistics.volumes().isEmpty)
        // Equal handles whatever they count into (the iSCSI unit table compares them).
        #expect(try pool.handle("vm1", frontEnd: .nbd) == pool.handle("vm1"))
    }

    @Test func histogramBucketsByUpperBound() {
        let histogram = LatencyHistogram()
        histogram.record(nanos: 0)
        histogram.record(nanos: 10_000)
        histogram.record(nanos: 10_001)
        histogram.record(nanos: 20_000_000_000)
        let snapshot = histogram.snapshot
        #expect(snapshot.counts[0] == 2)
        #expect(snapshot.counts[1] == 1)
        #expect(snapshot.counts[LatencyHistogram.boundsNanos.count] == 1)
        #expect(snapshot.count == 4)
        #expect(snapshot.sumNanos == 20_000_020_001)
    }
}
