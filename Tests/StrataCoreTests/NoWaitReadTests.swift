// Reads that must not wait (`Waiting.never`, what an event loop asks for) on a pool in a real
// file: they either give exactly what a read that may wait gives, holes included, or give up
// (nil) having changed nothing; they give up whenever a lock is held against them or the
// device cannot tell what is cached, and never block.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct NoWaitReadTests {
    /// A pool in a sparse temporary file, removed with the value.
    final class FilePool {
        let path: String
        let pool: Pool

        init() throws {
            self.path = NSTemporaryDirectory() + "strata-nowait-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).pool"
            let device = try FileDevice.create(path: self.path, size: 64 << 20)
            try Pool.format(device: device, chunkSize: 4096, metadataPages: 1024)
            self.pool = try Pool(device: device)
        }

        deinit { unlink(self.path) }
    }

    /// Reads [offset, offset + count) both ways; the no-wait read is retried a few times (the
    /// waiting read just brought everything into memory, so it succeeds unless the kernel
    /// dropped the pages in between).
    static func compare(_ pool: Pool, _ handle: VolumeHandle, at offset: UInt64, count: Int) throws -> Bool {
        var expected = [UInt8](repeating: 0xEE, count: count)
        let expectedHoles = try expected.withUnsafeMutableBytes {
            try pool.readLeavingHoles(handle, at: offset, into: $0, waiting: .allowed)
        }
        #expect(expectedHoles != nil, "a read that may wait always finishes")
        for _ in 0..<5 {
            var actual = [UInt8](repeating: 0xDD, count: count)
            guard let holes = try actual.withUnsafeMutableBytes({ try pool.readLeavingHoles(handle, at: offset, into: $0, waiting: .never) })
            else { continue }
            #expect(holes == expectedHoles, "holes at \(offset)+\(count)")
            var inHole = [Bool](repeating: false, count: count)
            for hole in holes { for index in hole { inHole[index] = true } }
            for index in 0..<count where !inHole[index] && actual[index] != expected[index] {
                Issue.record("no-wait read at \(offset)+\(count) differs at byte \(index)")
                break
            }
            return true
        }
        return false
    }

    @Test func noWaitReadsMatchWaitingReadsWithTheirHoles() throws {
        let file = try FilePool()
        let pool = file.pool
        try pool.createVolume("vm", size: 8 << 20)
        let handle = try pool.handle("vm")
        var random = SeededRandom(seed: 7)
        // Scattered writes leave mapped chunks between holes; half are committed.
        for round in 0..<40 {
            let offset = UInt64(random.next(below: (8 << 20) - 20_000))
            try pool.write(handle, at: offset, random.bytes(random.next(below: 20_000) + 1))
            if round == 20 { try pool.flush() }
        }
        var served = 0
        for _ in 0..<200 {
            let offset = random.next(below: 8 << 20)
            let count = random.next(below: min(100_000, (8 << 20) - offset)) + 1
            if try Self.compare(pool, handle, at: UInt64(offset), count: count) { served += 1 }
        }
        #expect(served > 150, "only \(served) of 200 reads were served without waiting")
        // Holes are reported exactly: a fresh volume is one hole.
        try pool.createVolume("empty", size: 1 << 20)
        var bytes = [UInt8](repeating: 0xAB, count: 10_000)
        let holes = try bytes.withUnsafeMutableBytes {
            try pool.readLeavingHoles(try pool.handle("empty"), at: 5, into: $0, waiting: .allowed)
        }
        #expect(holes == [0..<10_000])
        #expect(bytes.allSatisfy { $0 == 0xAB }, "holes are left as they were")
    }

    @Test func aHeldLockMakesANoWaitReadGiveUpAndChangeNothing() throws {
        let file = try FilePool()
        let pool = file.pool
        try pool.createVolume("vm", size: 1 << 20)
        let handle = try pool.handle("vm")
        try pool.write(handle, at: 0, [UInt8](repeating: 7, count: 8192))
        var bytes = [UInt8](repeating: 0, count: 8192)
        #expect(try Self.compare(pool, handle, at: 0, count: 8192))
        // A snapshot, rollback or delete holds the volume's gate exclusively.
        let gate = pool.gates.gate(handle.id)
        gate.lockExclusive()
        let duringGate = try bytes.withUnsafeMutableBytes { try pool.readLeavingHoles(handle, at: 0, into: $0, waiting: .never) }
        gate.unlock()
        #expect(duringGate == nil)
        // A mutation holds the metadata lock exclusively.
        let duringMeta = try pool.meta.withWriteLock {
            try bytes.withUnsafeMutableBytes { try pool.readLeavingHoles(handle, at: 0, into: $0, waiting: .never) }
        }
        #expect(duringMeta == nil)
        #expect(try pool.meta.withWriteLock { try pool.size(of: handle, waiting: .never) } == nil)
        #expect(try pool.size(of: handle, waiting: .never) == 1 << 20)
        #expect(bytes.allSatisfy { $0 == 0 } || bytes.allSatisfy { $0 == 7 })
        // Errors are still errors: a range past the end.
        #expect(throws: StrataError.self) {
            try bytes.withUnsafeMutableBytes { try pool.readLeavingHoles(handle, at: 1 << 20, into: $0, waiting: .never) }
        }
    }

    @Test func aDeviceThatCannotTellWhatIsCachedNeverServesWithoutWaiting() throws {
        let device = SimDevice(size: 1024 * 4096 + 256 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 1024)
        let pool = try Pool(device: device)
        try pool.createVolume("vm", size: 1 << 20)
        let handle = try pool.handle("vm")
        try pool.write(handle, at: 0, [UInt8](repeating: 9, count: 4096))
        var bytes = [UInt8](repeating: 0, count: 4096)
        #expect(try bytes.withUnsafeMutableBytes { try pool.readLeavingHoles(handle, at: 0, into: $0, waiting: .never) } == nil)
        // Holes alone need no device read, so they are served.
        #expect(try bytes.withUnsafeMutableBytes { try pool.readLeavingHoles(handle, at: 8192, into: $0, waiting: .never) } == [0..<4096])
    }
}
