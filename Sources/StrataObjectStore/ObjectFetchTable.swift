// The per-object in-flight table and bounded cache of a remote base (docs/OBJECTSTORE.md
// "Lazy reads"). Readers arrive on many threads (the daemon's thread pool); for each object
// index the first one fetches and every other one waiting on the same index joins its result,
// so an object is never fetched twice at once. A verified object stays in a cache of at most
// `capacity` objects, evicted oldest first; a failed fetch leaves nothing behind, so the next
// read retries.
//
// An object that is usable while it arrives (a remote base's `ObjectBytes`) takes the other
// path, `arriving`: the first reader makes it and starts its fetch without waiting for it, and
// every reader, that one included, gets the object at once and waits on the object itself for
// the bytes it needs; when the fetch ends the object moves to the cache, or is dropped if it
// failed, so the next read fetches it again.
//
// Invariants: an index is in `fetching`, in `arriving` or in `cached`, never two of them;
// `cached.count <= capacity` and `order` holds exactly the cached indices. The mutex is never
// held while fetching.

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
        var arriving: [UInt64: Object] = [:]
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
        self.state.withLock { $0.cached[index] != nil || $0.fetching[index] != nil || $0.arriving[index] != nil }
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
                self.cache(bytes, at: index, &state)
            }
            let waiters = flight.waiters.load(ordering: .relaxed)
            for _ in 0..<waiters { flight.done.signal() }
            return try result.get()
        }
    }

    /// The object at `index` for a reader that can use it while it arrives: the cached one, the
    /// one arriving, or one `make` makes (under the table's lock: it must not wait), which is
    /// then handed to `start` to begin its fetch. `start` must not wait for the fetch; the fetch
    /// calls the closure it is given when it ends, with true when the object is whole and
    /// checked (it is then cached), false when it failed (it is dropped).
    public func arriving(
        _ index: UInt64, make: () -> Object, start: (Object, _ ended: @escaping @Sendable (Bool) -> Void) -> Void
    ) -> Object {
        let (object, lead) = self.state.withLock { state -> (Object, Bool) in
            if let object = state.cached[index] ?? state.arriving[index] { return (object, false) }
            precondition(state.fetching[index] == nil, "an object is fetched whole or arrives, never both")
            let object = make()
            state.arriving[index] = object
            state.fetches += 1
            return (object, true)
        }
        if lead {
            start(object) { whole in
                self.state.withLock { state in
                    state.arriving[index] = nil
                    if whole { self.cache(object, at: index, &state) }
                }
            }
        }
        return object
    }

    private func cache(_ object: Object, at index: UInt64, _ state: inout State) {
        precondition(state.cached[index] == nil, "an index is fetching, arriving or cached, never two")
        state.cached[index] = object
        state.order.append(index)
        while state.order.count > self.capacity {
            state.cached[state.order.removeFirst()] = nil
        }
    }
}
