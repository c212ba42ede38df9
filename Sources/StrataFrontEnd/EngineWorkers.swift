// Where the daemon runs engine calls that may wait (the pool's locks, tree pages not in memory,
// disk I/O, a flush, a stream): never on an event loop, nor on one of the cooperative pool's few
// threads. Front ends, the control socket, replication and the commit timer all send such work
// here. The daemon gives its thread pool; a test of a handler on `EmbeddedChannel` gives workers
// that run each item in place and count them, so it can tell what left the event loop.

import NIOCore
import NIOPosix
import StrataCore

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

extension EngineWorkers {
    /// Runs `work` on the workers from async code and returns its outcome; once the workers are
    /// shutting down, an `.io` error without running it.
    public func result<T: Sendable>(_ work: @escaping @Sendable () throws(StrataError) -> T) async -> Result<T, StrataError> {
        await withCheckedContinuation { continuation in
            self.perform { active in
                guard active else {
                    continuation.resume(returning: .failure(StrataError(.io, "the daemon is shutting down")))
                    return
                }
                continuation.resume(returning: Result { () throws(StrataError) in try work() })
            }
        }
    }

    /// Runs `work` on the workers from async code.
    /// - Throws: what `work` throws; `.io` once the workers are shutting down.
    public func engine<T: Sendable>(_ work: @escaping @Sendable () throws(StrataError) -> T) async throws(StrataError) -> T {
        try await self.result(work).get()
    }
}

extension NIOThreadPool: EngineWorkers {
    public func perform(_ work: @escaping @Sendable (_ active: Bool) -> Void) {
        self.submit { state in work(state == .active) }
    }
}
