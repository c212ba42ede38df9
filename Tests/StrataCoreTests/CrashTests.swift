// Crash simulation (SQLite's test6.c, redb's CrashBackend): run random writes, trims,
// snapshots and flushes, crash the device after a random number of operations, and build the
// image a power loss could leave: every synced write, plus each unsynced one lost, kept, or
// torn at 512-byte sector granularity. Then, with no repair step:
// - `check` is clean;
// - every sector not written since the last completed flush holds its flushed bytes, and every
//   other sector holds its flushed bytes or bytes written to it since;
// - the snapshots are exactly those of the last completed flush, or of the flush in progress
//   when the crash hit, and each holds exactly its content.

import Foundation
import StrataCore
import StrataTesting
import Testing

private struct CrashState {
    var volumes: [String: [UInt64: [UInt8]]] = [:]
    var snapshots: [String: [UInt64: [UInt8]]] = [:]
}

private final class CrashRun {
    static let sector = 512
    let seed: UInt64
    var random: SeededRandom
    let device: SimDevice
    let pool: Pool
    let sizes: [String: UInt64] = ["a": 256 << 10, "b": 512 << 10]
    var current = CrashState()
    var flushed = CrashState()
    var attempted: CrashState?
    /// Sector contents written since the last completed flush, per volume.
    var candidates: [String: [UInt64: [[UInt8]]]] = [:]
    var snapshotCounter = 0
    var log: [String] = []

    init(seed: UInt64) throws {
        self.seed = seed
        self.random = SeededRandom(seed: seed)
        self.device = SimDevice(size: 512 * 4096 + 1024 * 4096)
        self.device.discardZeroes = seed % 2 == 0
        try Pool.format(device: self.device, chunkSize: 16384, metadataPages: 512)
        self.pool = try Pool(device: self.device)
        for (name, size) in self.sizes {
            try self.pool.createVolume(name, size: size)
            self.current.volumes[name] = [:]
        }
        try self.pool.flush()
        self.flushed = self.current
    }

    func failure(_ message: String) -> Comment {
        Comment(
            rawValue:
                "seed=\(self.seed): \(message)\nsteps: \(self.log.suffix(12).joined(separator: "; "))\nreplay: STRATA_SEED=\(self.seed) swift test --filter CrashTests"
        )
    }

    func completedFlush() {
        self.flushed = self.current
        self.candidates.removeAll()
    }

    /// Runs random operations until the device fails or the budget ends.
    func runUntilCrash() {
        self.device.crash(afterOperations: 1 + self.random.next(below: 300))
        for _ in 0..<80 {
            let choice = self.random.next(below: 100)
            do throws(StrataError) {
                switch choice {
                case 0..<50: try self.write(fua: self.random.next(below: 10) == 0)
                case 50..<60: try self.trim()
                case 60..<72: try self.snapshot()
                case 72..<80: try self.deleteSnapshot()
                default:
                    self.log.append("flush")
                    self.attempted = self.current
                    try self.pool.flush()
                    self.attempted = nil
                    self.completedFlush()
                }
            } catch {
                self.log.append("failed: \(error.code)")
                return
            }
        }
    }

    func write(fua: Bool) throws(StrataError) {
        let name = self.random.next(below: 2) == 0 ? "a" : "b"
        let sectors = self.sizes[name]! / UInt64(Self.sector)
        let start = UInt64(self.random.next(below: Int(sectors) - 16))
        let count = 1 + self.random.next(below: 16)
        let bytes = self.random.bytes(count * Self.sector)
        self.log.append("write \(name) \(start)+\(count)\(fua ? " fua" : "")")
        self.note(name, start: start, bytes: bytes)
        if fua { self.attempted = self.current }
        try self.pool.write(try self.pool.handle(name), at: start * UInt64(Self.sector), bytes, fua: fua)
        if fua {
            self.attempted = nil
            self.completedFlush()
        }
    }

    func trim() throws(StrataError) {
        let name = self.random.next(below: 2) == 0 ? "a" : "b"
        let chunks = self.sizes[name]! / 4096
        let first = UInt64(self.random.next(below: Int(chunks) - 4))
        let count = 1 + self.random.next(below: 4)
        self.log.append("trim \(name) chunk \(first)+\(count)")
        self.note(name, start: first * 8, bytes: [UInt8](repeating: 0, count: count * 4096))
        try self.pool.trim(try self.pool.handle(name), at: first * 4096, length: UInt64(count) * 4096)
    }

    /// Records a write (applied or not yet) in the model and as a candidate per sector.
    func note(_ name: String, start: UInt64, bytes: [UInt8]) {
        for index in 0..<(bytes.count / Self.sector) {
            let sector = Array(bytes[(index * Self.sector)..<((index + 1) * Self.sector)])
            let key = start + UInt64(index)
            self.candidates[name, default: [:]][key, default: []].append(sector)
            self.current.volumes[name]![key] = sector.allSatisfy { $0 == 0 } ? nil : sector
        }
    }

    func snapshot() throws(StrataError) {
        let name = self.random.next(below: 2) == 0 ? "a" : "b"
        self.snapshotCounter += 1
        let snapshot = "s\(self.snapshotCounter)"
        self.log.append("snapshot \(name)@\(snapshot)")
        try self.pool.createSnapshot(name, snapshot)
        self.current.snapshots["\(name)@\(snapshot)"] = self.current.volumes[name]!
    }

    func deleteSnapshot() throws(StrataError) {
        guard let target = self.current.snapshots.keys.sorted().randomElement(using: &self.random) else { return }
        self.log.append("delete \(target)")
        let (volume, snapshot) = Names.split(target)
        try self.pool.deleteSnapshot(volume, snapshot!)
        self.current.snapshots[target] = nil
    }

    /// Crashes, reopens and verifies; returns the first violation.
    func verifyAfterCrash() throws -> Comment? {
        var generator = self.random
        let image = self.device.crashImage(mode: .random, using: &generator)
        let report = Pool.check(device: image)
        guard report.clean else {
            return self.failure("check after crash: \(report.problems.prefix(4).map(\.description).joined(separator: "; "))")
        }
        let pool = try Pool(device: image)
        let names = Set(try pool.listSnapshots().map { "\($0.volume)@\($0.name)" })
        let allowed = [self.flushed] + (self.attempted.map { [$0] } ?? [])
        guard let state = allowed.first(where: { Set($0.snapshots.keys) == names }) else {
            return self.failure(
                "snapshots after crash \(names.sorted()) are neither the flushed \(self.flushed.snapshots.keys.sorted()) nor the in-flight set")
        }
        for (target, content) in state.snapshots {
            let handle = try pool.handle(target)
            let volume = Names.split(target).volume
            let bytes = try pool.read(handle, at: 0, count: Int(self.sizes[volume]!))
            for sector in 0..<(bytes.count / Self.sector) {
                let actual = Array(bytes[(sector * Self.sector)..<((sector + 1) * Self.sector)])
                let expected = content[UInt64(sector)] ?? [UInt8](repeating: 0, count: Self.sector)
                if actual != expected { return self.failure("snapshot \(target) sector \(sector) lost its content") }
            }
        }
        for (name, size) in self.sizes {
            let bytes = try pool.read(try pool.handle(name), at: 0, count: Int(size))
            for sector in 0..<(bytes.count / Self.sector) {
                let actual = Array(bytes[(sector * Self.sector)..<((sector + 1) * Self.sector)])
                let durable = self.flushed.volumes[name]![UInt64(sector)] ?? [UInt8](repeating: 0, count: Self.sector)
                if actual == durable { continue }
                let later = self.candidates[name]?[UInt64(sector)] ?? []
                if later.contains(actual) { continue }
                return self.failure(
                    later.isEmpty
                        ? "volume \(name) sector \(sector): flushed write lost"
                        : "volume \(name) sector \(sector): bytes never written there")
            }
        }
        return nil
    }
}

@Suite struct CrashTests {
    @Test func crashAtAnyPointKeepsFlushedWrites() throws {
        let seeds = SimSeeds.list(count: 1000, salt: 0xC4A5_0001)
        var crashedInFlush = 0
        for seed in seeds {
            let run = try CrashRun(seed: seed)
            run.runUntilCrash()
            if run.attempted != nil { crashedInFlush += 1 }
            if let problem = try run.verifyAfterCrash() {
                Issue.record(problem)
                return
            }
        }
        if seeds.count > 1 {
            // The crash points must include commits cut short, not only crashes between them.
            #expect(crashedInFlush > seeds.count / 20, "only \(crashedInFlush) crashes hit a flush")
        }
    }
}
