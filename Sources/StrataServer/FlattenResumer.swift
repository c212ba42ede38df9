// Resumes flattens a crash or a shutdown interrupted: a volume whose record carries the
// flatten flag is flattened again in the background when the daemon opens the pool, while it
// serves. A resumed flatten skips the chunks already copied (they are no longer holes). At
// shutdown the flattens stop between steps, commit, and resume at the next start.

import Foundation
import Logging
import StrataCore
import Synchronization

final class FlattenResumer: Sendable {
    private let cancelled = Atomic<Bool>(false)
    private let done = DispatchGroup()

    /// Starts a background flatten for every volume whose flatten was interrupted.
    static func start(pool: Pool, logger: Logger) -> FlattenResumer {
        let resumer = FlattenResumer()
        for volume in pool.volumesFlattening() {
            logger.notice("resuming the flatten of volume \(volume)")
            resumer.done.enter()
            let thread = Thread { [resumer] in
                defer { resumer.done.leave() }
                do throws(StrataError) {
                    try pool.flatten(volume, isCancelled: { resumer.cancelled.load(ordering: .relaxed) })
                    try pool.flush()
                    try pool.collectBases()
                    logger.notice("flattened volume \(volume): it no longer needs its base image")
                } catch {
                    logger.error("\(error.message)")
                }
            }
            thread.name = "flatten \(volume)"
            thread.start()
        }
        return resumer
    }

    /// Stops every flatten between steps and waits for them.
    func stop() {
        self.cancelled.store(true, ordering: .relaxed)
        self.done.wait()
    }
}
