// Shared machinery for the engine benchmarks: a monotonic clock, a seeded PRNG, order
// statistics, thread runners (a fixed list of operations split over threads; and a timed run
// alternating between two targets slice by slice), pool directories under BENCH_DIR, and
// markdown tables on stdout (progress goes to stderr).
//
// Every measurement calls the engine directly on plain threads (the engine blocks its caller;
// no async, no event loop), so the numbers are the engine's own cost with no front end.
// Nothing here asserts on timings: the benchmarks report medians and ratios only.

import Foundation
import StrataCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: Clock and statistics

/// Monotonic nanoseconds.
@inline(__always)
func nowNanos() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

/// Seconds elapsed since `start` (from `nowNanos`).
func secondsSince(_ start: UInt64) -> Double { Double(nowNanos() - start) / 1e9 }

enum Stats {
    /// The value at quantile `q` (0...1) by nearest rank; `values` need not be sorted.
    static func quantile(_ values: [Double], _ q: Double) -> Double {
        precondition(!values.isEmpty, "quantile of no values")
        let sorted = values.sorted()
        let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    /// The median; the mean of the middle two for an even count.
    static func median(_ values: [Double]) -> Double {
        precondition(!values.isEmpty, "median of no values")
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

// MARK: Seeded PRNG

/// SplitMix64: small, fast and seedable, so every run issues the same offsets.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in 0..<bound.
    mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0, "empty range")
        return self.next() % bound
    }
}

/// 0..<count in a seeded random order.
func permutation(_ count: Int, seed: UInt64) -> [UInt64] {
    var rng = SplitMix64(seed: seed)
    var values = (0..<UInt64(count)).map { $0 }
    values.shuffle(using: &rng)
    return values
}

// MARK: Threads

/// Collects the first error any worker thread throws.
final class FailureBox: Sendable {
    private let first = Mutex<(any Error)?>(nil)

    func record(_ error: any Error) { self.first.withLock { if $0 == nil { $0 = error } } }
    var error: (any Error)? { self.first.withLock { $0 } }
}

/// Shared state of a timed run: an operation counter, a stop flag and the first failure.
final class RunControl: Sendable {
    let operations = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let failures = FailureBox()

    var shouldStop: Bool { self.stopping.load(ordering: .relaxed) }
    func completed(_ count: Int = 1) { self.operations.add(count, ordering: .relaxed) }
}

/// Starts `count` threads running `body(index)` and waits for them all.
func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    ParallelThreads.run(count: count, name: "strata-bench", stackSize: 1 << 20, body)
}

/// Shared state of an alternating run: the current target (0 or 1; -1 while paused), the
/// operations started and not yet finished, the completed count and the stop flag.
final class AlternatingControl: Sendable {
    static let paused = -1
    let target = Atomic<Int>(AlternatingControl.paused)
    let inFlight = Atomic<Int>(0)
    let run = RunControl()
}

/// Runs one operation at a time on `threads` threads for `slices` slices of `slice` seconds,
/// switching the target between 0 and 1 in the order 0 1 1 0 0 1 1 0 … (so a steady drift
/// affects both alike), and returns the IOPS of each slice with its target. Between slices the
/// workers pause and `between` runs (untimed; for example a commit, so dirty pages do not pile
/// up from one slice into the next). `makeWorker(thread)` runs on the worker thread and returns
/// its operation, `operation(target)`.
func alternatingRun(
    threads: Int, slices: Int, slice: Double, between: () throws -> Void = {},
    _ makeWorker: @escaping @Sendable (Int) -> (Int) throws -> Void
) throws -> [(target: Int, rate: Double)] {
    let control = AlternatingControl()
    let group = DispatchGroup()
    for index in 0..<threads {
        group.enter()
        let thread = Thread {
            let operation = makeWorker(index)
            while !control.run.shouldStop {
                // Announce the operation before reading the target, so the pause below never
                // misses one that is about to start (both sides sequentially consistent).
                control.inFlight.add(1, ordering: .sequentiallyConsistent)
                let target = control.target.load(ordering: .sequentiallyConsistent)
                if target == AlternatingControl.paused {
                    control.inFlight.subtract(1, ordering: .sequentiallyConsistent)
                    usleep(50)
                    continue
                }
                do { try operation(target) } catch {
                    control.run.failures.record(error)
                    control.run.stopping.store(true, ordering: .relaxed)
                }
                control.run.completed()
                control.inFlight.subtract(1, ordering: .sequentiallyConsistent)
            }
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    var samples: [(target: Int, rate: Double)] = []
    var failure: (any Error)?
    for position in 0..<slices {
        let target = [0, 1, 1, 0][position % 4]
        let before = control.run.operations.load(ordering: .sequentiallyConsistent)
        let start = nowNanos()
        control.target.store(target, ordering: .sequentiallyConsistent)
        usleep(UInt32(slice * 1e6))
        control.target.store(AlternatingControl.paused, ordering: .sequentiallyConsistent)
        let end = nowNanos()
        while control.inFlight.load(ordering: .sequentiallyConsistent) > 0 { usleep(20) }
        let count = control.run.operations.load(ordering: .sequentiallyConsistent) - before
        samples.append((target, Double(count) / (Double(end - start) / 1e9)))
        if control.run.shouldStop { break }
        do { try between() } catch {
            failure = error
            break
        }
    }
    control.run.stopping.store(true, ordering: .relaxed)
    group.wait()
    if let error = control.run.failures.error ?? failure { throw error }
    return samples
}

/// Runs `body` on `threads` threads, each given an equal slice of `items`; returns the wall-clock seconds.
func fixedRun(
    threads: Int, items: [UInt64], _ body: @escaping @Sendable (Int, ArraySlice<UInt64>) throws -> Void
) throws -> Double {
    let failures = FailureBox()
    let per = (items.count + threads - 1) / threads
    let start = nowNanos()
    runThreads(threads) { index in
        let lower = min(index * per, items.count)
        let upper = min(lower + per, items.count)
        do { try body(index, items[lower..<upper]) } catch { failures.record(error) }
    }
    let seconds = secondsSince(start)
    if let error = failures.error { throw error }
    return seconds
}

// MARK: I/O buffers

/// A page-aligned buffer filled with a non-zero pattern, freed by the caller.
func patternBuffer(_ count: Int, seed: UInt8 = 0xA5) -> UnsafeMutableRawBufferPointer {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    for index in 0..<count { buffer[index] = seed &+ UInt8(truncatingIfNeeded: index &* 31) }
    return buffer
}

/// A page-aligned pattern buffer freed with its owner (for closures that outlive a scope).
final class IOBuffer {
    let bytes: UnsafeMutableRawBufferPointer

    init(_ count: Int, seed: UInt8 = 0xA5) { self.bytes = patternBuffer(count, seed: seed) }
    deinit { self.bytes.deallocate() }
}

/// Writes the whole volume with `blockSize` writes, in order; returns the seconds taken.
func fill(_ pool: Pool, _ handle: VolumeHandle, size: UInt64, blockSize: Int = 1 << 20) throws -> Double {
    let buffer = patternBuffer(blockSize)
    defer { buffer.deallocate() }
    let start = nowNanos()
    var offset: UInt64 = 0
    while offset < size {
        let count = Int(min(UInt64(blockSize), size - offset))
        try pool.write(handle, at: offset, UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        offset += UInt64(count)
    }
    return secondsSince(start)
}

/// Reads the whole volume twice with 1 MiB reads, untimed, so every page of it is cached and
/// on the kernel's active list before a timed phase. Without this, the first seconds of a
/// random-access phase after heavy write-back ran at half speed or less on the reference
/// machine (page activation on first touch), which swamped the differences being measured.
func prime(_ pool: Pool, _ handle: VolumeHandle, size: UInt64) throws {
    let blockSize = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
    defer { buffer.deallocate() }
    for _ in 0..<2 {
        var offset: UInt64 = 0
        while offset < size {
            let count = Int(min(UInt64(blockSize), size - offset))
            try pool.read(handle, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
            offset += UInt64(count)
        }
    }
}

// MARK: Pools on disk

/// Where pools live: `BENCH_DIR` (default /work/bench-tmp), never inside the repository.
enum BenchDirectory {
    static var root: String { ProcessInfo.processInfo.environment["BENCH_DIR"] ?? "/work/bench-tmp" }

    /// A fresh pool directory `root/name` holding a sparse pool of `size` bytes; removes any old one.
    static func freshPool(_ name: String, size: UInt64, chunkSize: UInt64 = 64 << 10) throws -> Pool {
        let directory = Self.root + "/" + name
        Self.remove(name)
        try Pool.create(directory: directory, size: size, chunkSize: chunkSize)
        return try Pool.open(directory: directory)
    }

    static func remove(_ name: String) {
        let directory = Self.root + "/" + name
        if FileManager.default.fileExists(atPath: directory) {
            do { try FileManager.default.removeItem(atPath: directory) } catch {
                log("warning: cannot remove \(directory): \(error)")
            }
        }
    }
}

/// Flushes the kernel's dirty pages so one measurement's write-back does not land in the next.
func syncFilesystems() { sync() }

// MARK: Output

/// Progress for the person watching; tables go to stdout.
func log(_ message: String) {
    let elapsed = String(format: "%7.1f", secondsSince(processStart))
    FileHandle.standardError.write(Data("[bench \(elapsed)s] \(message)\n".utf8))
}

/// When the process started, for the elapsed time in progress lines.
let processStart = nowNanos()

/// A markdown table printed to stdout.
struct Table {
    let title: String
    let header: [String]
    var rows: [[String]] = []
    var notes: [String] = []

    init(_ title: String, _ header: [String]) {
        self.title = title
        self.header = header
    }

    mutating func add(_ row: [String]) {
        precondition(row.count == self.header.count, "row has \(row.count) cells, header \(self.header.count)")
        self.rows.append(row)
    }

    func print() {
        var text = "### \(self.title)\n\n"
        text += "| " + self.header.joined(separator: " | ") + " |\n"
        text += "|" + self.header.map { _ in "---" }.joined(separator: "|") + "|\n"
        for row in self.rows { text += "| " + row.joined(separator: " | ") + " |\n" }
        if !self.notes.isEmpty { text += "\n" + self.notes.map { "- \($0)" }.joined(separator: "\n") + "\n" }
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}

enum Format {
    static func count(_ value: Double) -> String {
        if value >= 100 { return String(format: "%.0f", value) }
        return String(format: "%.1f", value)
    }

    static func ratio(_ value: Double) -> String { String(format: "%.2f", value) }
    static func percent(_ value: Double) -> String { String(format: "%.0f%%", value * 100) }
    static func millis(_ seconds: Double) -> String { String(format: "%.2f", seconds * 1e3) }
    static func micros(_ seconds: Double) -> String { String(format: "%.1f", seconds * 1e6) }
    static func seconds(_ value: Double) -> String { String(format: "%.1f", value) }
    static func size(_ bytes: UInt64) -> String {
        bytes >= 1 << 30 && bytes % (1 << 30) == 0 ? "\(bytes >> 30) GiB" : "\(bytes >> 20) MiB"
    }
    static func mibPerSecond(_ bytes: Double, _ seconds: Double) -> String {
        String(format: "%.0f", bytes / seconds / 1_048_576)
    }
}
