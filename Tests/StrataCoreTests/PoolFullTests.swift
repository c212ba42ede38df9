// Pool full: writes fail with a clear `.noSpace` while every existing byte and snapshot stays
// intact; deleting a snapshot or trimming frees space and writes succeed again. Metadata
// space is reserved so deletes work even when the metadata region is full.

import Foundation
import StrataCore
import StrataTesting
import Testing

@Suite struct PoolFullTests {
    static let chunk: UInt64 = 4096

    func makePool(dataChunks: UInt64, metadataPages: UInt64 = 512) throws -> (SimDevice, Pool) {
        let device = SimDevice(size: metadataPages * 4096 + dataChunks * Self.chunk)
        try Pool.format(device: device, chunkSize: Self.chunk, metadataPages: metadataPages)
        return (device, try Pool(device: device))
    }

    @Test func dataFullKeepsEverythingAndRecoversAfterDeletes() throws {
        let (device, pool) = try self.makePool(dataChunks: 64)
        try pool.createVolume("vm1", size: 1 << 20)
        let handle = try pool.handle("vm1")
        var random = SeededRandom(seed: 7)
        var written: [UInt64: [UInt8]] = [:]
        // Fill 40 chunks, snapshot them, then overwrite until the pool is full.
        for index in 0..<40 as Range<UInt64> {
            let bytes = random.bytes(Int(Self.chunk))
            try pool.write(handle, at: index * Self.chunk, bytes)
            written[index] = bytes
        }
        try pool.createSnapshot("vm1", "base")
        let snapshotContent = written
        var full: StrataError?
        var index: UInt64 = 0
        while full == nil && index < 256 {
            let bytes = random.bytes(Int(Self.chunk))
            do throws(StrataError) {
                try pool.write(handle, at: index * Self.chunk, bytes)
                written[index] = bytes
            } catch {
                full = error
            }
            index += 1
        }
        let error = try #require(full)
        #expect(error.code == .noSpace)
        #expect(error.errno == ENOSPC)
        #expect(error.message.contains("pool full"))
        #expect(error.message.contains("vm1"))
        // Every acknowledged byte and the snapshot are intact.
        for (chunk, bytes) in written {
            #expect(try pool.read(handle, at: chunk * Self.chunk, count: Int(Self.chunk)) == bytes)
        }
        let snapshot = try pool.handle("vm1@base")
        for (chunk, bytes) in snapshotContent {
            #expect(try pool.read(snapshot, at: chunk * Self.chunk, count: Int(Self.chunk)) == bytes)
        }
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        // Deleting the snapshot frees its chunks; the next write succeeds.
        let before = pool.status().dataUsedBytes
        try pool.deleteSnapshot("vm1", "base")
        try pool.flush()
        #expect(pool.status().dataUsedBytes < before)
        try pool.write(handle, at: (index - 1) * Self.chunk, random.bytes(Int(Self.chunk)))
        // Fill again, then trim: trimming frees space too.
        var filledAgain = false
        for chunk in 0..<256 as Range<UInt64> {
            do throws(StrataError) {
                try pool.write(handle, at: chunk * Self.chunk, random.bytes(Int(Self.chunk)))
            } catch {
                #expect(error.code == .noSpace)
                filledAgain = true
                break
            }
        }
        #expect(filledAgain)
        try pool.trim(handle, at: 0, length: 8 * Self.chunk)
        try pool.write(handle, at: 200 * Self.chunk, random.bytes(Int(Self.chunk)))
        try pool.flush()
        #expect(Pool.check(device: device).clean)
    }

    @Test func metadataFullStillDeletes() throws {
        // A metadata region so small that snapshots with diverging trees exhaust it.
        let (device, pool) = try self.makePool(dataChunks: 4096, metadataPages: 200)
        try pool.createVolume("vm1", size: 64 << 20)
        let handle = try pool.handle("vm1")
        var random = SeededRandom(seed: 11)
        var failure: StrataError?
        var snapshots = 0
        outer: for round in 0..<10_000 {
            for _ in 0..<4 {
                let chunk = UInt64(random.next(below: 16384))
                do throws(StrataError) {
                    try pool.write(handle, at: chunk * Self.chunk, random.bytes(512))
                } catch {
                    failure = error
                    break outer
                }
            }
            try pool.createSnapshot("vm1", "s\(round)")
            snapshots += 1
        }
        let error = try #require(failure)
        #expect(error.code == .noSpace)
        #expect(error.message.contains("metadata full"))
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        // Deletes always work on a full pool, and free metadata.
        for round in 0..<snapshots { try pool.deleteSnapshot("vm1", "s\(round)") }
        try pool.flush()
        try pool.write(handle, at: 0, random.bytes(4096))
        try pool.deleteVolume("vm1")
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        #expect(pool.status().dataUsedBytes == 0)
    }
}
