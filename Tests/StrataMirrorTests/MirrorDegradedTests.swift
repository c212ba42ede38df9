// A leg that fails or stops answering: the volume keeps acknowledging writes (the leg's error
// never reaches the writer), the leg goes degraded with the error recorded, later writes skip it,
// and when it is usable again the resync copies exactly the chunks changed since the newest
// split-point pair, after which the leg equals the volume.

import Dispatch
import StrataCore
@testable import StrataMirror
import StrataTesting
import Synchronization
import Testing

/// A leg over a real `LocalPoolLeg` that fails, or blocks, while told to.
final class FaultyLeg: MirrorLeg {
    enum Fault { case none, fail, block }
    let inner: LocalPoolLeg
    let fault = Mutex<Fault>(.none)
    let released = DispatchSemaphore(value: 0)

    init(_ inner: LocalPoolLeg) { self.inner = inner }

    var location: String { self.inner.location }

    private func check() throws(StrataError) {
        switch self.fault.withLock({ $0 }) {
        case .none: return
        case .fail: throw StrataError(.io, "write leg: injected EIO")
        case .block: self.released.wait()
        }
    }

    func write(at offset: UInt64, _ bytes: [UInt8]) throws(StrataError) {
        try self.check()
        try self.inner.write(at: offset, bytes)
    }
    func zero(at offset: UInt64, length: UInt64, trim: Bool) throws(StrataError) {
        try self.check()
        try self.inner.zero(at: offset, length: length, trim: trim)
    }
    func flush() throws(StrataError) {
        try self.check()
        try self.inner.flush()
    }
    func read(at offset: UInt64, count: Int) throws(StrataError) -> [UInt8] { try self.inner.read(at: offset, count: count) }
    func size() throws(StrataError) -> UInt64 { try self.inner.size() }
    func createSplitPoint(_ name: String) throws(StrataError) { try self.inner.createSplitPoint(name) }
    func deleteSplitPoint(_ name: String) throws(StrataError) { try self.inner.deleteSplitPoint(name) }
    func splitPoints() throws(StrataError) -> [String] { try self.inner.splitPoints() }
    func changes(since name: String) throws(StrataError) -> [DiffExtent] { try self.inner.changes(since: name) }
    func commitIfNeeded() throws(StrataError) { try self.inner.commitIfNeeded() }
    func release() {}
    func close() {}
}

@Suite struct MirrorDegradedTests {
    static let block = 4096
    static let size: UInt64 = 256 * 4096

    func bytes(_ seed: Int) -> [UInt8] { (0..<Self.block).map { UInt8(truncatingIfNeeded: $0 &+ seed &* 13) } }

    /// A connected mirror of vm1 over a faulty leg with `timeoutMillis`.
    func connected(timeoutMillis: UInt64) throws -> (Pool, Pool, MirroredVolume, LegRuntime, FaultyLeg) {
        let (_, pool) = try SimDevice.formattedPool(metadataPages: 256, dataBytes: 2 << 20)
        let (_, legPool) = try SimDevice.formattedPool(metadataPages: 256, dataBytes: 2 << 20)
        try pool.createVolume("vm1", size: Self.size)
        try legPool.createVolume("vm1", size: Self.size)
        let leg = FaultyLeg(try LocalPoolLeg(pool: legPool, volume: "vm1", directory: "/sim"))
        let mirrored = try MirroredVolume(pool: pool, volume: "vm1") {}
        let record = MirrorLegRecord(
            volume: "vm1", leg: "leg1", poolDirectory: "/sim", state: .detached, generation: 0, splitAt: nil,
            detachedAs: nil, writable: false, rateBytesPerSecond: nil, autoResync: true, timeoutMillis: timeoutMillis,
            lastError: nil)
        let runtime = LegRuntime(record: record, leg: leg)
        mirrored.addLeg(runtime)
        pool.taps.install(mirrored, volumeID: try pool.handle("vm1").id)
        try mirrored.startCopy(runtime, machine: LegStateMachine(state: .syncing), full: true, fresh: true)
        self.copyAll(mirrored, runtime)
        #expect(runtime.state == .connected)
        return (pool, legPool, mirrored, runtime, leg)
    }

    func copyAll(_ mirrored: MirroredVolume, _ runtime: LegRuntime) {
        while mirrored.copyStep(runtime) > 0 {}
        if mirrored.copyDone(runtime) { mirrored.finishCopy(runtime) }
    }

    func resyncAndCompare(_ pool: Pool, _ legPool: Pool, _ mirrored: MirroredVolume, _ runtime: LegRuntime) throws -> UInt64 {
        var machine = runtime.with { $0.machine }
        try machine.handle(.attach, leg: "leg1")
        try mirrored.startCopy(runtime, machine: machine, full: false, fresh: false)
        self.copyAll(mirrored, runtime)
        #expect(runtime.state == .connected)
        let volume = try pool.read(try pool.handle("vm1"), at: 0, count: Int(Self.size))
        let leg = try legPool.read(try legPool.handle("vm1"), at: 0, count: Int(Self.size))
        #expect(volume == leg, "the leg differs from the volume after the resync")
        return runtime.with { $0.copiedBytes }
    }

    @Test func aFailingLegIsDegradedAndResyncsOnlyWhatChanged() throws {
        let (pool, legPool, mirrored, runtime, leg) = try self.connected(timeoutMillis: 0)
        let handle = try pool.handle("vm1")
        try pool.write(handle, at: 0, self.bytes(1))
        leg.fault.withLock { $0 = .fail }
        // The failing leg's error never reaches the writer.
        try pool.write(handle, at: UInt64(10 * Self.block), self.bytes(2))
        #expect(runtime.state == .degraded)
        #expect(runtime.currentRecord.lastError?.contains("injected EIO") == true)
        #expect(runtime.currentRecord.splitAt != nil)
        for block in [11, 12, 200] { try pool.write(handle, at: UInt64(block * Self.block), self.bytes(block)) }
        try pool.trim(handle, at: 0, length: UInt64(Self.block))
        try pool.flush()
        leg.fault.withLock { $0 = .none }
        // Changed since the pair taken when the first copy ended: blocks 0, 10, 11, 12, 200.
        #expect(try self.resyncAndCompare(pool, legPool, mirrored, runtime) == UInt64(5 * Self.block))
    }

    @Test func aLegThatStopsAnsweringIsDegradedWithinItsTimeout() throws {
        // No deadline while the mirror is set up (a loaded machine may take longer than one),
        // then 50 ms for a leg that never answers until released: only the deadline ends the wait.
        let (pool, legPool, mirrored, runtime, leg) = try self.connected(timeoutMillis: 0)
        let handle = try pool.handle("vm1")
        runtime.with { $0.record.timeoutMillis = 50 }
        leg.fault.withLock { $0 = .block }
        // Returns although the leg never answers: the deadline, not the leg, ends the wait.
        try pool.write(handle, at: UInt64(3 * Self.block), self.bytes(3))
        #expect(runtime.state == .degraded)
        #expect(runtime.currentRecord.lastError?.contains("no answer within 50 ms") == true)
        try pool.write(handle, at: UInt64(4 * Self.block), self.bytes(4))
        try pool.flush()
        leg.fault.withLock { $0 = .none }
        leg.released.signal()
        runtime.with { $0.record.timeoutMillis = 0 }
        #expect(try self.resyncAndCompare(pool, legPool, mirrored, runtime) == UInt64(2 * Self.block))
    }
}
