// The per-object in-flight table and bounded cache of a remote base (docs/OBJECTSTORE.md
// "Lazy reads"). Readers arrive on many threads (the daemon's thread pool); for each object
// index the first one fetches and every other one waiting on the same index joins its result,
// so an object is never fetched twice at once. A verified object stays in a cache of at most
// `capacity` objects, evicted oldest first; a failed fetch leaves nothing behind, so the next
// read retries.
//
// Invariants: an index is in `fetching` or in `cached`, never both; `cached.count <= capacity`
// and `order` holds exactly the cached indices. The mutex is never held while fetching.

import Dispatch
import StrataCore
import Synchronization

/// Fetches objects by index at most once at a time each, and keeps the newest few.
/// `Object` is what a fetch yields: a remote base keeps each object's body as received.
public final class ObjectFetchTable<Object: Sendable>: Sendable {
    /// One fetch in progress: its waiters block on `done` until the result is in `result`.
    private final class Flight: Sendable {
        let result = Mutex<Result<Object, StrataError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let waiters = Atomic<Int>(0)
    }

    /// What a reader does: take a cached object, join a fetch, or lead one.
    private enum Step {
        case hit(Object)
        case join(Flight)
        case lead(Flight)
    }

    private struct State {
        var fetching: [UInt64: Flight] = [:]
        var cached: [UInt64: Object] = [:]
        var order: [UInt64] = []
        var fetches = 0
    }

    /// Objects kept after their fetch.
    public let capacity: Int
    private let state = Mutex(State())

    /// - Precondition: `capacity` is at least 1.
    public init(capacity: Int) {
        precondition(capacity >= 1, "a fetch table keeps at least one object")
        self.capacity = capacity
    }

    /// Fetches started so far (successful or not).
    public var fetches: Int { self.state.withLock { $0.fetches } }

    /// True when object `index` is cached or being fetched: a reader should join that.
    public func holds(_ index: UInt64) -> Bool {
        self.state.withLock { $0.cached[index] != nil || $0.fetching[index] != nil }
    }

    /// Indices cached now, oldest first.
    public var cachedIndices: [UInt64] { self.state.withLock { $0.order } }

    /// The object at `index`: from the cache, from a fetch in flight, or from `fetch` run on
    /// this thread. `fetch` must return verified bytes or throw.
    /// - Throws: what `fetch` threw (to every reader that waited on it).
    public func object(_ index: UInt64, fetch: () throws(StrataError) -> Object) throws(StrataError) -> Object {
        let step = self.state.withLock { state -> Step in
            if let bytes = state.cached[index] { return .hit(bytes) }
            if let flight = state.fetching[index] {
                flight.waiters.wrappingAdd(1, ordering: .relaxed)
                return .join(flight)
            }
            let flight = Flight()
            state.fetching[index] = flight
            state.fetches += 1
            return .lead(flight)
        }
        switch step {
        case .hit(let bytes):
            return bytes
        case .join(let flight):
            flight.done.wait()
            guard let result = flight.result.withLock({ $0 }) else { preconditionFailure("a flight signals after its result") }
            return try result.get()
        case .lead(let flight):
            let result = Result { () throws(StrataError) -> Object in try fetch() }
            flight.result.withLock { $0 = result }
            self.state.withLock { state in
                precondition(state.fetching[index] === flight, "only the leader ends its flight")
                state.fetching[index] = nil
                guard case .success(let bytes) = result else { return }
                precondition(state.cached[index] == nil, "an index is fetching or cached, never both")
                state.cached[index] = bytes
                state.order.append(index)
                while state.order.count > self.capacity {
                    state.cached[state.order.removeFirst()] = nil
                }
            }
            let waiters = flight.waiters.load(ordering: .relaxed)
            for _ in 0..<waiters { flight.done.signal() }
            return try result.get()
        }
    }
}
