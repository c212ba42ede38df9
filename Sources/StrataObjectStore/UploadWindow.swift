// The bounded pipeline between a push's reading thread and its upload threads (Push.swift): the
// reader hands objects in as it reads them, each upload thread takes the next one, hashes it and
// sends it, and a new object is taken as soon as one is done, so a slow PUT holds one thread,
// never the whole window.
//
// Invariants: at most `capacity` objects are held at once (queued or being uploaded), so memory
// stays at `capacity` × the object size; the reader takes a slot (`reserve`) before it reads an
// object and the thread that finishes with it gives the slot back. After the first failure no
// object is handed out or accepted any more, the queue is emptied and its slots given back, so
// the reader never waits for a slot that no thread will free. A key is claimed once per push:
// an object whose bytes equal another of the same push is not sent twice.
//
// The lock guards a few fields for a few instructions; nothing blocks under it.

import Dispatch
import NIOCore
import StrataCore
import Synchronization

/// One object read from the pool, waiting for an upload thread: read straight into the buffer
/// the PUT sends, so its bytes are not copied again.
struct PendingObject: Sendable {
    let index: UInt64
    let body: ByteBuffer
}

/// What one upload thread did with one object.
enum UploadOutcome: Sendable {
    /// All zeros: a hole in the manifest.
    case hole
    case uploaded(ManifestEntry)
    /// Already in the store (a HEAD found it) or sent by another thread of this push.
    case skipped(ManifestEntry)
}

final class UploadWindow: Sendable {
    private struct State {
        var queue: [PendingObject] = []
        var closed = false
        var failure: StrataError?
        var claimed: Set<String> = []
        var outcomes: [UInt64: UploadOutcome] = [:]
    }

    /// Objects held at once, queued or being uploaded.
    let capacity: Int
    private let state = Mutex(State())
    private let slots: DispatchSemaphore
    private let queued = DispatchSemaphore(value: 0)

    /// - Precondition: `capacity` is at least 1.
    init(capacity: Int) {
        precondition(capacity >= 1, "a window holds at least one object")
        self.capacity = capacity
        self.slots = DispatchSemaphore(value: capacity)
    }

    /// Reader: waits for a free slot; false (no slot taken) once an upload failed.
    func reserve() -> Bool {
        self.slots.wait()
        guard self.failure == nil else {
            self.slots.signal()
            return false
        }
        return true
    }

    /// Reader: gives back a slot reserved for an object it did not submit.
    func unreserve() { self.slots.signal() }

    /// Reader: queues `object` in the slot it reserved; false (slot given back) after a failure.
    func submit(_ object: PendingObject) -> Bool {
        let accepted = self.state.withLock { state -> Bool in
            guard state.failure == nil else { return false }
            state.queue.append(object)
            return true
        }
        if accepted { self.queued.signal() } else { self.slots.signal() }
        return accepted
    }

    /// Reader: no more objects; wakes every upload thread so idle ones return.
    func close(threads: Int) {
        self.state.withLock { $0.closed = true }
        for _ in 0..<threads { self.queued.signal() }
    }

    /// Upload thread: the next object, waiting for one; nil when closed and empty, or failed.
    func take() -> PendingObject? {
        while true {
            self.queued.wait()
            enum Step {
                case object(PendingObject)
                case done
                case again
            }
            let step = self.state.withLock { state -> Step in
                if state.failure != nil { return .done }
                if !state.queue.isEmpty { return .object(state.queue.removeFirst()) }
                return state.closed ? .done : .again
            }
            switch step {
            case .object(let object): return object
            case .done:
                // Pass the wake-up on: another thread may still be waiting for it.
                self.queued.signal()
                return nil
            case .again: continue
            }
        }
    }

    /// Upload thread: true when this push has not sent (or begun sending) `key` yet; claims it.
    func claim(_ key: String) -> Bool {
        self.state.withLock { $0.claimed.insert(key).inserted }
    }

    /// Upload thread: records what became of object `index` and frees its slot.
    func finish(_ index: UInt64, _ outcome: UploadOutcome) {
        self.state.withLock { $0.outcomes[index] = outcome }
        self.slots.signal()
    }

    /// Upload thread: records `error` (the first wins), drops what is queued, frees its slots
    /// and the failing object's own.
    func fail(_ error: StrataError) {
        let dropped = self.state.withLock { state -> Int in
            state.failure = state.failure ?? error
            defer { state.queue.removeAll() }
            return state.queue.count
        }
        for _ in 0..<(dropped + 1) { self.slots.signal() }
        self.queued.signal()
    }

    /// The first failure, if any.
    var failure: StrataError? { self.state.withLock { $0.failure } }

    /// Objects finished so far (holes included).
    var finished: Int { self.state.withLock { $0.outcomes.count } }

    /// What became of each object, by index.
    var outcomes: [UInt64: UploadOutcome] { self.state.withLock { $0.outcomes } }
}
