// Where the blocking world meets the async one, and the only place it does.
//
// The engine and the control plane are synchronous: `PoolService.execute` runs on a thread of
// the daemon's NIOThreadPool, or on the CLI's main thread when the CLI opens the pool itself.
// The object-store clients are async (async-http-client on NIO's event loops). A control
// request that talks to a remote runs its blocking parts (pool reads, hashing) on its own
// thread and hands each batch of network work to `Blocking.run`, which starts it as a task and
// waits for its result on a semaphore. A fetch whose bytes readers take as they arrive is
// started with `start` instead, and its readers wait on the object (ObjectBytes.swift).
//
// Why waiting is safe here: the waiting thread is never one of the cooperative pool's threads
// or an event loop (precondition of every caller: PoolService runs on the thread pool or the
// main thread), so the awaited work always has threads to run on. The task is awaited before
// `run` returns, so no work outlives its request; this is structured in effect, not a stray task.

import Dispatch
import StrataCore
import Synchronization

public enum Blocking {
    /// Runs `body` to completion and returns its result, blocking the calling thread.
    /// - Precondition: the caller is not on a Swift concurrency or event-loop thread.
    /// - Throws: what `body` throws.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () async throws(StrataError) -> T)
        throws(StrataError) -> T
    {
        let outcome = Outcome<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            let result: Result<T, StrataError>
            do throws(StrataError) {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            outcome.slot.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        guard let result = outcome.slot.withLock({ $0 }) else { preconditionFailure("the task signals after storing its result") }
        return try result.get()
    }

    /// Starts `body` and returns without waiting: for network work whose result reaches its
    /// readers through an object of its own (a remote base's object as it arrives, which
    /// readers wait on part by part). `body` must end by itself (every request has a deadline).
    public static func start(_ body: @escaping @Sendable () async -> Void) {
        Task.detached { await body() }
    }

    /// Opens `remote`, runs `body` with its store, and closes the store's connections.
    public static func withStore<T: Sendable>(
        _ remote: RemoteConfig, _ body: (any ObjectStore) throws(StrataError) -> T
    ) throws(StrataError) -> T {
        let store = try remote.open()
        defer { Self.shutdown(store) }
        return try body(store)
    }

    private static func shutdown(_ store: any ObjectStore) {
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            await store.shutdown()
            done.signal()
        }
        done.wait()
    }
}

/// The slot a task leaves its result in for the thread waiting in `Blocking.run`.
private final class Outcome<T: Sendable>: Sendable {
    let slot = Mutex<Result<T, StrataError>?>(nil)
}
