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
