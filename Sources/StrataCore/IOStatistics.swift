// What the front ends' I/O costs and counts, per volume and per front end, for the daemon's
// /metrics (StrataHTTP). The engine's public I/O entry points (`read`, `write`, `trim`,
// `writeZeroes`, `flush(_:)` in Pool+IO.swift and Pool+Commit.swift) are the one place both
// NBD and iSCSI call the engine, so they are where requests are counted: a handle the front end
// opened with `Pool.handle(_:frontEnd:)` carries its `VolumeIOCounters`, and every request on it
// adds to them.
//
// Invariants and cost: counting never takes a lock. Each number is a relaxed atomic add on a
// counter of its own; a request costs two monotonic clock reads and six adds (operations,
// bytes, latency sum, one latency bucket, in-flight up and down) plus one on failure. A handle
// without counters (`--metrics off`, and every handle the control plane opens: imports,
// streams, replication) pays one nil check. Readers (a scrape) load each counter on its own, so
// a scrape may see a request's count before its bytes: Prometheus counters only need to be
// monotonic, which relaxed adds keep. The table of counters is found under a mutex only when a
// handle is opened (once per connection and export), never per request.

import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The front end a handle serves; a label of every I/O metric.
public enum FrontEnd: String, Sendable, CaseIterable, Codable {
    case nbd
    case iscsi
}

/// The I/O operations counted per volume and front end.
public enum IOOperation: Int, Sendable, CaseIterable {
    case read
    case write
    case trim
    case writeZeroes
    case flush

    /// The `op` label value (Prometheus label values are lower snake case by habit).
    public var label: String {
        switch self {
        case .read: return "read"
        case .write: return "write"
        case .trim: return "trim"
        case .writeZeroes: return "write_zeroes"
        case .flush: return "flush"
        }
    }
}

/// One monotonic counter, shared between threads without a lock.
public final class AtomicCounter: Sendable {
    private let value = Atomic<UInt64>(0)

    public init() {}

    @inline(__always)
    public func add(_ amount: UInt64) { self.value.wrappingAdd(amount, ordering: .relaxed) }

    @inline(__always)
    public func subtract(_ amount: UInt64) { self.value.wrappingSubtract(amount, ordering: .relaxed) }

    public var load: UInt64 { self.value.load(ordering: .relaxed) }
}

/// A latency histogram with fixed buckets (Prometheus `le` bounds), counted with atomics.
public final class LatencyHistogram: Sendable {
    /// Upper bounds of the buckets in nanoseconds, ascending: 10 µs to 10 s, roughly ×2.5 per
    /// step, which spans a cached read and a commit on a slow disk. A last bucket (+Inf) takes
    /// the rest.
    public static let boundsNanos: [UInt64] = [
        10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000,
        50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 10_000_000_000,
    ]

    /// Counts per bucket (not cumulative); the last is +Inf.
    let buckets: [AtomicCounter]
    /// The sum of every recorded value in nanoseconds.
    public let sumNanos = AtomicCounter()

    public init() {
        self.buckets = (0...Self.boundsNanos.count).map { _ in AtomicCounter() }
    }

    @inline(__always)
    public func record(nanos: UInt64) {
        var index = 0
        while index < Self.boundsNanos.count && nanos > Self.boundsNanos[index] { index += 1 }
        self.buckets[index].add(1)
        self.sumNanos.add(nanos)
    }

    /// The counts per bucket (not cumulative), the last being +Inf, and the sum.
    public var snapshot: HistogramSnapshot {
        HistogramSnapshot(counts: self.buckets.map(\.load), sumNanos: self.sumNanos.load)
    }
}

/// A histogram's counts at one moment.
public struct HistogramSnapshot: Sendable, Equatable {
    /// Counts per bucket of `LatencyHistogram.boundsNanos`, not cumulative; one more for +Inf.
    public var counts: [UInt64]
    public var sumNanos: UInt64

    public init(counts: [UInt64], sumNanos: UInt64) {
        self.counts = counts
        self.sumNanos = sumNanos
    }

    public var count: UInt64 { self.counts.reduce(0, &+) }
}

/// One volume's (or snapshot's) I/O through one front end.
public final class VolumeIOCounters: Sendable {
    public let volumeID: UInt64
    public let frontEnd: FrontEnd
    let operations: [AtomicCounter]
    let bytes: [AtomicCounter]
    let errors: [AtomicCounter]
    let latency: [LatencyHistogram]
    let inFlight = AtomicCounter()

    init(volumeID: UInt64, frontEnd: FrontEnd) {
        self.volumeID = volumeID
        self.frontEnd = frontEnd
        let count = IOOperation.allCases.count
        self.operations = (0..<count).map { _ in AtomicCounter() }
        self.bytes = (0..<count).map { _ in AtomicCounter() }
        self.errors = (0..<count).map { _ in AtomicCounter() }
        self.latency = (0..<count).map { _ in LatencyHistogram() }
    }

    /// Counts a request already served (it was never in flight: an event loop answered it
    /// without waiting), started at `start`.
    func served(_ operation: IOOperation, bytes: UInt64, since start: UInt64) {
        let index = operation.rawValue
        self.latency[index].record(nanos: MonotonicClock.nanos() &- start)
        self.operations[index].add(1)
        self.bytes[index].add(bytes)
    }

    /// Runs one request, counting it: in flight while it runs, then its operation, bytes,
    /// latency, and an error if it threw.
    @inline(__always)
    func measure<T>(_ operation: IOOperation, bytes: UInt64, _ body: () throws(StrataError) -> T)
        throws(StrataError) -> T
    {
        self.inFlight.add(1)
        let start = MonotonicClock.nanos()
        defer {
            let index = operation.rawValue
            self.latency[index].record(nanos: MonotonicClock.nanos() &- start)
            self.operations[index].add(1)
            self.inFlight.subtract(1)
        }
        do {
            let result = try body()
            self.bytes[operation.rawValue].add(bytes)
            return result
        } catch {
            self.errors[operation.rawValue].add(1)
            throw error
        }
    }

    /// The counters now.
    public var snapshot: VolumeIOSnapshot {
        VolumeIOSnapshot(
            volumeID: self.volumeID, frontEnd: self.frontEnd,
            operations: IOOperation.allCases.map { operation in
                let index = operation.rawValue
                return OperationSnapshot(
                    operation: operation, count: self.operations[index].load, bytes: self.bytes[index].load,
                    errors: self.errors[index].load, latency: self.latency[index].snapshot)
            },
            inFlight: self.inFlight.load)
    }
}

/// One operation's counters at one moment.
public struct OperationSnapshot: Sendable, Equatable {
    public var operation: IOOperation
    public var count: UInt64
    public var bytes: UInt64
    public var errors: UInt64
    public var latency: HistogramSnapshot

    public init(operation: IOOperation, count: UInt64, bytes: UInt64, errors: UInt64, latency: HistogramSnapshot) {
        self.operation = operation
        self.count = count
        self.bytes = bytes
        self.errors = errors
        self.latency = latency
    }
}

/// A volume's counters through one front end at one moment.
public struct VolumeIOSnapshot: Sendable, Equatable {
    public var volumeID: UInt64
    public var frontEnd: FrontEnd
    public var operations: [OperationSnapshot]
    public var inFlight: UInt64

    public init(volumeID: UInt64, frontEnd: FrontEnd, operations: [OperationSnapshot], inFlight: UInt64) {
        precondition(operations.map(\.operation) == IOOperation.allCases, "one snapshot per operation, in order")
        self.volumeID = volumeID
        self.frontEnd = frontEnd
        self.operations = operations
        self.inFlight = inFlight
    }

    /// The counters of one operation.
    public subscript(operation: IOOperation) -> OperationSnapshot { self.operations[operation.rawValue] }
}

/// The pool's I/O and commit statistics. Off until the daemon turns it on (`serve --metrics on`).
public final class IOStatistics: Sendable {
    private let enabled = Atomic<Bool>(false)
    private let table = Mutex<[TableKey: VolumeIOCounters]>([:])
    /// Commits that wrote a new superblock, and how long each took (pages, syncs, flip).
    public let commits = LatencyHistogram()

    struct TableKey: Hashable {
        let volumeID: UInt64
        let frontEnd: FrontEnd
    }

    public init() {}

    /// Turns counting on or off for handles opened from now on.
    public func setEnabled(_ enabled: Bool) { self.enabled.store(enabled, ordering: .relaxed) }

    public var isEnabled: Bool { self.enabled.load(ordering: .relaxed) }

    /// The counters of a volume through a front end (made on first use), or nil when off.
    func counters(volumeID: UInt64, frontEnd: FrontEnd) -> VolumeIOCounters? {
        guard self.isEnabled else { return nil }
        let key = TableKey(volumeID: volumeID, frontEnd: frontEnd)
        return self.table.withLock { table in
            if let counters = table[key] { return counters }
            let counters = VolumeIOCounters(volumeID: volumeID, frontEnd: frontEnd)
            table[key] = counters
            return counters
        }
    }

    /// Drops the counters of a volume or snapshot that no longer exists, so a pool whose clones and
    /// snapshots come and go keeps counters only for those that exist (volume IDs are never reused).
    func forget(volumeID: UInt64) {
        self.table.withLock { table in
            for frontEnd in FrontEnd.allCases { table[TableKey(volumeID: volumeID, frontEnd: frontEnd)] = nil }
        }
    }

    /// Every volume's counters now, ordered by volume ID and front end.
    public func volumes() -> [VolumeIOSnapshot] {
        let all = self.table.withLock { Array($0.values) }
        return all.map(\.snapshot).sorted { ($0.volumeID, $0.frontEnd.rawValue) < ($1.volumeID, $1.frontEnd.rawValue) }
    }
}

/// The monotonic clock in nanoseconds (CLOCK_MONOTONIC, a vDSO call on Linux: no syscall).
public enum MonotonicClock {
    @inline(__always)
    public static func nanos() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }
}
