// Engine work for replication runs on a thread pool: it reads the pool, applies streams and
// fsyncs, so it must never run on an event loop or hold one of the cooperative pool's few
// threads. These wrap `NIOThreadPool.runIfActive` for the engine's typed errors.

import NIOPosix
import StrataCore

extension NIOThreadPool {
    /// Runs `body` on the pool and returns its outcome; a pool already shut down is an `.io` error.
    func result<T: Sendable>(_ body: @escaping @Sendable () throws(StrataError) -> T) async -> Result<T, StrataError> {
        do {
            return try await self.runIfActive { Result { () throws(StrataError) in try body() } }
        } catch {
            return .failure(StrataError(.io, "replication: the daemon is shutting down (\(error))"))
        }
    }

    /// Runs `body` on the pool.
    /// - Throws: what `body` throws; `.io` when the pool has shut down.
    func engine<T: Sendable>(_ body: @escaping @Sendable () throws(StrataError) -> T) async throws(StrataError) -> T {
        try await self.result(body).get()
    }
}
