// Acknowledged writes against snapshots, flushes and the commit timer, racing on many threads,
// then a power loss (SimDevice's crash image) taken while they still run.
//
// The story: a kill -9 run of the daemon (December 2026) reported an NBD write acknowledged
// before `snapshot create` began, and the snapshot's command returning, yet neither the volume
// nor the snapshot held the write after the restart. The pool it left answered the question:
// its last commit (generation 11, the one adding the snapshot) had the same data space map root
// page and the same tree for the volume as generation 10, so the process that wrote it had
// never seen the two acknowledged, unflushed writes. The CLI had found no daemon (the harness
// had already killed it and went on with the load) and, as documented, opened the pool itself
// at its last durable commit, where those writes legitimately did not exist. The harness
// counted the command as the daemon's. This test asks the engine the question the harness
// meant to ask, with nothing but the engine in the way:
//
// Four writers (each owns every fourth 4 KiB block, so every 16 KiB chunk has blocks of all
// four, and remaps, copy-on-write and in-place writes interleave on one chunk) write, FUA-write,
// trim and flush; one thread creates snapshots the way the daemon does (`createSnapshot`, then
// `flush`) and deletes old ones (freeing chunks that commits punch and first writes reuse
// without zero-filling them); one thread runs `commitIfNeeded` as the daemon's commit timer
// does. A seeded moment later the crash image is taken (synced writes, each unsynced one lost,
// kept or torn per sector). A logical clock (one atomic counter) orders every issue and
// acknowledgement against the image. After reopening with no repair:
// - `check` is clean;
// - every block holds, per sector, the newest version made durable before the image (its FUA
//   acknowledged, or a flush issued after its acknowledgement and acknowledged itself), or a
//   version issued after that one before the image;
// - every snapshot whose create-and-flush returned before the image, and whose delete had not
//   begun, exists; none exists that was never begun; and each holds, block by block, a version
//   acknowledged no earlier than the last one before its create began and issued before it
//   returned, whole (the volume's gate keeps a write and a snapshot apart).

import Foundation
import StrataCore
import StrataTesting
import Synchronization
import Testing

@Suite struct SnapshotDurabilityTests {
    static let block = 4096
    static let writers = 4
    static let blocks = 64

    @Test func acknowledgedWritesSurviveRacingSnapshotsFlushesAndTheTimer() throws {
        var totals = RaceStatistics()
        for seed in SimSeeds.list(count: 24, salt: 0x5DA7_D0AB_1E00_0001) {
            let statistics = try Self.run(seed: seed)
            totals.add(statistics)
        }
        // The hard cases were reached: snapshots checked after the crash, durable versions
        // read back, and unflushed writes both lost and kept by crash images.
        #expect(totals.snapshotsVerified > 0, "no snapshot was checked after a crash: \(totals)")
        #expect(totals.durableBlocks > 0, "no block had a durable version to check: \(totals)")
        #expect(totals.unflushedLost > 0, "no crash image lost an unflushed write: \(totals)")
        #expect(totals.unflushedKept > 0, "no crash image kept an unflushed write: \(totals)")
        #expect(totals.timerCommits > 0, "the commit timer never committed: \(totals)")
    }

    /// One seeded race and its crash; returns what it checked.
    static func run(seed: UInt64) throws -> RaceStatistics {
        let device = SimDevice(size: 256 * 4096 + 160 * 16384)
        // A device that punches holes: the open punches the free chunks, so first writes into
        // fresh chunks skip zero-filling them (the `freeChunksAreZero` path).
        device.discardZeroes = true
        try Pool.format(device: device, chunkSize: 16384, metadataPages: 256)
        let pool = try Pool(device: device)
        try pool.createVolume("v", size: UInt64(Self.blocks * Self.block))
        try pool.flush()
        let handle = try pool.handle("v")
        let race = RaceRecord()
        let done = DispatchGroup()
        for writer in 0..<Self.writers {
            Self.spawn(done) {
                Self.writerLoop(writer: writer, seed: seed, pool: pool, handle: handle, race: race)
            }
        }
        Self.spawn(done) { Self.snapshotLoop(seed: seed, pool: pool, race: race) }
        Self.spawn(done) { Self.timerLoop(pool: pool, race: race) }

        var random = SeededRandom(seed: seed)
        // The crash comes after a seeded number of writer operations, snapshots and timer commits.
        let operationsBeforeCrash = 40 + random.next(below: 600)
        let snapshotsBeforeCrash = 1 + random.next(below: 4)
        let timerCommitsBeforeCrash = 1 + random.next(below: 3)
        // Bounded (two seconds), so a thread that cannot make progress ends the race, not the run.
        var waits = 0
        while !race.failed, waits < 20_000,
            race.operations.load(ordering: .sequentiallyConsistent) < operationsBeforeCrash
                || race.snapshotsTaken.load(ordering: .sequentiallyConsistent) < snapshotsBeforeCrash
                || race.timerCommits.load(ordering: .sequentiallyConsistent) < timerCommitsBeforeCrash
        {
            waits += 1
            usleep(100)
        }
        let before = race.tick()
        let image = device.crashImage(mode: .random, using: &random)
        let after = race.tick()
        race.stop.store(true, ordering: .sequentiallyConsistent)
        done.wait()
        #expect(race.failures.isEmpty, "seed=\(seed): \(race.failures.prefix(3))")

        let reopened = try Pool(device: image)
        let report = Pool.check(device: image)
        #expect(report.clean, "seed=\(seed): check after the crash: \(report.problems.prefix(3))")
        var statistics = RaceStatistics()
        statistics.timerCommits = race.timerCommits.load(ordering: .sequentiallyConsistent)
        let history = race.history()
        try Self.verifyVolume(reopened, history: history, before: before, after: after, seed: seed, statistics: &statistics)
        try Self.verifySnapshots(reopened, history: history, before: before, after: after, seed: seed, statistics: &statistics)
        return statistics
    }

    // MARK: Load

    /// Runs `body` on a thread of its own: the global queue may run only as many blocking items
    /// as there are cores, and the snapshot and timer threads must run beside the writers.
    private static func spawn(_ group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
        group.enter()
        Thread {
            body()
            group.leave()
        }.start()
    }

    private static func writerLoop(writer: Int, seed: UInt64, pool: Pool, handle: VolumeHandle, race: RaceRecord) {
        var random = SeededRandom(seed: seed &* 31 &+ UInt64(writer) &+ 1)
        var version = 0
        while !race.stop.load(ordering: .sequentiallyConsistent) {
            let choice = random.next(below: 100)
            let block = writer + Self.writers * random.next(below: Self.blocks / Self.writers)
            do throws(StrataError) {
                if choice < 10 {
                    let issue = race.tick()
                    try pool.flush()
                    race.record(flush: (issue, race.tick()))
                } else if choice < 20 {
                    let issue = race.tick()
                    race.record(writer: writer, RaceWrite(block: block, version: 0, issue: issue, ack: nil, fua: false))
                    try pool.trim(handle, at: UInt64(block * Self.block), length: UInt64(Self.block))
                    race.acknowledge(writer: writer, at: race.tick())
                } else {
                    version += 1
                    let fua = random.next(below: 8) == 0
                    let issue = race.tick()
                    let stamp = Self.stamp(block: block, version: version, writer: writer)
                    race.record(writer: writer, RaceWrite(block: block, version: Self.versionID(writer, version), issue: issue, ack: nil, fua: fua))
                    try pool.write(handle, at: UInt64(block * Self.block), stamp, fua: fua)
                    race.acknowledge(writer: writer, at: race.tick())
                }
            } catch {
                race.fail("writer \(writer): \(error)")
                return
            }
            race.operations.add(1, ordering: .sequentiallyConsistent)
        }
    }

    private static func snapshotLoop(seed: UInt64, pool: Pool, race: RaceRecord) {
        var random = SeededRandom(seed: seed ^ 0xA5A5)
        var live: [String] = []
        var counter = 0
        while !race.stop.load(ordering: .sequentiallyConsistent) {
            do throws(StrataError) {
                if live.count > 3 {
                    let name = live.removeFirst()
                    let issue = race.tick()
                    race.record(delete: name, issue: issue)
                    try pool.deleteSnapshot("v", name)
                    try pool.flush()
                    race.record(flush: (issue, race.tick()))
                } else {
                    counter += 1
                    let name = "s\(counter)"
                    let issue = race.tick()
                    race.record(snapshot: RaceSnapshot(name: name, issue: issue, taken: nil, ack: nil))
                    try pool.createSnapshot("v", name)
                    let taken = race.tick()
                    try pool.flush()
                    race.completeSnapshot(name, taken: taken, ack: race.tick())
                    live.append(name)
                }
            } catch {
                race.fail("snapshots: \(error)")
                return
            }
            usleep(UInt32(random.next(below: 400)))
        }
    }

    private static func timerLoop(pool: Pool, race: RaceRecord) {
        while !race.stop.load(ordering: .sequentiallyConsistent) {
            let generation = pool.committedGeneration
            do throws(StrataError) {
                try pool.commitIfNeeded()
            } catch {
                race.fail("commit timer: \(error)")
                return
            }
            if pool.committedGeneration != generation { race.timerCommits.add(1, ordering: .sequentiallyConsistent) }
            usleep(150)
        }
    }

    // MARK: Checks

    private static func verifyVolume(
        _ pool: Pool, history: RaceHistory, before: UInt64, after: UInt64, seed: UInt64, statistics: inout RaceStatistics
    ) throws {
        let handle = try pool.handle("v")
        let bytes = try pool.read(handle, at: 0, count: Self.blocks * Self.block)
        for block in 0..<Self.blocks {
            let writes = history.writes[block] ?? []
            // The newest version made durable before the image; writes to one block are one
            // writer's, so their order is the writer's.
            var floor = -1
            for (index, write) in writes.enumerated() where history.durable(write, before: before) { floor = index }
            let allowed = (floor >= 0 ? [writes[floor]] : []) + writes[(floor + 1)...].filter { $0.issue < after }
            var versions = allowed.map { Self.contents(block: block, versionID: $0.version) }
            if floor < 0 { versions.insert([UInt8](repeating: 0, count: Self.block), at: 0) }
            let actual = Array(bytes[(block * Self.block)..<((block + 1) * Self.block)])
            for sector in stride(from: 0, to: Self.block, by: 512) {
                let piece = actual[sector..<(sector + 512)]
                #expect(
                    versions.contains { $0[sector..<(sector + 512)] == piece },
                    "seed=\(seed): block \(block) sector \(sector / 512) holds none of the allowed versions \(allowed.map(\.version)) (durable floor index \(floor)); replay: STRATA_SEED=\(seed) swift test --filter SnapshotDurabilityTests"
                )
            }
            if floor >= 0 { statistics.durableBlocks += 1 }
            let unflushed = writes[(floor + 1)...].filter { $0.ack != nil && $0.ack! < before }
            if let newest = unflushed.last {
                if actual == Self.contents(block: block, versionID: newest.version) {
                    statistics.unflushedKept += 1
                } else {
                    statistics.unflushedLost += 1
                }
            }
        }
    }

    private static func verifySnapshots(
        _ pool: Pool, history: RaceHistory, before: UInt64, after: UInt64, seed: UInt64, statistics: inout RaceStatistics
    ) throws {
        let present = Set(try pool.listSnapshots(of: "v").map(\.name))
        for snapshot in history.snapshots {
            let deleteIssue = history.deletes[snapshot.name]
            let mustExist = snapshot.ack.map { $0 < before } == true && (deleteIssue.map { $0 >= after } ?? true)
            let mayExist = snapshot.issue < after
            if mustExist {
                #expect(present.contains(snapshot.name), "seed=\(seed): snapshot \(snapshot.name) returned before the crash but is gone")
            }
            if !mayExist {
                #expect(!present.contains(snapshot.name), "seed=\(seed): snapshot \(snapshot.name) exists though begun after the crash")
            }
            guard present.contains(snapshot.name) else { continue }
            let handle = try pool.handle("v@\(snapshot.name)")
            let bytes = try pool.read(handle, at: 0, count: Self.blocks * Self.block)
            let end = snapshot.taken ?? after
            for block in 0..<Self.blocks {
                let writes = history.writes[block] ?? []
                let low = writes.lastIndex { $0.ack.map { $0 < snapshot.issue } == true } ?? -1
                let candidates = writes.enumerated().filter { $0.offset >= low && $0.element.issue < end }
                var versions = candidates.map { Self.contents(block: block, versionID: $0.element.version) }
                if low < 0 { versions.append([UInt8](repeating: 0, count: Self.block)) }
                let actual = Array(bytes[(block * Self.block)..<((block + 1) * Self.block)])
                #expect(
                    versions.contains(actual),
                    "seed=\(seed): snapshot \(snapshot.name) block \(block) holds none of the versions \(candidates.map(\.element.version)) acknowledged or in flight around its create; replay: STRATA_SEED=\(seed) swift test --filter SnapshotDurabilityTests"
                )
            }
            statistics.snapshotsVerified += 1
        }
        let known = Set(history.snapshots.map(\.name))
        #expect(present.isSubset(of: known), "seed=\(seed): unknown snapshots \(present.subtracting(known))")
    }

    // MARK: Contents

    /// A version id packs the writer and its own counter, so versions never collide; 0 is a trim.
    static func versionID(_ writer: Int, _ version: Int) -> Int { version * Self.writers + writer + 1 }

    static func stamp(block: Int, version: Int, writer: Int) -> [UInt8] {
        Self.contents(block: block, versionID: Self.versionID(writer, version))
    }

    static func contents(block: Int, versionID: Int) -> [UInt8] {
        guard versionID != 0 else { return [UInt8](repeating: 0, count: Self.block) }
        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: versionID &* 7 &+ block), count: Self.block)
        for sector in stride(from: 0, to: Self.block, by: 512) {
            withUnsafeBytes(of: UInt64(block).littleEndian) { bytes.replaceSubrange(sector..<(sector + 8), with: $0) }
            withUnsafeBytes(of: UInt64(versionID).littleEndian) { bytes.replaceSubrange((sector + 8)..<(sector + 16), with: $0) }
        }
        return bytes
    }
}

/// What one race checked, summed over seeds.
struct RaceStatistics: CustomStringConvertible {
    var snapshotsVerified = 0
    var durableBlocks = 0
    var unflushedKept = 0
    var unflushedLost = 0
    var timerCommits = 0

    mutating func add(_ other: RaceStatistics) {
        self.snapshotsVerified += other.snapshotsVerified
        self.durableBlocks += other.durableBlocks
        self.unflushedKept += other.unflushedKept
        self.unflushedLost += other.unflushedLost
        self.timerCommits += other.timerCommits
    }

    var description: String {
        "snapshots verified \(self.snapshotsVerified), durable blocks \(self.durableBlocks), unflushed kept \(self.unflushedKept), unflushed lost \(self.unflushedLost), timer commits \(self.timerCommits)"
    }
}

struct RaceWrite {
    let block: Int
    let version: Int
    let issue: UInt64
    var ack: UInt64?
    let fua: Bool
}

struct RaceSnapshot {
    let name: String
    let issue: UInt64
    var taken: UInt64?
    var ack: UInt64?
}

/// The race's history once every thread stopped.
struct RaceHistory {
    var writes: [Int: [RaceWrite]] = [:]
    var flushes: [(issue: UInt64, ack: UInt64)] = []
    var snapshots: [RaceSnapshot] = []
    var deletes: [String: UInt64] = [:]

    /// Whether `write` was durable before tick `before`: its FUA acknowledged, or a flush
    /// issued after its acknowledgement acknowledged.
    func durable(_ write: RaceWrite, before: UInt64) -> Bool {
        guard let ack = write.ack, ack < before else { return false }
        if write.fua { return true }
        return self.flushes.contains { $0.issue > ack && $0.ack < before }
    }
}

/// The threads' shared record, guarded by `lock`; the clock and counters are atomics.
final class RaceRecord: @unchecked Sendable {
    let lock = NSLock()
    let clock = Atomic<UInt64>(0)
    let stop = Atomic<Bool>(false)
    let operations = Atomic<Int>(0)
    let timerCommits = Atomic<Int>(0)
    let snapshotsTaken = Atomic<Int>(0)
    private var perWriter: [[RaceWrite]] = Array(repeating: [], count: SnapshotDurabilityTests.writers)
    private var flushes: [(issue: UInt64, ack: UInt64)] = []
    private var snapshots: [RaceSnapshot] = []
    private var deletes: [String: UInt64] = [:]
    private(set) var failures: [String] = []

    var failed: Bool { self.lock.withLock { !self.failures.isEmpty } }

    func tick() -> UInt64 { self.clock.add(1, ordering: .sequentiallyConsistent).newValue }

    func record(writer: Int, _ write: RaceWrite) { self.lock.withLock { self.perWriter[writer].append(write) } }

    func acknowledge(writer: Int, at tick: UInt64) {
        self.lock.withLock { self.perWriter[writer][self.perWriter[writer].count - 1].ack = tick }
    }

    func record(flush: (UInt64, UInt64)) { self.lock.withLock { self.flushes.append(flush) } }

    func record(snapshot: RaceSnapshot) { self.lock.withLock { self.snapshots.append(snapshot) } }

    func completeSnapshot(_ name: String, taken: UInt64, ack: UInt64) {
        self.lock.withLock {
            guard let index = self.snapshots.lastIndex(where: { $0.name == name }) else { return }
            self.snapshots[index].taken = taken
            self.snapshots[index].ack = ack
            // The daemon's flush after the create: it covers every write acknowledged before it.
            self.flushes.append((taken, ack))
        }
        self.snapshotsTaken.add(1, ordering: .sequentiallyConsistent)
    }

    func record(delete name: String, issue: UInt64) { self.lock.withLock { self.deletes[name] = issue } }

    func fail(_ message: String) { self.lock.withLock { self.failures.append(message) } }

    func history() -> RaceHistory {
        self.lock.withLock {
            var history = RaceHistory(flushes: self.flushes, snapshots: self.snapshots, deletes: self.deletes)
            for writes in self.perWriter {
                for write in writes { history.writes[write.block, default: []].append(write) }
            }
            return history
        }
    }
}
