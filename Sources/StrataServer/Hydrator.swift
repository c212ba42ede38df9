// The daemon's background hydrations (docs/OBJECTSTORE.md "Background hydration"): one
// `Hydration` per volume over a remote base whose record carries the hydrate flag, started when
// the daemon opens the pool (a restart or kill -9 resumes them), when `volume create --from`
// runs with `--hydrate lazy`, and by `strata volume hydrate`. Each runs on a thread of its own
// (plus its fetch threads), awaited as a child task of `run`, so the service returns only after
// every hydration stopped. The table of hydrations is what `volume status` and `pool status`
// read; a finished hydration stays in it (state "done") until the daemon stops.
//
// It also stores what reads fetched (the filler): a read of a volume over a remote base hands
// the objects it touched to a queue here instead of storing them before it replies
// (`Pool.deferFills`), so a first read waits only for its ranged GET; `Limits.fillParallelFetches`
// threads drain the queue through `Pool.fillFetched`, which fetches each whole object once and
// copies it into the volume's holes. A full queue (`Limits.deferredFillsMax`) makes reads store for themselves.

import Dispatch
import Logging
import StrataCore
import StrataObjectStore
import Synchronization

public final class Hydrator: Sendable {
    private let pool: Pool
    private let logger: Logger
    private let table = Mutex<[String: Hydration]>([:])
    private let started: AsyncStream<Hydration>
    private let starts: AsyncStream<Hydration>.Continuation
    private let stopped = Atomic<Bool>(false)
    private let fills = Mutex<[(handle: VolumeHandle, offsets: [UInt64])]>([])
    private let fillQueued = DispatchSemaphore(value: 0)
    private let rates: HydrationRates

    public init(pool: Pool, logger: Logger) {
        self.pool = pool
        self.logger = logger
        self.rates = HydrationRates(pool: pool)
        (self.started, self.starts) = AsyncStream.makeStream(of: Hydration.self)
    }

    /// True when `volume` reads through a remote base (a hydration's job, not a flatten's).
    /// Reads the base table only: it never opens the base, so it may run on any thread.
    public static func hasRemoteBase(_ pool: Pool, _ volume: String) -> Bool {
        do throws(StrataError) {
            return try pool.baseDescriptor(of: volume)?.remote != nil
        } catch {
            return false
        }
    }

    /// Resumes the hydrations the pool records, then runs each one started until `stop`.
    func run() async {
        // Marking commits (disk I/O): on a thread of its own, never on the cooperative pool.
        await DedicatedThread.run(name: "strata-hydrate-resume") { self.resume() }
        self.pool.deferFills { handle, offsets in self.enqueueFill(handle, offsets) }
        await withDiscardingTaskGroup { group in
            group.addTask {
                await DedicatedThread.run(name: "strata-fill") {
                    ParallelThreads.run(count: Limits.fillParallelFetches, name: "strata-fill") { _ in self.drainFills() }
                }
            }
            for await hydration in self.started {
                group.addTask {
                    await DedicatedThread.run(name: "strata-hydrate-\(hydration.volume)") { self.work(hydration) }
                }
            }
        }
    }

    private func resume() {
        for volume in self.pool.volumesFlattening() where Self.hasRemoteBase(self.pool, volume) {
            self.logger.notice("resuming the hydration of volume \(volume)")
            do throws(StrataError) {
                _ = try self.start(volume, rate: nil)
            } catch {
                self.logger.error("\(error.message)")
            }
        }
    }

    /// Stops every hydration between objects (they resume at the next start). Does not block.
    func stop() {
        self.stopped.store(true, ordering: .relaxed)
        self.pool.deferFills(to: nil)
        self.fillQueued.signal()
        for hydration in self.table.withLock({ Array($0.values) }) { hydration.cancel() }
        self.starts.finish()
    }

    /// Starts hydrating `volume` in the background (marking it durably first), or changes the
    /// rate of the hydration already running. A `rate` is stored (HydrationRates.swift), so a
    /// resumed hydration keeps it; nil keeps the running one's, or takes the stored one, or
    /// `Limits.hydrationRateDefault`.
    /// - Throws: `.invalidArgument` when the volume has no remote base, `.busy` when the daemon stops.
    @discardableResult
    public func start(_ volume: String, rate: UInt64?) throws(StrataError) -> Hydration {
        guard Self.hasRemoteBase(self.pool, volume) else {
            throw StrataError(
                .invalidArgument,
                "hydrate \(volume): the volume has no remote base; only a volume created with --from hydrates (flatten copies an image file's base)"
            )
        }
        guard !self.stopped.load(ordering: .relaxed) else {
            throw StrataError(.busy, "hydrate \(volume): the daemon is stopping; it resumes the hydration when it starts")
        }
        try self.pool.markHydrating(volume)
        if let rate { try self.rates.set(rate, for: volume) }
        var stored: UInt64?
        if rate == nil {
            do throws(StrataError) {
                stored = try self.rates.rate(of: volume)
            } catch {
                // A rate file that cannot be read must not stop the hydration: default rate.
                self.logger.warning("\(error.message)")
            }
        }
        let (hydration, fresh) = self.table.withLock { table -> (Hydration, Bool) in
            if let running = table[volume], running.state != .done, !running.isCancelled {
                if let rate { running.setRate(rate) }
                return (running, false)
            }
            let hydration = Hydration(pool: self.pool, volume: volume, rate: rate ?? stored ?? Limits.hydrationRateDefault)
            table[volume] = hydration
            return (hydration, true)
        }
        if fresh { self.starts.yield(hydration) }
        return hydration
    }

    /// The hydration of `volume` this daemon ran or runs, if any.
    public func hydration(of volume: String) -> Hydration? { self.table.withLock { $0[volume] } }

    /// Hydrations not done, by volume name.
    public var active: [Hydration] {
        self.table.withLock { $0.values.filter { $0.state != .done }.sorted { $0.volume < $1.volume } }
    }

    /// Queues a read's fill; false (the read stores it itself) when stopping or full.
    private func enqueueFill(_ handle: VolumeHandle, _ offsets: [UInt64]) -> Bool {
        guard !self.stopped.load(ordering: .relaxed) else { return false }
        let queued = self.fills.withLock { fills -> Bool in
            guard fills.count < Limits.deferredFillsMax else { return false }
            fills.append((handle, offsets))
            return true
        }
        if queued { self.fillQueued.signal() }
        return queued
    }

    /// Stores queued fills, one at a time, until `stop`, then what is left. Runs on each of
    /// `Limits.fillParallelFetches` threads, so the objects a burst of reads touched are fetched
    /// in parallel, not one after another; two fills of one object share its fetch (the fetch
    /// table) and the second finds nothing left to store.
    private func drainFills() {
        while true {
            _ = self.fillQueued.wait(timeout: .now() + .milliseconds(200))
            while let fill = self.fills.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                do throws(StrataError) {
                    try self.pool.fillFetched(fill.handle, offsets: fill.offsets)
                } catch {
                    // The next read of those ranges fetches again; nothing is lost.
                    self.logger.warning("storing what a read of \(fill.handle.name) fetched: \(error.message)")
                }
            }
            if self.stopped.load(ordering: .relaxed) {
                // Wake the other fill threads so they see the stop too.
                self.fillQueued.signal()
                return
            }
        }
    }

    private func work(_ hydration: Hydration) {
        do throws(StrataError) {
            try hydration.run(retrying: true)
            if hydration.state == .done {
                self.logger.notice("hydrated volume \(hydration.volume): it no longer reads from its remote base")
                try self.rates.set(nil, for: hydration.volume)
            }
        } catch {
            if !hydration.isCancelled { self.logger.error("\(error.message)") }
        }
    }
}
