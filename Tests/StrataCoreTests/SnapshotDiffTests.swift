// Snapshots, clones, rollback and diff at the engine level: O(1) snapshots with no limit but
// space, clone chains whose reads cost the same at depth 100, and a diff whose cost follows
// the change, not the volume size.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct SnapshotDiffTests {
    func makePool(chunk: UInt64 = 65536, dataChunks: UInt64 = 4096) throws -> (SimDevice, Pool) {
        let device = SimDevice(size: 2048 * 4096 + dataChunks * chunk)
        try Pool.format(device: device, chunkSize: chunk, metadataPages: 2048)
        return (device, try Pool(device: device))
    }

    @Test func thousandsOfSnapshotsShareOneTree() throws {
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 30)
        let handle = try pool.handle("vm1")
        var random = SeededRandom(seed: 1)
        for index in 0..<64 as Range<UInt64> { try pool.write(handle, at: index * 65536 * 7, random.bytes(4096)) }
        let usedBefore = pool.status().metadataUsedBytes
        // 3,000 snapshots (beyond Zumastor's 64, Longhorn's 250 and krbd's 510) add only their
        // volume-table records: no tree page is copied.
        for index in 0..<3000 { try pool.createSnapshot("vm1", "s\(index)") }
        try pool.flush()
        let status = pool.status()
        #expect(status.snapshots == 3000)
        #expect(status.metadataUsedBytes - usedBefore < 200 * 4096)
        #expect(Pool.check(device: device).clean)
        // Deleting them all frees their records; the data stays with the volume.
        for index in 0..<3000 { try pool.deleteSnapshot("vm1", "s\(index)") }
        try pool.flush()
        #expect(pool.status().snapshots == 0)
        #expect(Pool.check(device: device).clean)
    }

    @Test func cloneChainsReadTheSameAtDepthHundred() throws {
        let (device, pool) = try self.makePool(chunk: 4096, dataChunks: 8192)
        try pool.createVolume("v0", size: 64 << 20)
        var random = SeededRandom(seed: 2)
        var expected = [UInt64: [UInt8]]()
        for depth in 0..<100 {
            let name = "v\(depth)"
            let handle = try pool.handle(name)
            let offset = UInt64(random.next(below: 16384)) * 4096
            let bytes = random.bytes(4096)
            try pool.write(handle, at: offset, bytes)
            expected[offset] = bytes
            try pool.createSnapshot(name, "s")
            try pool.clone(name, "s", to: "v\(depth + 1)")
        }
        // The clone at depth 100 sees every write along its lineage; a lookup walks one tree
        // of fixed depth, whatever the lineage's length.
        let deepest = try pool.handle("v100")
        for (offset, bytes) in expected { #expect(try pool.read(deepest, at: offset, count: 4096) == bytes) }
        let record = pool.meta.withReadLock { pool.record(id: deepest.id)! }
        let shallow = pool.meta.withReadLock { pool.record(id: try! pool.handle("v1").id)! }
        #expect(record.depth == shallow.depth)
        try pool.flush()
        #expect(Pool.check(device: device).clean)
    }

    @Test func rollbackRestoresContentAndSize() throws {
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        let handle = try pool.handle("vm1")
        let original = SeededRandom(seed: 3).bytesForTest(1 << 20)
        try pool.write(handle, at: 0, original)
        try pool.createSnapshot("vm1", "good")
        try pool.write(handle, at: 4096, [UInt8](repeating: 0xEE, count: 65536))
        try pool.resizeVolume("vm1", size: 4 << 20)
        try pool.rollback("vm1", "good")
        #expect(try pool.size(of: handle) == 1 << 20)
        #expect(try pool.read(handle, at: 0, count: 1 << 20) == original)
        // Writing after rollback copies, leaving the snapshot intact.
        try pool.write(handle, at: 0, [UInt8](repeating: 1, count: 512))
        #expect(try pool.read(try pool.handle("vm1@good"), at: 0, count: 1 << 20) == original)
        try pool.flush()
        #expect(Pool.check(device: device).clean)
    }

    @Test func diffFindsExactlyTheChangedChunks() throws {
        let (_, pool) = try self.makePool(chunk: 4096, dataChunks: 16384)
        try pool.createVolume("vm1", size: 256 << 20)
        let handle = try pool.handle("vm1")
        var random = SeededRandom(seed: 4)
        for _ in 0..<200 { try pool.write(handle, at: UInt64(random.next(below: 65536)) * 4096, random.bytes(4096)) }
        try pool.createSnapshot("vm1", "a")
        var changed = Set<UInt64>()
        for _ in 0..<50 {
            let chunk = UInt64(random.next(below: 65536))
            try pool.write(handle, at: chunk * 4096, random.bytes(1024))
            changed.insert(chunk)
        }
        let trimmed = UInt64(random.next(below: 65536))
        try pool.write(handle, at: trimmed * 4096, random.bytes(4096))
        try pool.createSnapshot("vm1", "b")
        try pool.trim(handle, at: trimmed * 4096, length: 4096)
        let toB = try pool.diff(from: "vm1@a", to: "vm1@b")
        var reported = Set<UInt64>()
        for extent in toB {
            #expect(extent.kind == .data)
            for chunk in (extent.offset / 4096)..<((extent.offset + extent.length) / 4096) { reported.insert(chunk) }
        }
        #expect(reported == changed.union([trimmed]))
        // To the live volume, the trimmed chunk reads as zeros now (unless it was mapped in a).
        let live = try pool.diff(from: "vm1@b", to: "vm1")
        #expect(live == [DiffExtent(offset: trimmed * 4096, length: 4096, kind: .zero)])
        // Identical trees: nothing, and no node read.
        var visits = 0
        #expect(try pool.diff(from: "vm1@b", to: "vm1@b", nodesVisited: &visits).isEmpty)
        #expect(visits == 0)
    }

    @Test func diffCostFollowsTheChangeNotTheVolumeSize() throws {
        // The same 64 changed chunks in a 256 MiB and in a 64 GiB thin volume with the same
        // base data: the walk reads the same number of nodes (one more level at most).
        var visitsBySize: [UInt64: Int] = [:]
        for size in [UInt64(256) << 20, UInt64(64) << 30] {
            let (_, pool) = try self.makePool(chunk: 4096, dataChunks: 8192)
            try pool.createVolume("vm1", size: size)
            let handle = try pool.handle("vm1")
            var random = SeededRandom(seed: 5)
            for _ in 0..<500 { try pool.write(handle, at: UInt64(random.next(below: 65536)) * 4096, random.bytes(512)) }
            try pool.createSnapshot("vm1", "a")
            for _ in 0..<64 { try pool.write(handle, at: UInt64(random.next(below: 65536)) * 4096, random.bytes(512)) }
            var visits = 0
            let extents = try pool.diff(from: "vm1@a", to: "vm1", nodesVisited: &visits)
            #expect(!extents.isEmpty)
            visitsBySize[size] = visits
        }
        let small = visitsBySize[256 << 20]!
        let large = visitsBySize[64 << 30]!
        #expect(large <= small + 4, "diff read \(small) nodes at 256 MiB but \(large) at 64 GiB")
        // And far fewer than the trees hold: 64 changes touch at most 64 leaves per side.
        #expect(small <= 2 * (64 + 2))
    }
}
