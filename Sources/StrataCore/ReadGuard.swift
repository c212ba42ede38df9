// Keeps a data chunk from being reused while a read that looked it up may still be copying it.
// A read registers in the current epoch before its lookup and leaves when its device reads are
// done. Before a commit hands freed chunks back to the allocator, it opens a new epoch (reads
// from then on cannot see those chunks: they were unmapped before the commit began) and waits
// for every read of the older epochs to finish. Reads are short, so the wait is too.

#if canImport(Glibc)
import Glibc
#endif

final class ReadGuard: @unchecked Sendable {
    private let mutex = BlockingMutex()
    private var epoch: UInt64 = 0
    private var active: [UInt64: Int] = [:]

    /// Registers a read in the current epoch; with `.never`, only if that needs no wait (nil
    /// otherwise, having registered nothing).
    func enter(_ waiting: Waiting) -> UInt64? {
        self.mutex.withLock(waiting) {
            self.active[self.epoch, default: 0] += 1
            return self.epoch
        }
    }

    func leave(_ token: UInt64) {
        self.mutex.withLock {
            let count = self.active[token, default: 0] - 1
            precondition(count >= 0, "read guard: leave without enter (epoch \(token))")
            self.active[token] = count == 0 ? nil : count
        }
    }

    /// Waits until every read that entered before this call has left.
    func waitForEarlierReads() {
        let target = self.mutex.withLock {
            self.epoch += 1
            return self.epoch
        }
        while true {
            let done = self.mutex.withLock { self.active.keys.allSatisfy { $0 >= target } }
            if done { return }
            usleep(50)
        }
    }
}
