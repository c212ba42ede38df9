// A counting semaphore for async code, bounding work in flight: the object-store client's
// requests (Limits.objectStoreParallelRequestsMax) and replication's transfers, each of which
// holds a thread of the daemon's pool while it runs (Limits.replicationTransfersMax).

import Synchronization

/// A counting semaphore for async code: at most `permits` holders at once, the rest wait in
/// order. A waiter whose task is cancelled leaves the queue at once and gets `CancellationError`
/// (a stopped replication job does not wait for a transfer slot it will never use). The lock
/// guards a few fields for a few instructions; continuations resume outside it.
package final class AsyncLimiter: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var available: Int
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
    }
    private let state: Mutex<State>

    /// - Precondition: `permits` > 0.
    package init(permits: Int) {
        precondition(permits > 0, "a limiter needs at least one permit")
        self.state = Mutex(State(available: permits))
    }

    /// Waits for a permit, in arrival order.
    /// - Throws: `CancellationError` when the task is (or gets) cancelled before it has one;
    ///   it then holds none.
    package func acquire() async throws(CancellationError) {
        let id = self.state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        // Cancellation is checked under the lock before queueing, and the handler takes the
        // lock too: a cancel either is seen there or finds the waiter queued, never neither.
        let granted = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now = self.state.withLock { state -> Bool? in
                    if Task.isCancelled { return false }
                    guard state.available > 0 else {
                        state.waiters.append(Waiter(id: id, continuation: continuation))
                        return nil
                    }
                    state.available -= 1
                    return true
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(returning: false)
        }
        guard granted else { throw CancellationError() }
    }

    /// How many wait now (for tests and status).
    package var waiting: Int {
        self.state.withLock { $0.waiters.count }
    }

    /// Returns a permit, to the longest waiter if any.
    package func release() {
        let next = self.state.withLock { state -> Waiter? in
            guard !state.waiters.isEmpty else {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.continuation.resume(returning: true)
    }
}
