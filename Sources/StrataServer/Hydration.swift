// One hydration of one volume (docs/OBJECTSTORE.md "Background hydration"): fetch every object
// of its remote base that is not yet local, `Limits.hydrationParallelFetches` at a time and at
// most `rate` bytes a second, store each into the volume through the engine exactly as a
// read-triggered fill does (`Pool.hydrateUnit`: never over a chunk the volume wrote), and drop
// the base once nothing is pending (`Pool.finishHydration`).
//
// What is pending is asked of the engine (`Pool.hydrationPlan`) at the start of every pass, so
// a hydration resumed after a restart or a kill -9 fetches only what the committed tree still
// lacks, and a pass that failed part-way does not fetch again what it already stored. In the
// daemon (`retrying`) an error pauses the hydration: the state says so with the error (which
// names the object), and it tries again after a pause that doubles up to
// `Limits.hydrationRetryMillisecondsMax`. The CLI on an offline pool runs it in the foreground
// and reports the first error instead.
//
// The work runs on the caller's thread plus the fetch threads (`ParallelThreads`): the engine
// and the `Blocking` bridge block, so none of it may run on the cooperative pool.

import Foundation
import StrataCore
import StrataObjectStore
import Synchronization

/// A hydration's shared state: the workers update it, status requests read it.
public final class Hydration: Sendable {
    public enum State: String, Sendable {
        case idle, running, paused, done
    }

    private struct Progress {
        var state = State.idle
        var limiter: RateLimiter
        var meter = RateMeter()
        var objectsTotal = 0
        var objectsLocal = 0
        var lastError: StrataError?
        var errors = 0
        var uncommittedBytes: UInt64 = 0
    }

    public let volume: String
    private let pool: Pool
    private let progress: Mutex<Progress>
    private let cancelled = Atomic<Bool>(false)

    /// - Precondition: `rate` is positive.
    public init(pool: Pool, volume: String, rate: UInt64) {
        self.pool = pool
        self.volume = volume
        self.progress = Mutex(Progress(limiter: RateLimiter(bytesPerSecond: rate)))
    }

    /// The state now.
    public var state: State { self.progress.withLock { $0.state } }

    /// The error that paused it last, nil once it made progress again.
    public var lastError: StrataError? { self.progress.withLock { $0.lastError } }

    /// Errors met so far (each paused the hydration).
    public var errors: Int { self.progress.withLock { $0.errors } }

    /// Changes the rate bound from the next object on.
    public func setRate(_ rate: UInt64) {
        precondition(rate > 0, "a rate bound is positive")
        self.progress.withLock { $0.limiter.bytesPerSecond = rate }
    }

    /// Stops the hydration between objects; it resumes when the pool next opens in a daemon.
    public func cancel() { self.cancelled.store(true, ordering: .relaxed) }

    /// True once `cancel` was called.
    public var isCancelled: Bool { self.cancelled.load(ordering: .relaxed) }

    /// This hydration's part of `strata volume status`.
    public func fill(_ status: inout VolumeStatus) {
        let now = MonotonicClock.nanos()
        self.progress.withLock { progress in
            status.state = progress.state.rawValue
            // The engine's own count (`volumeStatus`) wins; this one serves when it is absent.
            if status.objectsTotal == 0 && progress.objectsTotal > 0 {
                status.objectsTotal = progress.objectsTotal
                status.objectsFetched = progress.objectsLocal
            }
            status.rateBytesPerSecond = progress.state == .running ? progress.meter.rate(nowNanos: now) : 0
            status.rateLimitBytesPerSecond = progress.state == .done ? nil : progress.limiter.bytesPerSecond
            if let error = progress.lastError { status.lastError = error.message }
        }
    }

    /// Runs until the base is dropped, the volume is gone, or `cancel`. With `retrying`, an
    /// error pauses and retries; without, it is thrown.
    /// - Throws: with `retrying` false, the first error (naming the object); `.busy` when cancelled.
    public func run(retrying: Bool, report: (Int, Int) -> Void = { _, _ in }) throws(StrataError) {
        var pauseMilliseconds = Limits.hydrationRetryMillisecondsInitial
        while !self.isCancelled {
            do throws(StrataError) {
                if try self.pass(report: report) { return }
                pauseMilliseconds = Limits.hydrationRetryMillisecondsInitial
            } catch {
                if error.code == .notFound && !self.volumeExists {
                    // The volume was deleted: nothing left to hydrate.
                    self.progress.withLock { $0.state = .idle }
                    return
                }
                self.progress.withLock {
                    $0.state = .paused
                    $0.lastError = error
                    $0.errors += 1
                }
                guard retrying else { throw error }
                self.sleep(milliseconds: pauseMilliseconds)
                pauseMilliseconds = min(pauseMilliseconds * 2, Limits.hydrationRetryMillisecondsMax)
            }
        }
        self.progress.withLock { $0.state = .idle }
        try self.pool.flush()
        throw StrataError(
            .busy,
            "hydrate \(self.volume): stopped; it resumes when the daemon starts, or run `strata volume hydrate \(self.volume)`")
    }

    /// One pass over what is pending; true when the base was dropped (or is gone).
    private func pass(report: (Int, Int) -> Void) throws(StrataError) -> Bool {
        guard let plan = try self.pool.hydrationPlan(self.volume) else {
            self.progress.withLock { $0.state = .done }
            return true
        }
        self.progress.withLock {
            $0.objectsTotal = plan.units.count
            $0.objectsLocal = plan.local
            if $0.state != .paused { $0.state = .running }
        }
        report(plan.local, plan.units.count)
        if plan.pending.isEmpty {
            try self.pool.finishHydration(self.volume)
            try self.pool.collectBases()
            self.progress.withLock {
                $0.state = .done
                $0.lastError = nil
            }
            return true
        }
        try self.fetch(plan, report: report)
        try self.pool.flush()
        return false
    }

    /// Copies `plan.pending` with parallel fetches; throws the first error once all stopped.
    private func fetch(_ plan: HydrationPlan, report: (Int, Int) -> Void) throws(StrataError) {
        let work = PassQueue(plan.pending)
        let threads = min(Limits.hydrationParallelFetches, plan.pending.count)
        ParallelThreads.run(count: threads, name: "strata-hydrate-\(self.volume)") { _ in
            while !self.isCancelled, let unit = work.next() {
                do throws(StrataError) {
                    try self.copy(unit: unit, unitBytes: plan.unitBytes)
                } catch {
                    work.fail(error)
                }
            }
        }
        if let error = work.failure { throw error }
        let (local, total) = self.progress.withLock { ($0.objectsLocal, $0.objectsTotal) }
        report(local, total)
    }

    /// Waits for the rate, copies one unit, counts it, and commits every `flattenCommitBytes`.
    private func copy(unit: UInt64, unitBytes: UInt64) throws(StrataError) {
        let wait = self.progress.withLock { $0.limiter.reserve(unitBytes, nowNanos: MonotonicClock.nanos()) }
        self.sleep(milliseconds: wait / 1_000_000)
        guard !self.isCancelled else { return }
        let copied = try self.pool.hydrateUnit(self.volume, unit: unit)
        let commit = self.progress.withLock { progress -> Bool in
            progress.objectsLocal += 1
            progress.meter.record(copied, nowNanos: MonotonicClock.nanos())
            progress.state = .running
            progress.lastError = nil
            progress.uncommittedBytes += copied
            guard progress.uncommittedBytes >= Limits.flattenCommitBytes else { return false }
            progress.uncommittedBytes = 0
            return true
        }
        if commit { try self.pool.flush() }
    }

    /// False once the volume was deleted (or renamed away).
    private var volumeExists: Bool {
        do throws(StrataError) {
            return try self.pool.listVolumes().contains { $0.name == self.volume }
        } catch {
            return true
        }
    }

    /// Sleeps in slices of at most 100 ms, returning early when cancelled.
    private func sleep(milliseconds: UInt64) {
        var left = milliseconds
        while left > 0, !self.isCancelled {
            let slice = min(left, 100)
            usleep(useconds_t(slice * 1000))
            left -= slice
        }
    }
}

/// The units one pass has left, shared by its fetch threads; after a failure it hands out no more.
private final class PassQueue: Sendable {
    private struct State {
        var units: ArraySlice<UInt64>
        var failure: StrataError?
    }

    private let state: Mutex<State>

    init(_ units: [UInt64]) { self.state = Mutex(State(units: units[...])) }

    /// The next unit, or nil when none is left or one failed.
    func next() -> UInt64? {
        self.state.withLock { $0.failure == nil ? $0.units.popFirst() : nil }
    }

    /// Records `error` (the first one wins) and stops handing out units.
    func fail(_ error: StrataError) {
        self.state.withLock { $0.failure = $0.failure ?? error }
    }

    var failure: StrataError? { self.state.withLock { $0.failure } }
}
