// Mirrors: the leg state machine, the chunk arithmetic of copies, and the coordinator's verbs on
// real pool directories (add, connected writes, detach as one instant, change tracking, attach
// copying only changed chunks, a writable detached copy's writes discarded, a degraded leg
// resyncing by itself, refusals that change nothing, hidden split points invisible to users).

import Foundation
import StrataCore
@testable import StrataMirror
import StrataTesting
import Testing

@Suite struct LegStateMachineTests {
    @Test func everyEventInEveryState() throws {
        let expected: [LegState: [LegEvent: LegState?]] = [
            .syncing: [.copied: .connected, .failed: .degraded, .detach: nil, .attach: nil],
            .connected: [.failed: .degraded, .detach: .detached, .attach: nil],
            .degraded: [.failed: .degraded, .detach: nil, .attach: .resyncing],
            .detached: [.failed: .detached, .detach: nil, .attach: .resyncing],
            .resyncing: [.copied: .connected, .failed: .degraded, .detach: nil, .attach: nil],
        ]
        for (state, events) in expected {
            for (event, next) in events {
                var machine = LegStateMachine(state: state)
                if let next {
                    #expect(try machine.handle(event, leg: "leg1") == next, "\(state) + \(event)")
                    #expect(machine.state == next)
                } else {
                    #expect(throws: StrataError.self, "\(state) + \(event) must be refused") {
                        try machine.handle(event, leg: "leg1")
                    }
                    #expect(machine.state == state, "a refused \(event) changed \(state)")
                }
            }
        }
    }

    @Test func writesGoToTheLegOnlyWhileAttached() {
        #expect(LegState.allCases.filter(\.receivesWrites) == [.syncing, .connected, .resyncing])
    }

    @Test func refusalsNameTheStateAndTheFix() {
        var machine = LegStateMachine(state: .syncing)
        #expect {
            try machine.handle(.detach, leg: "leg1")
        } throws: { error in
            ((error as? StrataError)?.message ?? "").contains("wait until it is connected")
        }
    }

    @Test func splitPointNamesRoundTrip() {
        let name = MirrorLegRecord.splitPointName(leg: "leg1", generation: 42)
        #expect(name.hasPrefix(Pool.hiddenSnapshotPrefix))
        #expect(MirrorLegRecord.generation(ofSplitPoint: name, leg: "leg1") == 42)
        #expect(MirrorLegRecord.generation(ofSplitPoint: name, leg: "leg") == nil)
        #expect(MirrorLegRecord.generation(ofSplitPoint: "nightly", leg: "leg1") == nil)
    }

    @Test func chunkRangesCoverMergeAndClip() {
        let ranges = MirroredVolume.chunkRanges(
            [(0, 1), (4096, 4096), (8191, 2), (40960, 100), (1 << 40, 10)], chunkSize: 4096, size: 45056)
        #expect(ranges == [0..<3, 10..<11])
        #expect(MirroredVolume.bytes(of: 10..<12, chunkSize: 4096, size: 45056) == 4096)
    }
}

/// Two pool directories under a fresh temporary directory, removed at the end.
final class PoolPair {
    let root: String
    let primary: String
    let secondary: String
    let pool: Pool

    init(legPoolSize: UInt64 = 64 << 20) throws {
        self.root = NSTemporaryDirectory() + "strata-mirror-\(UUID().uuidString)"
        self.primary = self.root + "/primary"
        self.secondary = self.root + "/leg"
        try Pool.create(directory: self.primary, size: 64 << 20, chunkSize: 4096)
        try Pool.create(directory: self.secondary, size: legPoolSize, chunkSize: 4096)
        self.pool = try Pool.open(directory: self.primary)
    }

    deinit {
        try? self.pool.close()
        try? FileManager.default.removeItem(atPath: self.root)
    }
}

@Suite struct MirrorCoordinatorTests {
    static let volumeSize: UInt64 = 4 << 20
    static let block = 4096

    func pattern(_ seed: Int) -> [UInt8] { (0..<Self.block).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) } }

    func read(_ pool: Pool, _ name: String) throws -> [UInt8] {
        try pool.read(try pool.handle(name), at: 0, count: Int(Self.volumeSize))
    }

    func leg(_ coordinator: MirrorCoordinator, _ volume: String = "vm1") throws -> LocalPoolLeg {
        let runtime = try #require(coordinator.mirroredVolumeForTests(volume)?.legs.first)
        return try #require(runtime.with { $0.leg } as? LocalPoolLeg)
    }

    func status(_ coordinator: MirrorCoordinator) throws -> MirrorLegStatus {
        try #require(coordinator.status(volume: "vm1").first)
    }

    /// A pool pair with vm1 written in a few places, mirrored and connected.
    func connected() throws -> (PoolPair, MirrorCoordinator) {
        let pair = try PoolPair()
        try pair.pool.createVolume("vm1", size: Self.volumeSize)
        let handle = try pair.pool.handle("vm1")
        for block in [0, 3, 200, 1023] { try pair.pool.write(handle, at: UInt64(block * Self.block), self.pattern(block)) }
        let coordinator = try MirrorCoordinator.open(pool: pair.pool, directory: pair.primary) { _ in }
        let added = try coordinator.execute(
            .add(volume: "vm1", poolDirectory: pair.secondary, leg: nil, rate: nil, autoResync: true, timeoutMillis: nil))
        #expect(added.first?.state == .syncing)
        #expect(added.first?.bytesToResync == 4 * UInt64(Self.block))
        coordinator.runUntilIdle()
        #expect(try self.status(coordinator).state == .connected)
        return (pair, coordinator)
    }

    @Test func addCopiesTheVolumeThenMirrorsEveryWriteTrimAndZero() throws {
        let (pair, coordinator) = try self.connected()
        let handle = try pair.pool.handle("vm1")
        try pair.pool.write(handle, at: 5 * UInt64(Self.block) + 100, [UInt8](repeating: 0xEE, count: 9000))
        try pair.pool.trim(handle, at: 200 * UInt64(Self.block), length: UInt64(Self.block))
        try pair.pool.writeZeroes(handle, at: 10, length: 20, allowTrim: false)
        try pair.pool.writeAtomic(handle, at: 512 * UInt64(Self.block), self.pattern(77))
        try pair.pool.copy(from: handle, at: 0, to: handle, at: 700 * UInt64(Self.block), length: 8 * UInt64(Self.block))
        try pair.pool.flush()
        let leg = try self.leg(coordinator)
        #expect(try self.read(leg.pool, "vm1") == self.read(pair.pool, "vm1"))
        // The split points are hidden: not listed, not exported, refused to users; check accepts them.
        #expect(try pair.pool.listSnapshots(of: "vm1").isEmpty)
        #expect(try pair.pool.listVolumes().first?.snapshots == 0)
        let hidden = try pair.pool.hiddenSnapshots(of: "vm1")
        #expect(hidden.count == 1)
        #expect(!pair.pool.targets().contains { $0.name.contains(Pool.hiddenSnapshotPrefix) })
        #expect(throws: StrataError.self) { try pair.pool.deleteSnapshot("vm1", hidden[0]) }
        #expect(throws: StrataError.self) { try pair.pool.rollback("vm1", hidden[0]) }
        #expect(throws: StrataError.self) { try pair.pool.handle("vm1@\(hidden[0])") }
        #expect(throws: StrataError.self) { try pair.pool.createSnapshot("vm1", Pool.hiddenSnapshotPrefix + "x") }
        #expect(pair.pool.checkDurable().clean)
        #expect(leg.pool.checkDurable().clean)
    }

    @Test func detachIsOneInstantAndAttachCopiesOnlyTheChangedChunks() throws {
        let (pair, coordinator) = try self.connected()
        let handle = try pair.pool.handle("vm1")
        let atSplit = try self.read(pair.pool, "vm1")
        let detached = try coordinator.execute(.detach(volume: "vm1", leg: nil, as: "report", writable: false))
        #expect(detached.first?.state == .detached)
        #expect(detached.first?.splitAt != nil)
        // 1% of the volume's blocks changed after the split (some twice, one a trim).
        let changed = [1, 2, 3, 100, 101, 640, 1000, 1023, 7, 9]
        for (index, block) in changed.enumerated() {
            try pair.pool.write(handle, at: UInt64(block * Self.block), self.pattern(500 + index))
        }
        try pair.pool.write(handle, at: UInt64(2 * Self.block), self.pattern(9))
        try pair.pool.trim(handle, at: UInt64(200 * Self.block), length: UInt64(Self.block))
        try pair.pool.flush()
        let leg = try self.leg(coordinator)
        #expect(try self.read(leg.pool, "vm1") == atSplit, "the detached copy moved")
        let attached = try coordinator.execute(.attach(volume: "vm1", leg: nil, full: false, rate: nil))
        #expect(attached.first?.state == .resyncing)
        #expect(attached.first?.bytesToResync == UInt64((changed.count + 1) * Self.block))
        coordinator.runUntilIdle()
        let status = try self.status(coordinator)
        #expect(status.state == .connected)
        #expect(status.bytesResynced == UInt64((changed.count + 1) * Self.block))
        #expect(try self.read(leg.pool, "vm1") == self.read(pair.pool, "vm1"))
        // The copy's time is the finished copy's: above zero, and it no longer grows.
        let took = try #require(status.copySeconds)
        #expect(took > 0)
        usleep(20_000)
        #expect(try self.status(coordinator).copySeconds == took)
    }

    @Test func aWritableDetachedCopysWritesAreDiscardedAtAttach() throws {
        let (pair, coordinator) = try self.connected()
        _ = try coordinator.execute(.detach(volume: "vm1", leg: nil, as: nil, writable: true))
        let leg = try self.leg(coordinator)
        let copy = try leg.pool.handle("vm1")
        for block in [50, 51, 900] { try leg.pool.write(copy, at: UInt64(block * Self.block), self.pattern(-block)) }
        try pair.pool.write(try pair.pool.handle("vm1"), at: UInt64(60 * Self.block), self.pattern(60))
        _ = try coordinator.execute(.attach(volume: "vm1", leg: nil, full: false, rate: nil))
        coordinator.runUntilIdle()
        let status = try self.status(coordinator)
        #expect(status.state == .connected)
        #expect(status.bytesResynced == UInt64(4 * Self.block))
        #expect(try self.read(leg.pool, "vm1") == self.read(pair.pool, "vm1"))
    }

    @Test func fullAttachCopiesEverything() throws {
        let (pair, coordinator) = try self.connected()
        defer { withExtendedLifetime(pair) {} }
        _ = try coordinator.execute(.detach(volume: "vm1", leg: nil, as: nil, writable: false))
        let attached = try coordinator.execute(.attach(volume: "vm1", leg: nil, full: true, rate: nil))
        #expect(attached.first?.bytesToResync == Self.volumeSize)
        coordinator.runUntilIdle()
        #expect(try self.status(coordinator).bytesResynced == Self.volumeSize)
    }

    @Test func refusalsChangeNothingOnEitherSide() throws {
        let (pair, coordinator) = try self.connected()
        let before = try MirrorTable.load(directory: pair.primary)
        // Already mirrored to that pool; a leg name taken; a pool that is not empty; a snapshot.
        #expect(throws: StrataError.self) {
            try coordinator.execute(
                .add(volume: "vm1", poolDirectory: pair.secondary, leg: "b", rate: nil, autoResync: true, timeoutMillis: nil))
        }
        let other = pair.root + "/other"
        try Pool.create(directory: other, size: 16 << 20, chunkSize: 4096)
        do {
            let pool = try Pool.open(directory: other)
            try pool.createVolume("keep", size: 1 << 20)
            try pool.close()
        }
        #expect {
            try coordinator.execute(
                .add(volume: "vm1", poolDirectory: other, leg: "b", rate: nil, autoResync: true, timeoutMillis: nil))
        } throws: { error in ((error as? StrataError)?.message ?? "").contains("is not empty") }
        let small = pair.root + "/small"
        try Pool.create(directory: small, size: 1 << 20, chunkSize: 4096)
        try pair.pool.createVolume("big", size: 8 << 20)
        try pair.pool.write(try pair.pool.handle("big"), at: 0, [UInt8](repeating: 1, count: 4 << 20))
        #expect {
            try coordinator.execute(
                .add(volume: "big", poolDirectory: small, leg: nil, rate: nil, autoResync: true, timeoutMillis: nil))
        } throws: { error in ((error as? StrataError)?.message ?? "").contains("give a larger pool") }
        do {
            let pool = try Pool.open(directory: small)
            #expect(try pool.listVolumes().isEmpty)
            try pool.close()
        }
        #expect(!FileManager.default.fileExists(atPath: small + "/" + LegMarker.fileName))
        #expect(throws: StrataError.self) { try coordinator.execute(.attach(volume: "vm1", leg: nil, full: false, rate: nil)) }
        #expect(throws: StrataError.self) { try coordinator.execute(.detach(volume: "vm1", leg: "nope", as: nil, writable: false)) }
        #expect(try MirrorTable.load(directory: pair.primary) == before)
        #expect {
            try MirrorTable.load(directory: pair.primary).refuseIfMirrored("vm1", operation: "delete volume")
        } throws: { error in ((error as? StrataError)?.message ?? "").contains("strata mirror remove vm1") }
    }

    @Test func removeStopsMirroringAndDropsTheSplitPoints() throws {
        let (pair, coordinator) = try self.connected()
        let removed = try coordinator.execute(.remove(volume: "vm1", leg: nil))
        #expect(removed.count == 1)
        #expect(try pair.pool.hiddenSnapshots(of: "vm1").isEmpty)
        #expect(try MirrorTable.load(directory: pair.primary).legs.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: pair.secondary + "/" + LegMarker.fileName))
        // No tap any more: a write reaches the volume only.
        try pair.pool.write(try pair.pool.handle("vm1"), at: 0, self.pattern(1234))
        let reopened = try Pool.open(directory: pair.secondary)
        #expect(try reopened.hiddenSnapshots(of: "vm1").isEmpty)
        #expect(try reopened.read(try reopened.handle("vm1"), at: 0, count: Self.block) != self.pattern(1234))
        try reopened.close()
    }

    @Test func aDaemonRestartResyncsOnlyWhatChangedSinceTheNewestPair() throws {
        let (pair, coordinator) = try self.connected()
        let handle = try pair.pool.handle("vm1")
        for block in [11, 12, 13] { try pair.pool.write(handle, at: UInt64(block * Self.block), self.pattern(block + 1)) }
        try pair.pool.flush()
        // A crash: the legs are closed without the shutdown's last split point.
        for runtime in coordinator.mirroredVolumeForTests("vm1")?.legs ?? [] {
            runtime.with {
                $0.leg?.close()
                $0.leg = nil
            }
        }
        let restarted = try MirrorCoordinator.open(pool: pair.pool, directory: pair.primary) { _ in }
        #expect(try #require(restarted.status(volume: "vm1").first).state == .resyncing, "\(restarted.status(volume: "vm1"))")
        restarted.runUntilIdle()
        let status = try #require(restarted.status(volume: "vm1").first)
        #expect(status.state == .connected)
        #expect(status.bytesResynced == 3 * UInt64(Self.block))
        #expect(try self.read(try self.leg(restarted).pool, "vm1") == self.read(pair.pool, "vm1"))
        restarted.shutdown()
    }
}

extension MirrorCoordinator {
    func mirroredVolumeForTests(_ volume: String) -> MirroredVolume? {
        self.volumesForTests[volume]
    }
}
