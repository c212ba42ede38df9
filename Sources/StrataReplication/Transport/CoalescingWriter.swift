// The one writer of a connection on which many callers queue messages (a mirror leg's requests,
// the leg daemon's answers): callers append bytes without waiting, and one task writes whatever
// has accumulated in a single write. Under load many messages go in one write and one wakeup,
// instead of one task hop and one write each; when idle a message goes at once.
//
// Invariants: bytes go out in the order they were appended; after `finish` nothing more is
// taken and `drain` returns once what was taken is written.

import NIOCore
import StrataCore
import Synchronization

/// Bytes queued by many callers for one writer task.
public final class CoalescingWriter: Sendable {
    private struct State {
        var pending = ByteBuffer()
        var finished = false
    }
    private let state = Mutex(State())
    private let doorbell: AsyncStream<Void>
    private let ringer: AsyncStream<Void>.Continuation

    public init() {
        (self.doorbell, self.ringer) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues `bytes`; false when the writer has finished (the bytes are dropped).
    @discardableResult
    public func append(_ bytes: ByteBuffer) -> Bool {
        var bytes = bytes
        let taken = self.state.withLock { state -> Bool in
            guard !state.finished else { return false }
            state.pending.writeBuffer(&bytes)
            return true
        }
        if taken { self.ringer.yield() }
        return taken
    }

    /// Takes nothing more; `drain` returns once what was queued is written.
    public func finish() {
        self.state.withLock { $0.finished = true }
        self.ringer.finish()
    }

    /// Writes what is queued, as it comes, until `finish` (or cancellation).
    /// - Throws: the connection's error.
    public func drain(to connection: any TransportConnection) async throws(StrataError) {
        for await _ in self.doorbell {
            try await self.writePending(connection)
        }
        try await self.writePending(connection)
    }

    private func writePending(_ connection: any TransportConnection) async throws(StrataError) {
        let bytes = self.state.withLock { state -> ByteBuffer in
            defer { state.pending = ByteBuffer() }
            return state.pending
        }
        guard bytes.readableBytes > 0 else { return }
        try await connection.write(bytes)
    }
}
