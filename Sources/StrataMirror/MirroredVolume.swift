// A mirrored volume: the `VolumeTap` (Pool+Tap.swift) that puts every write, trim and zero of
// one volume on each of its attached legs before the caller acknowledges it, and makes a
// FLUSH, FUA or SYNCHRONIZE CACHE durable on those legs too before it returns (DRBD's
// protocol C). Reads never come here: they are served by the volume alone.
//
// Ordering. Two overlapping writes must land in the same order on the volume and on a leg, or
// the copies would differ while both writes were acknowledged. Each change holds the stripe
// locks of the chunks it touches (`ChunkStripes`) across the local change and the legs', so
// overlapping changes are serialized on both sides alike; the resync's copy of a chunk takes the
// same stripe, so a copy never overwrites a newer write. The local change runs first: a change the
// engine refuses (ENOSPC, a read-only pool) never reaches a leg.
//
// Instants. A split-point pair (hidden snapshot on the volume and on the leg, same name) and
// every state change that starts or stops writes going to a leg happen with `quiesce` held
// exclusively, which waits for every change in flight to finish on both sides: so the two
// snapshots of a pair hold the same bytes, and a detach is one instant.
//
// Failures. A leg call that fails or misses its deadline makes the leg degraded: the write is
// still acknowledged (the volume has it), later writes skip the leg, and the blocks to resync
// are found from the newest split-point pair when the leg is usable again.

import Foundation
import StrataCore

/// The stripe locks of a mirrored volume's chunks.
final class ChunkStripes: @unchecked Sendable {
    private let mutexes: UnsafeMutablePointer<pthread_mutex_t>
    private let count = MirrorLimits.stripes

    init() {
        self.mutexes = .allocate(capacity: self.count)
        for index in 0..<self.count { pthread_mutex_init(self.mutexes + index, nil) }
    }

    deinit {
        for index in 0..<self.count { pthread_mutex_destroy(self.mutexes + index) }
        self.mutexes.deallocate()
    }

    /// Holds the stripes of chunks `first...last` (all of them for a long range), in ascending order.
    func withLocks<T, E: Error>(first: UInt64, last: UInt64, _ body: () throws(E) -> T) throws(E) -> T {
        let indexes = self.indexes(first: first, last: last)
        self.lock(indexes)
        defer { self.unlock(indexes) }
        return try body()
    }

    /// The stripes of chunks `first...last`, ascending, each once.
    func indexes(first: UInt64, last: UInt64) -> [Int] {
        if last - first + 1 >= UInt64(self.count) { return Array(0..<self.count) }
        return Set((first...last).map { Int($0 % UInt64(self.count)) }).sorted()
    }

    /// Takes `indexes` (ascending) in order, waiting for each.
    func lock(_ indexes: [Int]) {
        for index in indexes { pthread_mutex_lock(self.mutexes + index) }
    }

    /// Takes every one of `indexes` without waiting, or none: false when one is held elsewhere.
    func tryLock(_ indexes: [Int]) -> Bool {
        for (position, index) in indexes.enumerated() where pthread_mutex_trylock(self.mutexes + index) != 0 {
            self.unlock(indexes[..<position])
            return false
        }
        return true
    }

    func unlock<C: BidirectionalCollection<Int>>(_ indexes: C) {
        for index in indexes.reversed() { pthread_mutex_unlock(self.mutexes + index) }
    }
}

/// One leg of a mirrored volume at run time: its record, state machine, open leg and copy job.
/// Every field is guarded by `lock`: read and change them inside `with`.
final class LegRuntime: @unchecked Sendable {
    private let lock = NSLock()
    var record: MirrorLegRecord
    var leg: (any MirrorLeg)?
    var machine: LegStateMachine
    /// Chunk ranges the running copy still has to copy, in order.
    var pending: [Range<UInt64>] = []
    var pendingBytes: UInt64 = 0
    var copiedBytes: UInt64 = 0
    var copyStarted: ContinuousClock.Instant?
    var copyFinished: ContinuousClock.Instant?
    var lastSplitPoint = ContinuousClock.now
    var lastProbe = ContinuousClock.now
    var lastCommit = ContinuousClock.now
    /// A remote leg not reopened yet since the daemon started (the worker does it).
    var needsRecovery = false

    init(record: MirrorLegRecord, leg: (any MirrorLeg)?) {
        self.record = record
        self.leg = leg
        self.machine = LegStateMachine(state: record.state)
    }

    func with<T, E: Error>(_ body: (LegRuntime) throws(E) -> T) throws(E) -> T {
        self.lock.lock()
        defer { self.lock.unlock() }
        return try body(self)
    }

    var state: LegState { self.with { $0.machine.state } }
    var name: String { self.with { $0.record.leg } }
    var currentRecord: MirrorLegRecord { self.with { $0.record } }

    /// Sets the state machine and the record's state together. The caller holds `lock`.
    func setMachine(_ machine: LegStateMachine) {
        self.machine = machine
        self.record.state = machine.state
    }

    /// Calls the leg with its deadline.
    func call<T: Sendable>(_ body: @escaping @Sendable (any MirrorLeg) throws(StrataError) -> T) throws(StrataError) -> T {
        try self.start(body).wait()
    }

    /// Starts a write or zero on the leg with its deadline: a remote leg sends it without
    /// blocking a thread (RemoteLeg.startWrite), a local one runs it on a Dispatch worker.
    func start(_ change: VolumeChange, data: [UInt8]) -> LegCall.Pending<Void> {
        if let remote = self.with({ $0.leg }) as? RemoteLeg {
            switch change {
            case .write(let offset, _): return remote.startWrite(at: offset, data)
            case .zero(let offset, let length, let trim): return remote.startZero(at: offset, length: length, trim: trim)
            case .copied: preconditionFailure("an in-pool copy is applied to legs after the engine's copy")
            }
        }
        switch change {
        case .write(let offset, _):
            return self.start { leg throws(StrataError) in try leg.write(at: offset, data) }
        case .zero(let offset, let length, let trim):
            return self.start { leg throws(StrataError) in try leg.zero(at: offset, length: length, trim: trim) }
        case .copied:
            preconditionFailure("an in-pool copy is applied to legs after the engine's copy")
        }
    }

    /// Starts a call to the leg with its deadline; a leg that is not open fails it at once. A
    /// remote leg's call runs on the caller's thread: the link enforces the deadline itself, and
    /// a Dispatch worker waiting for the link's tasks would take a thread they need.
    func start<T: Sendable>(_ body: @escaping @Sendable (any MirrorLeg) throws(StrataError) -> T)
        -> LegCall.Pending<T>
    {
        let (leg, record) = self.with { ($0.leg, $0.record) }
        let name = "\(record.leg) of \(record.volume)"
        guard let leg else {
            let pending = LegCall.Pending<T>(leg: name, timeoutMillis: 0)
            pending.finish(
                .failure(StrataError(.io, "mirror leg \(name): not open (\(record.lastError ?? "unavailable"))")))
            return pending
        }
        return LegCall.start(leg: name, timeoutMillis: leg is RemoteLeg ? 0 : record.timeoutMillis) {
            () throws(StrataError) -> T in try body(leg)
        }
    }
}

/// A write or zero started on one leg.
struct LegWrite {
    let runtime: LegRuntime
    let call: LegCall.Pending<Void>
}

/// A volume with mirror legs; installed as the volume's tap.
public final class MirroredVolume: VolumeTap, @unchecked Sendable {
    let pool: Pool
    let volume: String
    let handle: VolumeHandle
    let quiesce = RWLock()
    let stripes = ChunkStripes()
    private let legsLock = NSLock()
    private var _legs: [LegRuntime] = []
    /// Saves the mirror table (the coordinator's); called after a state change.
    let persist: @Sendable () -> Void

    init(pool: Pool, volume: String, persist: @escaping @Sendable () -> Void) throws(StrataError) {
        self.pool = pool
        self.volume = volume
        self.handle = try pool.handle(volume)
        self.persist = persist
    }

    var legs: [LegRuntime] {
        self.legsLock.lock()
        defer { self.legsLock.unlock() }
        return self._legs
    }

    /// Adds a leg. The caller holds `quiesce` exclusively (or nothing writes yet).
    func addLeg(_ runtime: LegRuntime) {
        self.legsLock.lock()
        self._legs.append(runtime)
        self.legsLock.unlock()
    }

    /// Removes a leg. The caller holds `quiesce` exclusively.
    func removeLeg(_ runtime: LegRuntime) {
        self.legsLock.lock()
        self._legs.removeAll { $0 === runtime }
        self.legsLock.unlock()
    }

    var chunkSize: UInt64 { self.pool.chunkSize }

    // MARK: VolumeTap

    public func apply(_ change: VolumeChange, local: () throws(StrataError) -> Void) throws(StrataError) {
        if let scope = TapScope.current {
            let deferred = scope.pending(of: self) { DeferredLegWrites(self) }
            if try deferred.apply(change, local: local) { return }
        }
        self.quiesce.lockShared()
        defer { self.quiesce.unlock() }
        let (offset, length) = change.range
        guard length > 0 else { return try local() }
        let first = offset / self.chunkSize
        let last = (offset + length - 1) / self.chunkSize
        try self.stripes.withLocks(first: first, last: last) { () throws(StrataError) in
            let targets = self.legs.filter { $0.state.receivesWrites }
            guard !targets.isEmpty else { return try local() }
            if case .copied = change {
                // The bytes exist only once the engine has copied them: the legs go after.
                try local()
                var payload: [UInt8]?
                for runtime in targets { self.send(change, to: runtime, payload: &payload) }
                return
            }
            guard try self.fitsVolume(change) else { return try local() }
            try self.applyInParallel(change, to: targets, local: local)
        }
    }

    /// Runs the legs' halves of a write or zero while the engine does its own (the stripes keep
    /// overlapping changes in order on both sides), then waits for each within its deadline. A
    /// change the engine refuses after a leg took it leaves that leg ahead of the volume: the leg
    /// goes degraded, and its own split-point diff brings the chunk back at the resync.
    private func applyInParallel(
        _ change: VolumeChange, to targets: [LegRuntime], local: () throws(StrataError) -> Void
    ) throws(StrataError) {
        self.finish(try self.startInParallel(change, to: targets, local: local))
    }

    /// Starts the legs' halves of a write or zero, then runs the engine's own, and returns the
    /// legs' calls to wait for. When the engine refuses, waits for them at once and throws.
    func startInParallel(
        _ change: VolumeChange, to targets: [LegRuntime], local: () throws(StrataError) -> Void
    ) throws(StrataError) -> [LegWrite] {
        var data: [UInt8] = []
        if case .write(_, let bytes) = change { data = Array(bytes) }
        let calls = targets.map { runtime in LegWrite(runtime: runtime, call: runtime.start(change, data: data)) }
        do throws(StrataError) {
            try local()
        } catch {
            self.finish(calls, refused: error)
            throw error
        }
        return calls
    }

    /// Waits for each leg call within its deadline; one that fails or is late degrades its leg,
    /// as does the engine's refusal of a change the leg took.
    func finish(_ calls: [LegWrite], refused: StrataError? = nil) {
        for write in calls {
            do throws(StrataError) { try write.call.wait() } catch { self.fail(write.runtime, error) }
            if let refused, write.runtime.state.receivesWrites {
                self.fail(
                    write.runtime,
                    StrataError(.io, "the volume refused a change its leg took (\(refused.message)); the leg resyncs it"))
            }
        }
    }

    /// Whether `change` lies inside the volume: one the engine will refuse (past the end) must
    /// not reach a leg.
    func fitsVolume(_ change: VolumeChange) throws(StrataError) -> Bool {
        let (offset, length) = change.range
        return offset + length <= (try self.pool.size(of: self.handle))
    }

    public func flushed() {
        // This thread's own writes still in flight on the legs come first.
        TapScope.settle(self)
        for runtime in self.legs where runtime.state.receivesWrites {
            do throws(StrataError) {
                try runtime.call { leg throws(StrataError) in try leg.flush() }
            } catch {
                self.fail(runtime, error)
            }
        }
    }

    /// Applies one change to one leg; a failure degrades the leg. `payload` caches the bytes
    /// for every leg. The caller holds the change's stripes.
    private func send(_ change: VolumeChange, to runtime: LegRuntime, payload: inout [UInt8]?) {
        do throws(StrataError) {
            switch change {
            case .write(let offset, let bytes):
                let data = payload ?? Array(bytes)
                payload = data
                try runtime.call { leg throws(StrataError) in try leg.write(at: offset, data) }
            case .zero(let offset, let length, let trim):
                try runtime.call { leg throws(StrataError) in try leg.zero(at: offset, length: length, trim: trim) }
            case .copied(let offset, let length):
                let data: [UInt8]
                if let payload { data = payload } else { data = try self.pool.read(self.handle, at: offset, count: Int(length)) }
                payload = data
                try runtime.call { leg throws(StrataError) in try leg.write(at: offset, data) }
            }
        } catch {
            self.fail(runtime, error)
        }
    }

    /// Marks a leg degraded with `error` (a detached leg only records the error).
    func fail(_ runtime: LegRuntime, _ error: StrataError) {
        let changed = runtime.with { runtime -> Bool in
            var machine = runtime.machine
            let before = machine.state
            machine.failed()
            let changed = before != machine.state || runtime.record.lastError != error.message
            runtime.setMachine(machine)
            runtime.record.lastError = error.message
            if before != .degraded && machine.state == .degraded { runtime.record.splitAt = MirrorClock.timestamp() }
            runtime.pending = []
            runtime.pendingBytes = 0
            runtime.lastProbe = .now
            return changed
        }
        if changed { self.persist() }
    }
}

/// Wall-clock timestamps for status.
enum MirrorClock {
    static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}

extension NSLock {
    /// `withLock` that keeps the body's typed error.
    func holding<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        self.lock()
        defer { self.unlock() }
        return try body()
    }
}
