// Where a front end runs engine calls that may wait (the pool's locks, tree pages not in memory,
// disk I/O, a flush): never on an event loop. The daemon gives its thread pool; a test of a
// handler on `EmbeddedChannel` gives workers that run each item in place and count them, so it
// can tell what left the event loop.

import NIOCore
import NIOPosix

/// Runs work that may wait away from the event loops.
public protocol EngineWorkers: Sendable {
    /// Runs `work` off `eventLoop`; the future completes on `eventLoop`. It fails, without
    /// running `work`, once the workers are shutting down.
    func run<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> T) -> EventLoopFuture<T>
}

extension NIOThreadPool: EngineWorkers {
    public func run<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> T) -> EventLoopFuture<T> {
        self.runIfActive(eventLoop: eventLoop, work)
    }
}
