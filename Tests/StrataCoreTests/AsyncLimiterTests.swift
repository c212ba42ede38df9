// The async semaphore that bounds replication transfers and object-store requests: permits go
// to waiters in arrival order, never more than `permits` at once, and a waiter whose task is
// cancelled leaves at once with CancellationError, holding nothing.

@testable import StrataCore
import Synchronization
import Testing

@Suite struct AsyncLimiterTests {
    /// What the holders saw: the order they got permits in, and how many held one at once.
    final class Record: Sendable {
        let order = Mutex<[Int]>([])
        let holding = Atomic<Int>(0)
        let most = Atomic<Int>(0)
    }

    @Test func waitersGetPermitsInOrderAndNeverMoreThanTheBound() async throws {
        let limiter = AsyncLimiter(permits: 2)
        let record = Record()
        try await limiter.acquire()
        try await limiter.acquire()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<6 {
                group.addTask {
                    try? await limiter.acquire()
                    let now = record.holding.add(1, ordering: .relaxed).newValue
                    _ = record.most.max(now, ordering: .relaxed)
                    record.order.withLock { $0.append(index) }
                    await Task.yield()
                    record.holding.subtract(1, ordering: .relaxed)
                    limiter.release()
                }
                // Each waiter queues before the next is started.
                while limiter.waiting < index + 1 { await Task.yield() }
            }
            limiter.release()
            limiter.release()
        }
        #expect(record.order.withLock { $0 } == Array(0..<6))
        #expect(record.most.load(ordering: .relaxed) <= 2)
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
