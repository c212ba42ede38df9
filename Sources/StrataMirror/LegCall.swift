// Every call to a local leg goes through `LegCall.run`, which bounds it by the leg's timeout (`mirror
// add --timeout`, default `MirrorLimits.legTimeoutMillisDefault`): a leg that hangs (a dead disk,
// a cut link) must not hold the volume's writes longer than that. The call runs on a Dispatch
// worker while the caller waits on a semaphore with a deadline; a call that misses it is
// reported as a failure (the leg goes degraded) and is left to finish or hang on its own
// thread, since a blocked system call cannot be cancelled. Whatever such a late call changes on
// the leg is found by the leg's own split-point diff at the next resync. A remote leg's calls
// need no worker (its link enforces the deadline itself: RemoteLeg.swift, MirrorLink.swift).

import Dispatch
import StrataCore
import Synchronization

enum LegCall {
    /// Runs `body` with a deadline of `timeoutMillis` (0: none).
    /// - Throws: `body`'s error, or `.io` naming the leg and the timeout when it is late.
    static func run<T: Sendable>(
        leg: String, timeoutMillis: UInt64, _ body: @escaping @Sendable () throws(StrataError) -> T
    ) throws(StrataError) -> T {
        try Self.start(leg: leg, timeoutMillis: timeoutMillis, body).wait()
    }

    /// Starts `body` on a Dispatch worker (with a deadline of 0, none: at once, on this thread)
    /// and returns what to wait on, so the caller can do its own part meanwhile.
    static func start<T: Sendable>(
        leg: String, timeoutMillis: UInt64, _ body: @escaping @Sendable () throws(StrataError) -> T
    ) -> Pending<T> {
        let pending = Pending<T>(leg: leg, timeoutMillis: timeoutMillis, body: body)
        if timeoutMillis == 0 {
            pending.run()
        } else {
            DispatchQueue.global().async { pending.run() }
        }
        return pending
    }

    /// A leg call under way.
    final class Pending<T: Sendable>: Sendable {
        let leg: String
        let timeoutMillis: UInt64
        private let outcome = Mutex<Result<T, StrataError>?>(nil)
        private let done = DispatchSemaphore(value: 0)
        private let started = DispatchTime.now()
        /// The call, dropped before the outcome is published: what it holds (the leg, and with
        /// it the leg pool's lock) is released by the time a waiter sees the outcome.
        private let body: Mutex<(@Sendable () throws(StrataError) -> T)?>

        init(leg: String, timeoutMillis: UInt64, body: (@Sendable () throws(StrataError) -> T)? = nil) {
            self.leg = leg
            self.timeoutMillis = timeoutMillis
            self.body = Mutex(body)
        }

        /// Runs the call and publishes its outcome.
        func run() {
            let result: Result<T, StrataError>
            do {
                guard let body = self.body.withLock({ body in defer { body = nil }; return body }) else { return }
                result = Result { () throws(StrataError) in try body() }
            }
            self.finish(result)
        }

        func finish(_ result: Result<T, StrataError>) {
            self.outcome.withLock { $0 = result }
            self.done.signal()
        }

        /// Waits for the call until its deadline (counted from its start).
        /// - Throws: the call's error, or `.io` naming the leg and the timeout when it is late.
        func wait() throws(StrataError) -> T {
            let deadline: DispatchTime =
                self.timeoutMillis == 0 ? .distantFuture : self.started + .milliseconds(Int(self.timeoutMillis))
            guard self.done.wait(timeout: deadline) == .success else {
                throw StrataError(
                    .io,
                    "mirror leg \(self.leg): no answer within \(self.timeoutMillis) ms; the leg is degraded until it answers again")
            }
            guard let result = self.outcome.withLock({ $0 }) else { preconditionFailure("leg call signalled without a result") }
            return try result.get()
        }
    }
}

/// Limits of mirrors, each with the reason for its value.
public enum MirrorLimits {
    /// A leg call's default deadline: long enough for a loaded disk's worst fsync, short enough
    /// that a VM's I/O does not time out behind a dead leg (guests usually wait 30 s or more).
    public static let legTimeoutMillisDefault: UInt64 = 5_000
    /// How often a connected leg takes a new split-point pair. After a crash, the resync copies
    /// what changed since the newest pair on both sides: this bounds that window. Each new pair
    /// makes the next write to every chunk copy it once (as any snapshot does), so it is not
    /// taken more often than needed.
    public static let splitPointSeconds: Double = 30
    /// How often a full copy (`attach --full`) takes a checkpoint: a split-point pair and the
    /// chunk it has reached, from which it resumes after a crash. Each costs a flush of both
    /// pools; a crash repeats at most this much of the copy.
    public static let fullCopyCheckpointSeconds: Double = 2
    /// How often a degraded leg with auto-resync is tried again.
    public static let probeSeconds: Double = 5
    /// How often the leg pools commit what they hold (their commit timer).
    public static let legCommitSeconds: Double = 1
    /// Chunks copied per resync step: one stripe-locked read and one leg write each.
    public static let resyncBatchChunks: UInt64 = 16
    /// Lock stripes over a mirrored volume's chunks, ordering overlapping writes on both copies.
    /// Chunk i takes stripe i mod 1024, so writes in flight that do not overlap rarely share one:
    /// with 64, eight 1 MiB sequential writes (16 chunks each, 128 in all) wrapped around and
    /// each waited for another's round trip to the leg.
    static let stripes = 1024
}
