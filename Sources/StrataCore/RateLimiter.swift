// Rate bounds for background copies (hydration, flatten): a pure pacing rule and a pure
// meter, with the clock passed in (nanoseconds of a monotonic clock), so both are tested
// without sleeping and any number of threads can share one under a lock.
//
// The limiter paces by reservation: each reservation of N bytes starts when the previous one's
// budget has run out and takes N / rate seconds of budget. A limiter idle for a while does not
// save up credit, so a burst after a pause is one reservation, never seconds' worth of them.
// The meter reports the bytes of the last `windowNanos` divided by that window (or by the time
// since its first sample, while it is younger than the window).

/// Paces reservations of bytes to at most `bytesPerSecond`.
public struct RateLimiter: Sendable, Equatable {
    /// The bound; changing it applies from the next reservation.
    public var bytesPerSecond: UInt64
    /// When the budget reserved so far runs out; nil before the first reservation.
    private var budgetEndNanos: UInt64?

    /// - Precondition: `bytesPerSecond` is positive.
    public init(bytesPerSecond: UInt64) {
        precondition(bytesPerSecond > 0, "a rate bound is positive")
        self.bytesPerSecond = bytesPerSecond
    }

    /// Reserves `bytes` at time `nowNanos`; returns how many nanoseconds to wait before using them.
    public mutating func reserve(_ bytes: UInt64, nowNanos: UInt64) -> UInt64 {
        precondition(self.bytesPerSecond > 0, "a rate bound is positive")
        let start = max(self.budgetEndNanos ?? nowNanos, nowNanos)
        let span = UInt64((Double(bytes) / Double(self.bytesPerSecond) * 1e9).rounded(.up))
        self.budgetEndNanos = start + span
        return start - nowNanos
    }
}

/// Bytes per second over a sliding window.
public struct RateMeter: Sendable, Equatable {
    public let windowNanos: UInt64
    private var samples: [(nanos: UInt64, bytes: UInt64)] = []
    private var firstNanos: UInt64?

    /// - Precondition: `windowNanos` is positive.
    public init(windowNanos: UInt64 = 5_000_000_000) {
        precondition(windowNanos > 0, "a meter's window is positive")
        self.windowNanos = windowNanos
    }

    public static func == (left: RateMeter, right: RateMeter) -> Bool {
        left.windowNanos == right.windowNanos && left.firstNanos == right.firstNanos
            && left.samples.map(\.nanos) == right.samples.map(\.nanos)
            && left.samples.map(\.bytes) == right.samples.map(\.bytes)
    }

    /// Counts `bytes` done at `nowNanos`.
    public mutating func record(_ bytes: UInt64, nowNanos: UInt64) {
        if self.firstNanos == nil { self.firstNanos = nowNanos }
        self.samples.append((nowNanos, bytes))
        self.trim(nowNanos)
    }

    /// The rate at `nowNanos`, in bytes per second (0 before any sample).
    public mutating func rate(nowNanos: UInt64) -> UInt64 {
        self.trim(nowNanos)
        guard let first = self.firstNanos else { return 0 }
        let span = max(min(self.windowNanos, nowNanos - first), 1_000_000)
        let bytes = self.samples.reduce(0) { $0 + $1.bytes }
        return UInt64(Double(bytes) / Double(span) * 1e9)
    }

    private mutating func trim(_ nowNanos: UInt64) {
        let horizon = nowNanos > self.windowNanos ? nowNanos - self.windowNanos : 0
        if let keep = self.samples.firstIndex(where: { $0.nanos >= horizon }) {
            self.samples.removeFirst(keep)
        } else {
            self.samples.removeAll()
        }
    }
}
