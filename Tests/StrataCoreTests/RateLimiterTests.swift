// The pacing rule and the meter behind hydration's `--rate` and its reported rate, with the
// clock passed in: no sleeping and no timing assertions.

import StrataCore
import Testing

@Suite struct RateLimiterTests {
    @Test func reservationsAreSpacedByTheirBytesOverTheRate() {
        var limiter = RateLimiter(bytesPerSecond: 1 << 20)
        let start: UInt64 = 5_000_000_000
        #expect(limiter.reserve(1 << 20, nowNanos: start) == 0)
        // The second MiB may start one second after the first.
        #expect(limiter.reserve(1 << 20, nowNanos: start) == 1_000_000_000)
        // Asked later, the wait is what is left of the budget.
        #expect(limiter.reserve(512 << 10, nowNanos: start + 1_500_000_000) == 500_000_000)
        #expect(limiter.reserve(1, nowNanos: start + 1_500_000_000) == 1_000_000_000)
    }

    @Test func anIdleLimiterSavesNoCredit() {
        var limiter = RateLimiter(bytesPerSecond: 1000)
        #expect(limiter.reserve(1000, nowNanos: 0) == 0)
        // Ten idle seconds later, one reservation goes at once and the next waits its share.
        #expect(limiter.reserve(1000, nowNanos: 10_000_000_000) == 0)
        #expect(limiter.reserve(1000, nowNanos: 10_000_000_000) == 1_000_000_000)
    }

    @Test func aChangedRateAppliesFromTheNextReservation() {
        var limiter = RateLimiter(bytesPerSecond: 1000)
        #expect(limiter.reserve(1000, nowNanos: 0) == 0)
        limiter.bytesPerSecond = 4000
        #expect(limiter.reserve(4000, nowNanos: 0) == 1_000_000_000)
        #expect(limiter.reserve(1, nowNanos: 0) == 2_000_000_000)
    }

    @Test func theMeterAveragesOverItsWindowAndForgetsOldSamples() {
        var meter = RateMeter(windowNanos: 2_000_000_000)
        #expect(meter.rate(nowNanos: 0) == 0)
        meter.record(1000, nowNanos: 1_000_000_000)
        // Younger than the window: divided by the time since the first sample.
        meter.record(1000, nowNanos: 1_500_000_000)
        #expect(meter.rate(nowNanos: 2_000_000_000) == 2000)
        // Later, the window: 2000 bytes over 2 s.
        #expect(meter.rate(nowNanos: 3_000_000_000) == 1000)
        // Once both samples left the window, nothing.
        #expect(meter.rate(nowNanos: 4_000_000_000) == 0)
    }

    @Test func limiterRefusesAZeroRate() async {
        await #expect(processExitsWith: .failure) { _ = RateLimiter(bytesPerSecond: 0) }
    }
}
