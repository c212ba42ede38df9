// Freed chunks are discarded in runs of adjacent chunks (one call a run), whatever order the
// commit freed them in; a pool whose volume was deleted reads zeros in every freed chunk.

@testable import StrataCore
import StrataTesting
import Testing

@Suite struct ChunkRunsTests {
    @Test func adjacentChunksMakeOneRunInAnyOrder() {
        let chunks = [9, 3, 4, 5, 12, 10, 4, 0].map { PhysicalChunk(UInt64($0)) }
        let runs = PhysicalChunk.runs(chunks).map { ($0.first.rawValue, $0.count) }
        #expect(runs.map(\.0) == [0, 3, 9, 12])
        #expect(runs.map(\.1) == [1, 3, 2, 1])
        #expect(PhysicalChunk.runs([]).isEmpty)
    }

    @Test func aDeletedVolumesChunksAreDiscardedAndReadAsZeros() throws {
        let device = SimDevice(size: 256 * 4096 + 64 * 65536)
        try Pool.format(device: device, chunkSize: 65536, metadataPages: 256)
        let pool = try Pool(device: device)
        try pool.createVolume("vm1", size: 32 * 65536)
        let handle = try pool.handle("vm1")
        try pool.write(handle, at: 0, [UInt8](repeating: 0xa5, count: 32 * 65536))
        try pool.flush()
        try pool.deleteVolume("vm1")
        try pool.flush()
        try pool.createVolume("vm2", size: 32 * 65536)
        let fresh = try pool.handle("vm2")
        // A first write of one block into a fresh chunk writes only its own bytes: the rest of
        // the chunk must read as zeros, not as vm1's old bytes.
        try pool.write(fresh, at: 4096, [UInt8](repeating: 1, count: 4096))
        let back = try pool.read(fresh, at: 0, count: 65536)
        #expect(back[0..<4096].allSatisfy { $0 == 0 })
        #expect(back[4096..<8192].allSatisfy { $0 == 1 })
        #expect(back[8192...].allSatisfy { $0 == 0 })
    }
}
