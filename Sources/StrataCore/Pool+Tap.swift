// Volume taps: the one place every change to a volume's contents can be seen by something above
// the engine, whichever front end or command made it. NBD, iSCSI (WRITE, WRITE SAME, UNMAP,
// COMPARE AND WRITE, WRITE ATOMIC, EXTENDED COPY), image import and every other writer call
// `write`, `writeZeroes`, `writeAtomic`, `copy` or `shareChunks`; each of those hands the change
// to the volume's tap, if it has one, together with the engine's own work as a closure. The tap
// decides the order (a mirror runs the local change, then applies it to its legs, before the
// caller's acknowledgement), and `flush` tells every tap after the pool's commit, so FLUSH, FUA
// and SYNCHRONIZE CACHE are durable on the tap's copies too before they return.
//
// A volume without a tap pays one relaxed atomic load per change. Taps are for contents only:
// the control plane (delete, rollback, resize, rename, receive) is guarded by the tap's owner.

import Foundation
import Synchronization

/// A change to a volume's contents, as a tap sees it.
public enum VolumeChange {
    /// `bytes` written at `offset`.
    case write(offset: UInt64, bytes: UnsafeRawBufferPointer)
    /// `length` bytes at `offset` made to read as zeros; `trim` when whole chunks may be unmapped.
    case zero(offset: UInt64, length: UInt64, trim: Bool)
    /// `length` bytes at `offset` whose new contents the tap reads back from the volume (in-pool
    /// copies, whose bytes the engine never holds).
    case copied(offset: UInt64, length: UInt64)

    /// The first byte and the length the change covers.
    public var range: (offset: UInt64, length: UInt64) {
        switch self {
        case .write(let offset, let bytes): return (offset, UInt64(bytes.count))
        case .zero(let offset, let length, _): return (offset, length)
        case .copied(let offset, let length): return (offset, length)
        }
    }
}

/// Something that sees every change to one volume's contents (a mirror).
public protocol VolumeTap: AnyObject, Sendable {
    /// Runs `local`, the engine's own change, and applies `change` to the tap's copies, in the
    /// order the tap needs. Errors of `local` are the caller's and must be rethrown; errors of
    /// the tap's copies are the tap's own to record (the volume keeps serving).
    func apply(_ change: VolumeChange, local: () throws(StrataError) -> Void) throws(StrataError)

    /// Called after the pool committed for a flush: makes the tap's copies durable up to every
    /// change applied before the call, or records that they could not be.
    func flushed()
}

/// The taps of one pool, by volume record id.
public final class TapTable: Sendable {
    private let taps = Mutex<[UInt64: any VolumeTap]>([:])
    private let count = Atomic<Int>(0)

    init() {}

    /// Installs `tap` for the volume with record id `volumeID`, replacing any other.
    public func install(_ tap: any VolumeTap, volumeID: UInt64) {
        self.taps.withLock { taps in
            taps[volumeID] = tap
            self.count.store(taps.count, ordering: .sequentiallyConsistent)
        }
    }

    /// Removes the tap of `volumeID`, if any.
    public func remove(volumeID: UInt64) {
        self.taps.withLock { taps in
            taps[volumeID] = nil
            self.count.store(taps.count, ordering: .sequentiallyConsistent)
        }
    }

    func tap(_ volumeID: UInt64) -> (any VolumeTap)? {
        if self.count.load(ordering: .relaxed) == 0 { return nil }
        return self.taps.withLock { $0[volumeID] }
    }

    func flushed() {
        if self.count.load(ordering: .relaxed) == 0 { return }
        for tap in self.taps.withLock({ Array($0.values) }) { tap.flushed() }
    }
}

extension Pool {
    /// Runs `local` through the tap of `volumeID`, or alone when the volume has none.
    @inline(__always)
    func tapped(_ volumeID: UInt64, _ change: VolumeChange, _ local: () throws(StrataError) -> Void)
        throws(StrataError)
    {
        guard let tap = self.taps.tap(volumeID) else { return try local() }
        try tap.apply(change, local: local)
    }
}

// MARK: Deferred acknowledgements

/// What a tap leaves unfinished on a thread inside a `TapScope`: the waits of the changes it
/// started there, and whatever it holds until they end.
public protocol TapPending: AnyObject {
    /// Waits for every change started on this thread and releases what they held.
    func settle()
}

/// A front end's batch of requests, run on one thread, whose replies go out only after the
/// whole batch has run. Inside it a tap may return from `apply` before its copies hold the
/// change (a mirror's leg still writing it), leaving the wait in the scope; the scope waits for
/// all of them before `run` returns, so nothing is acknowledged before its copies hold it, and a
/// lane of eight writes waits for its legs once instead of eight times.
///
/// A tap that must see its earlier changes finished (a flush, a change overlapping one still
/// in flight) settles its own pending work first (`settle(_:)`).
public final class TapScope {
    private var pending: [(tap: ObjectIdentifier, work: any TapPending)] = []

    private init() {}

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        precondition(result == 0, "pthread_key_create failed: \(result)")
        return key
    }()

    /// The scope open on this thread, if any.
    public static var current: TapScope? {
        guard let pointer = pthread_getspecific(Self.key) else { return nil }
        return Unmanaged<TapScope>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// Runs `body` in a scope on this thread (in the one already open, when nested) and waits
    /// for every change the taps left pending in it before returning.
    public static func run<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        if Self.current != nil { return try body() }
        let scope = TapScope()
        let retained = Unmanaged.passRetained(scope)
        pthread_setspecific(Self.key, retained.toOpaque())
        defer {
            scope.settleAll()
            pthread_setspecific(Self.key, nil)
            retained.release()
        }
        return try body()
    }

    /// The pending work of `tap` in this scope, made by `make` the first time.
    public func pending<P: TapPending>(of tap: AnyObject, make: () -> P) -> P {
        let id = ObjectIdentifier(tap)
        if let found = self.pending.first(where: { $0.tap == id }) {
            guard let work = found.work as? P else { preconditionFailure("a tap's pending work changed its type") }
            return work
        }
        let work = make()
        self.pending.append((id, work))
        return work
    }

    /// Settles the pending work of `tap` on this thread, if any.
    public static func settle(_ tap: AnyObject) {
        guard let scope = Self.current else { return }
        let id = ObjectIdentifier(tap)
        scope.pending.first(where: { $0.tap == id })?.work.settle()
    }

    private func settleAll() {
        for entry in self.pending { entry.work.settle() }
    }
}
