// Engine workers for handler tests on `EmbeddedChannel`, whose event loop is the test's thread:
// each work item runs at once, in place, and is counted, so a test can tell what a handler sent
// off its event loop. Stopped, they refuse work as a thread pool that is shutting down does.

import StrataFrontEnd
import Synchronization

public final class InPlaceWorkers: EngineWorkers {
    private let state: Mutex<(items: Int, stopped: Bool)>

    public init(stopped: Bool = false) {
        self.state = Mutex((0, stopped))
    }

    /// Work items handed over so far (refused ones included).
    public var items: Int { self.state.withLock { $0.items } }

    public func perform(_ work: @escaping @Sendable (_ active: Bool) -> Void) {
        let stopped = self.state.withLock { state in
            state.items += 1
            return state.stopped
        }
        work(!stopped)
    }
}
