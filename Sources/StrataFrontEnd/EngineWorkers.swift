// Where a front end runs engine calls that may wait (the pool's locks, tree pages not in memory,
// disk I/O, a flush): never on an event loop. The daemon gives its thread pool; a test of a
// handler on `EmbeddedChannel` gives workers that run each item in place and count them, so it
// can tell what left the event loop.
//
// `SerialWorkers` puts one connection's small work items in a queue that one worker at a time
// drains: an item handed over while the worker is busy joins the queue without waking another
// thread. At depth 32 a thread wake-up (a futex wake, a context switch on each side) costs more
// than the 4 KiB of engine work it carries; bench/README.md ("Lanes by bytes") has the figures.

import NIOCore
import NIOPosix
import Synchronization

/// Runs work that may wait away from the event loops.
public protocol EngineWorkers: Sendable {
    /// Runs `work(true)` off the event loops; once the workers are shutting down, calls
    /// `work(false)` instead, at once, and `work` must then do nothing that may wait.
    func perform(_ work: @escaping @Sendable (_ active: Bool) -> Void)
}

/// The workers have stopped taking work: the daemon is shutting down.
public struct EngineWorkersStopped: Error {}

extension EngineWorkers {
    /// Runs `work` off `eventLoop`; the future completes on `eventLoop`. It fails with
    /// `EngineWorkersStopped`, without running `work`, once the workers are shutting down.
    public func run<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> T) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: T.self)
        self.perform { active in
            if active {
                promise.succeed(work())
            } else {
                promise.fail(EngineWorkersStopped())
            }
        }
        return promise.futureResult
    }
}

extension NIOThreadPool: EngineWorkers {
    public func perform(_ work: @escaping @Sendable (_ active: Bool) -> Void) {
        self.submit { state in work(state == .active) }
    }
}

/// One connection's queue of work items, drained in order by one worker at a time.
public final class SerialWorkers: EngineWorkers {
    private let workers: any EngineWorkers
    private struct State {
        var queue = CircularBuffer<@Sendable (Bool) -> Void>()
        /// A worker is draining the queue (or has been asked to).
        var draining = false
    }
    private let state = Mutex(State())

    public init(on workers: any EngineWorkers) {
        self.workers = workers
    }

    public func perform(_ work: @escaping @Sendable (_ active: Bool) -> Void) {
        let start = self.state.withLock { state in
            state.queue.append(work)
            defer { state.draining = true }
            return !state.draining
        }
        guard start else { return }
        self.workers.perform { active in
            // Refused: every queued item hears so, and the next one asks again.
            while let next = self.state.withLock({ state -> (@Sendable (Bool) -> Void)? in
                if state.queue.isEmpty {
                    state.draining = false
                    return nil
                }
                return state.queue.removeFirst()
            }) {
                next(active)
            }
        }
    }
}
