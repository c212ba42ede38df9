// The async semaphore that bounds replication transfers and object-store requests: permits go
// to waiters in arrival order, never more than `permits` at once, and a waiter whose task is
// cancelled leaves at once with CancellationError, holding nothing.

@testable import StrataCore
import Synchronization
import Testing

@Suite struct AsyncLimiterTests {
    /// The order in which waiters got their permits.
    final class Granted: Sendable {
        let order = Mutex<[Int]>([])
    }

    @Test func waitersGetPermitsInOrderAndNeverMoreThanTheBound() async throws {
        let limiter = AsyncLimiter(permits: 2)
        let granted = Granted()
        try await limiter.acquire()
        try await limiter.acquire()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<6 {
                group.addTask {
                    try? await limiter.acquire()
                    granted.order.withLock { $0.append(index) }
                }
                // Each waiter queues before the next is started.
                while limiter.waiting < index + 1 { await Task.yield() }
            }
            // Both permits are held and six wait. One permit returned at a time goes to the
            // longest waiter, and to no one else: the holders stay at the bound. (Returning
            // several at once would let the woken tasks record themselves in any order.)
            for step in 0..<6 {
                limiter.release()
                while granted.order.withLock({ $0.count }) < step + 1 { await Task.yield() }
                for _ in 0..<10 { await Task.yield() }
                #expect(granted.order.withLock { $0 } == Array(0...step))
                #expect(limiter.waiting == 5 - step)
            }
        }
    }

    @Test(.timeLimit(.minutes(1))) func aCancelledWaiterLeavesAndHoldsNothing() async throws {
        let limiter = AsyncLimiter(permits: 1)
        try await limiter.acquire()
        let waiter = Task { () -> Bool in
            do {
                try await limiter.acquire()
                return true
            } catch {
                return false
            }
        }
        while limiter.waiting < 1 { await Task.yield() }
        waiter.cancel()
        #expect(await waiter.value == false, "a cancelled waiter gets CancellationError")
        #expect(limiter.waiting == 0)
        // Its place is not kept: the one permit goes back and the next acquire gets it at once.
        limiter.release()
        try await limiter.acquire()
        limiter.release()
    }

    @Test func anAlreadyCancelledTaskDoesNotWait() async {
        let limiter = AsyncLimiter(permits: 1)
        let task = Task { () -> Bool in
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                try await limiter.acquire()
                return true
            } catch {
                return false
            }
        }
        #expect(await task.value == false)
    }
}
