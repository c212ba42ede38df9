// Blocking work that lasts (an accept loop, a stream, a flatten) runs on a
// thread of its own, never on the cooperative pool, whose few threads every service shares,
// and never on the NIO thread pool, whose threads serve disk I/O. `DedicatedThread.run` starts
// such a thread and suspends until the work returns, so the work is a child task like any other:
// the service that awaits it (in a task group) returns only after it has, and no thread
// outlives the service that started it.

import Foundation

/// A thread for one piece of blocking work, awaited like a child task.
package enum DedicatedThread {
    /// Runs `body` on a new thread named `name` and returns its result.
    package static func run<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: body()) }
            thread.name = name
            thread.start()
        }
    }
}

/// Threads for blocking work done in parallel by a caller that may itself block (a daemon's
/// dedicated thread, or the CLI's main thread): unlike `DispatchQueue.concurrentPerform`, the
/// parallelism is `count` even on a machine with fewer cores, since the work waits on the network.
package enum ParallelThreads {
    /// Runs `body(0..<count)` on `count` threads named `name-i` (with `stackSize` bytes of stack
    /// when given) and returns when all have returned.
    package static func run(
        count: Int, name: String, stackSize: Int? = nil, _ body: @escaping @Sendable (Int) -> Void
    ) {
        Self.start(count: count, name: name, stackSize: stackSize, body).wait()
    }

    /// Runs `body(0..<count)` on `count` threads as `run` does while the calling thread runs
    /// `caller` (a producer feeding them, say), and returns `caller`'s result once every
    /// thread has returned too.
    /// - Precondition: `caller` makes the threads' bodies return, whether it returns or throws.
    package static func run<T, Failure: Error>(
        count: Int, name: String, _ body: @escaping @Sendable (Int) -> Void,
        alongside caller: () throws(Failure) -> T
    ) throws(Failure) -> T {
        let group = Self.start(count: count, name: name, stackSize: nil, body)
        defer { group.wait() }
        return try caller()
    }

    private static func start(
        count: Int, name: String, stackSize: Int?, _ body: @escaping @Sendable (Int) -> Void
    ) -> DispatchGroup {
        precondition(count >= 1, "parallel work needs at least one thread")
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            let thread = Thread {
                body(index)
                group.leave()
            }
            thread.name = "\(name)-\(index)"
            if let stackSize { thread.stackSize = stackSize }
            thread.start()
        }
        return group
    }
}
