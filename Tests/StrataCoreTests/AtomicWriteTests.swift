// Atomic writes across a crash (`Pool.writeAtomic`, the engine under WRITE ATOMIC(16)), in the
// style of CrashTests: random atomic writes (unaligned, spanning up to six chunks, each filling
// its range with its own byte so a mix is visible), snapshots and flushes, the device crashing
// after a random number of operations, and an image that keeps, drops or tears (per sector)
// every unsynced write. After reopening: `check` is clean, and the volume equals, byte for byte,
// the state of the last completed flush or of the flush in flight, so no atomic write is
// partly there. An ordinary write would fail this: its in-place part can be torn.

import Foundation
import StrataCore
import StrataTesting
import Testing

private final class AtomicRun {
    static let size: UInt64 = 256 << 10
    let seed: UInt64
    var random: SeededRandom
    let device: SimDevice
    let pool: Pool
    var current: [UInt8]
    var flushed: [UInt8]
    var attempted: [UInt8]?
    var log: [String] = []
    var tag: UInt8 = 0

    init(seed: UInt64) throws {
        self.seed = seed
        self.random = SeededRandom(seed: seed)
        self.device = SimDevice(size: 512 * 4096 + 1024 * 4096)
        self.device.discardZeroes = seed % 2 == 0
        try Pool.format(device: self.device, chunkSize: 4096, metadataPages: 512)
        self.pool = try Pool(device: self.device)
        try self.pool.createVolume("a", size: Self.size)
        // Start with every chunk mapped, so atomic writes replace data (not only fill holes).
        self.current = self.random.bytes(Int(Self.size))
        try self.pool.write(try self.pool.handle("a"), at: 0, self.current)
        try self.pool.flush()
        self.flushed = self.current
    }

    func failure(_ message: String) -> Comment {
        Comment(
            rawValue:
                "seed=\(self.seed): \(message)\nsteps: \(self.log.suffix(12).joined(separator: "; "))\nreplay: STRATA_SEED=\(self.seed) swift test --filter AtomicWriteTests"
        )
    }

    func runUntilCrash() {
        self.device.crash(afterOperations: 1 + self.random.next(below: 120))
        for _ in 0..<60 {
            do throws(StrataError) {
                switch self.random.next(below: 10) {
                case 0..<7: try self.atomicWrite(fua: self.random.next(below: 8) == 0)
                case 7: try self.pool.createSnapshot("a", "s\(self.log.count)")
                default:
                    self.log.append("flush")
                    self.attempted = self.current
                    try self.pool.flush()
                    self.attempted = nil
                    self.flushed = self.current
                }
            } catch {
                self.log.append("failed: \(error.code)")
                return
            }
        }
    }

    func atomicWrite(fua: Bool) throws(StrataError) {
        self.tag &+= 1
        let sectors = Int(Self.size / 512)
        let count = 1 + self.random.next(below: 48)
        let start = self.random.next(below: sectors - count)
        let bytes = [UInt8](repeating: self.tag, count: count * 512)
        self.log.append("atomic \(start)+\(count)\(fua ? " fua" : "")")
        var next = self.current
        next.replaceSubrange((start * 512)..<((start + count) * 512), with: bytes)
        if fua { self.attempted = next }
        try self.pool.writeAtomic(try self.pool.handle("a"), at: UInt64(start * 512), bytes, fua: fua)
        self.current = next
        if fua {
            self.attempted = nil
            self.flushed = self.current
        }
    }

    func verifyAfterCrash() throws -> Comment? {
        var generator = self.random
        let image = self.device.crashImage(mode: .random, using: &generator)
        let report = Pool.check(device: image)
        guard report.clean else {
            return self.failure("check after crash: \(report.problems.prefix(4).map(\.description).joined(separator: "; "))")
        }
        let pool = try Pool(device: image)
        let bytes = try pool.read(try pool.handle("a"), at: 0, count: Int(Self.size))
        if bytes == self.flushed || bytes == self.attempted { return nil }
        var sector = 0
        while sector * 512 < bytes.count && bytes[sector * 512] == self.flushed[sector * 512] { sector += 1 }
        return self.failure("after the crash the volume is neither the flushed state nor the in-flight one (first difference near sector \(sector))")
    }
}

@Suite struct AtomicWriteTests {
    @Test func atomicWritesAreWholeOrAbsentAfterACrash() throws {
        let seeds = SimSeeds.list(count: 600, salt: 0xA70_0016)
        var crashedInFlush = 0
        var lostUnflushed = 0
        for seed in seeds {
            let run = try AtomicRun(seed: seed)
            run.runUntilCrash()
            if run.attempted != nil { crashedInFlush += 1 }
            if run.current != run.flushed { lostUnflushed += 1 }
            if let problem = try run.verifyAfterCrash() {
                Issue.record(problem)
                return
            }
        }
        if seeds.count > 1 {
            // The crash points must include commits cut short and atomic writes never flushed.
            #expect(crashedInFlush > seeds.count / 20, "only \(crashedInFlush) crashes hit a flush")
            #expect(lostUnflushed > seeds.count / 4, "only \(lostUnflushed) runs crashed with unflushed atomic writes")
        }
    }

    @Test func anInterruptedAtomicWriteChangesNothing() throws {
        // The device fails on the atomic write's data writes: nothing of it may show, and the
        // chunks it took are free again.
        let device = SimDevice(size: 512 * 4096 + 256 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 512)
        let pool = try Pool(device: device)
        try pool.createVolume("a", size: 64 << 10)
        let handle = try pool.handle("a")
        let old = [UInt8](repeating: 1, count: 64 << 10)
        try pool.write(handle, at: 0, old)
        try pool.flush()
        let used = pool.status().dataUsedBytes
        device.crash(afterOperations: 3)
        #expect(throws: StrataError.self) {
            try pool.writeAtomic(handle, at: 100, [UInt8](repeating: 2, count: 40 << 10))
        }
        #expect(try pool.read(handle, at: 0, count: 64 << 10) == old)
        #expect(pool.status().dataUsedBytes == used)
    }
}
