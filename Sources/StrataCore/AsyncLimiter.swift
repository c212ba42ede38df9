// A counting semaphore for async code, bounding work in flight: the object-store client's
// requests (Limits.objectStoreParallelRequestsMax) and replication's transfers, each of which
// holds a thread of the daemon's pool while it runs (Limits.replicationTransfersMax).

import Synchronization

/// A counting semaphore for async code: at most `permits` holders at once, the rest wait in
/// order. The lock guards two fields for a few instructions; continuations resume outside it.
package final class AsyncLimiter: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    /// - Precondition: `permits` > 0.
    package init(permits: Int) {
        precondition(permits > 0, "a limiter needs at least one permit")
        self.state = Mutex(State(available: permits))
    }

    /// Waits for a permit, in arrival order.
    package func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = self.state.withLock { state -> Bool in
                guard state.available > 0 else {
                    state.waiters.append(continuation)
                    return false
                }
                state.available -= 1
                return true
            }
            if granted { continuation.resume() }
        }
    }

    /// Returns a permit, to the longest waiter if any.
    package func release() {
        let next = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiters.isEmpty else {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
