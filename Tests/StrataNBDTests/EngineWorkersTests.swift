// StrataFrontEnd's work split and queue, which NBD and iSCSI share: how a pass's requests are
// dealt into lanes, and `SerialWorkers`, which drains one connection's queue on one worker at a
// time (items in order; an item handed over during a drain asks for no other worker; a refusal
// reaches every queued item).

import StrataFrontEnd
import Synchronization
import Testing

/// Workers that hold what they are given until the test lets it run.
final class HeldWorkers: EngineWorkers {
    private let held = Mutex<[@Sendable (Bool) -> Void]>([])

    var count: Int { self.held.withLock { $0.count } }

    func perform(_ work: @escaping @Sendable (_ active: Bool) -> Void) {
        self.held.withLock { $0.append(work) }
    }

    /// Runs (or, with `active` false, refuses) everything held so far.
    func release(active: Bool = true) {
        for work in self.held.withLock({ held in defer { held.removeAll() }; return held }) { work(active) }
    }
}

/// What ran, in order, and what was refused.
final class Log: Sendable {
    private let entries = Mutex<[String]>([])
    var all: [String] { self.entries.withLock { $0 } }
    func add(_ entry: String) { self.entries.withLock { $0.append(entry) } }
}

@Suite struct SerialWorkersTests {
    @Test func itemsRunInOrderOnOneWorkerPerDrain() {
        let pool = HeldWorkers()
        let serial = SerialWorkers(on: pool)
        let log = Log()
        for name in ["a", "b", "c"] { serial.perform { active in log.add(active ? name : "refused \(name)") } }
        #expect(pool.count == 1, "items handed over while a drain is pending ask for no other worker")
        pool.release()
        #expect(log.all == ["a", "b", "c"])
        // The queue is empty and no drain runs: the next item asks for a worker again.
        serial.perform { _ in log.add("d") }
        #expect(pool.count == 1)
        pool.release()
        #expect(log.all == ["a", "b", "c", "d"])
    }

    @Test func anItemHandedOverDuringADrainRunsInThatDrain() {
        let pool = HeldWorkers()
        let serial = SerialWorkers(on: pool)
        let log = Log()
        serial.perform { _ in
            log.add("first")
            serial.perform { _ in log.add("second") }
        }
        pool.release()
        #expect(log.all == ["first", "second"])
        #expect(pool.count == 0)
    }

    @Test func aRefusalReachesEveryQueuedItem() {
        let pool = HeldWorkers()
        let serial = SerialWorkers(on: pool)
        let log = Log()
        for name in ["a", "b"] { serial.perform { active in log.add(active ? name : "refused \(name)") } }
        pool.release(active: false)
        #expect(log.all == ["refused a", "refused b"])
        serial.perform { active in log.add(active ? "c" : "refused c") }
        pool.release()
        #expect(log.all == ["refused a", "refused b", "c"])
    }
}

/// How a pass's requests are split into work items (`Array.dealt(into:)`, StrataFrontEnd).
@Suite struct LaneSplitTests {
    @Test func dealtRoundRobinKeepingOrder() {
        #expect(Array(0..<10).dealt(into: 4) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]])
        #expect(Array(0..<3).dealt(into: 4) == [[0], [1], [2]])
        #expect([Int]().dealt(into: 4).isEmpty)
        #expect(Array(0..<5).dealt(into: 1) == [[0, 1, 2, 3, 4]])
    }
}

extension LaneSplitTests {
    @Test func smallWritesShareALaneLargeOnesAndReadsSpread() {
        let write4K = Lanes.weight(bytes: 4096, read: false)
        #expect(Lanes.count(requests: 32, weight: 32 * write4K) == 1)
        #expect(Lanes.count(requests: 8, weight: 8 * Lanes.weight(bytes: 1 << 20, read: false)) == 4)
        #expect(Lanes.count(requests: 2, weight: 2 * Lanes.weight(bytes: 1 << 20, read: false)) == 2)
        #expect(Lanes.count(requests: 3, weight: 0) == 1, "requests without data (FLUSH) still get a lane")
        #expect(Lanes.count(requests: 64, weight: 64 * Lanes.weight(bytes: 8192, read: false)) == 2)
        // Reads that reached the workers would have waited (the disk, most likely): they spread.
        #expect(Lanes.count(requests: 32, weight: 32 * Lanes.weight(bytes: 4096, read: true)) == 4)
        #expect(Lanes.count(requests: 2, weight: 2 * Lanes.weight(bytes: 4096, read: true)) == 2)
    }
}
