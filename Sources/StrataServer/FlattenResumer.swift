// Resumes flattens a crash or a shutdown interrupted: a volume whose record carries the
// flatten flag is flattened again in the background when the daemon opens the pool, while it
// serves. A resumed flatten skips the chunks already copied (they are no longer holes). At
// shutdown (`stop`) the flattens stop between steps, commit, and resume at the next start.
// Each flatten runs on a thread of its own that `run` starts and awaits.

import Foundation
import Logging
import StrataCore
import Synchronization

final class FlattenResumer: Sendable {
    private let pool: Pool
    private let logger: Logger
    private let cancelled = Atomic<Bool>(false)

    init(pool: Pool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    /// Flattens every volume whose flatten was interrupted; returns when all have finished or
    /// stopped.
    func run() async {
        await withDiscardingTaskGroup { group in
            // Volumes over a remote base are the hydrator's (Hydrator.swift).
            for volume in self.pool.volumesFlattening() where !Hydrator.hasRemoteBase(self.pool, volume) {
                self.logger.notice("resuming the flatten of volume \(volume)")
                group.addTask {
                    await DedicatedThread.run(name: "strata-flatten-\(volume)") { self.flatten(volume) }
                }
            }
        }
    }

    /// Stops every flatten at its next step. Does not block.
    func stop() {
        self.cancelled.store(true, ordering: .relaxed)
    }

    private func flatten(_ volume: String) {
        do throws(StrataError) {
            try self.pool.flatten(volume, isCancelled: { self.cancelled.load(ordering: .relaxed) })
            try self.pool.flush()
            try self.pool.collectBases()
            self.logger.notice("flattened volume \(volume): it no longer needs its base image")
        } catch {
            self.logger.error("\(error.message)")
        }
    }
}
