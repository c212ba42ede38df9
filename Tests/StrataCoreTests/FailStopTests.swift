// A failed sync fails the pool, and `check` says so (issue 13, defect 2).
//
// The bug: `checkDurable` (what `strata check` runs through the daemon) ignored a failed flush
// and then checked the last durable commit, which a failed sync leaves intact, so it printed
// "clean" while writes the clients had been told were flushed were gone. After a failed fsync
// the kernel may already have dropped the dirty pages, so the pool must stop: read-only with its
// reason kept, the sync never retried, and `check` reporting the failure.
//
// `SimDevice.failNextSync` fails exactly one sync and then works again, so a pool that retried
// the sync would see it succeed: each test proves there was no retry by a later flush failing.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct FailStopTests {
    /// Where the failing sync happens: in a commit that writes metadata pages, or in the sync a
    /// flush issues for in-place data writes alone (no metadata changed).
    enum FailingSync: CaseIterable, Sendable {
        case metadataCommit, dataOnlyFlush
    }

    /// A pool with vm1 written and flushed, then a write the next flush must make durable.
    func poolWithPendingWrite(_ kind: FailingSync) throws -> (SimDevice, Pool, VolumeHandle) {
        let (device, pool) = try SimDevice.formattedPool(metadataPages: 256, dataBytes: 1 << 20)
        try pool.createVolume("vm1", size: 64 * 4096)
        let handle = try pool.handle("vm1")
        try pool.write(handle, at: 0, [UInt8](repeating: 1, count: 4096))
        try pool.flush()
        try self.write(kind, pool, handle, round: 1)
        return (device, pool, handle)
    }

    /// A write of the kind the next flush is to fail on.
    func write(_ kind: FailingSync, _ pool: Pool, _ handle: VolumeHandle, round: Int) throws {
        let bytes = [UInt8](repeating: UInt8(round + 1), count: 4096)
        switch kind {
        case .metadataCommit:
            // A chunk never written before: the write maps it, so the flush commits metadata.
            try pool.write(handle, at: UInt64(8 * round) * 4096, bytes)
        case .dataOnlyFlush:
            // The chunk is the volume's own since the last commit: overwritten in place.
            try pool.write(handle, at: 0, bytes)
        }
        let committing = pool.meta.withReadLock { pool.metadataChanged }
        #expect(committing == (kind == .metadataCommit), "the write did not set up a \(kind) flush")
    }

    @Test(arguments: FailingSync.allCases)
    func aFailedSyncFailsThePoolForGood(_ kind: FailingSync) throws {
        let (device, pool, handle) = try self.poolWithPendingWrite(kind)
        device.failNextSync()
        let first = #expect(throws: StrataError.self) { try pool.flush() }
        #expect(first?.code == .failed)
        #expect(first?.message.contains("sync failed") == true, "\(first?.message ?? "")")
        #expect(device.syncsFailed == 1)

        // Never retried: the device works again, so only a pool that remembers fails here.
        let syncsBefore = device.syncs
        let again = #expect(throws: StrataError.self) { try pool.flush() }
        #expect(again?.code == .failed)
        #expect(again?.message.contains("sync failed") == true, "the reason is kept: \(again?.message ?? "")")
        #expect(device.syncs == syncsBefore, "the failed sync was retried")
        let write = #expect(throws: StrataError.self) {
            try pool.write(handle, at: 4096, [UInt8](repeating: 4, count: 4096))
        }
        #expect(write?.code == .failed)
        let create = #expect(throws: StrataError.self) { try pool.createVolume("vm2", size: 4096) }
        #expect(create?.code == .failed)
        // Reads go on (fail-stop is read-only, not dead).
        #expect(try pool.read(handle, at: 0, count: 4096).count == 4096)
    }

    @Test(arguments: FailingSync.allCases)
    func checkReportsAFailedSync(_ kind: FailingSync) throws {
        let (device, pool, _) = try self.poolWithPendingWrite(kind)
        let before = pool.checkDurable()
        #expect(before.clean, "\(before.problems)")
        #expect(before.failure == nil)

        try self.write(kind, pool, try pool.handle("vm1"), round: 2)
        device.failNextSync()
        let report = pool.checkDurable()
        #expect(!report.clean, "check said clean after a failed sync")
        let failure = try #require(report.failure, "the report does not carry the failure")
        #expect(failure.contains("sync failed"), "\(failure)")
        #expect(failure.contains("read-only until reopened"), "\(failure)")
        // The last durable commit itself is intact, and the report still says what it holds.
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.volumes == 1)

        // Asked again, it still says failed (the failure is kept, the sync not retried).
        let later = pool.checkDurable()
        #expect(!later.clean)
        #expect(later.failure?.contains("sync failed") == true, "\(later.failure ?? "nil")")
        // The JSON the control socket carries keeps the failure.
        let decoded = try JSONDecoder().decode(CheckReport.self, from: JSONEncoder().encode(later))
        #expect(!decoded.clean)
        #expect(decoded.failure == later.failure)
    }

    @Test func aReopenedPoolIsCleanAtItsLastDurableCommit() throws {
        let (device, pool, _) = try self.poolWithPendingWrite(.metadataCommit)
        device.failNextSync()
        #expect(throws: StrataError.self) { try pool.flush() }
        // Only a reopen brings the pool back, at the last commit that was durable.
        let image = device.copy()
        let reopened = try Pool(device: image)
        let report = reopened.checkDurable()
        #expect(report.clean, "\(report.failure ?? "") \(report.problems)")
        #expect(try reopened.read(try reopened.handle("vm1"), at: 0, count: 4096) == [UInt8](repeating: 1, count: 4096))
    }
}
