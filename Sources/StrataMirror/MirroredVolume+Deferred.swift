// A front-end lane's mirrored writes whose legs' answers it waits for once, at the end of its
// batch (`TapScope`, Pool+Tap.swift), instead of after each write: a lane of eight 4 KiB writes
// then sleeps once for its legs rather than eight times, and a remote leg gets the eight in one
// burst. Nothing is acknowledged earlier: the lane's replies go out after the scope has waited.
//
// What each change holds in `MirroredVolume.apply` (`quiesce` shared, its chunks' stripes) is
// held here until the wait, so the rules of MirroredVolume.swift still hold: an overlapping
// change from another thread waits for this one on both sides, and `quiesce` held exclusively
// still means nothing is in flight. Holding several changes' stripes at once must not deadlock,
// so a further change takes its stripes without waiting or, when one is held elsewhere, first
// waits for and releases everything this thread holds, then takes them as an undeferred change
// would. A change that overlaps one of this thread's own in flight, an in-pool copy and a flush
// settle this thread's changes first.

import StrataCore

/// The writes and zeros a thread left in flight on a mirrored volume's legs.
final class DeferredLegWrites: TapPending {
    private let volume: MirroredVolume
    private var holdsQuiesce = false
    private var stripes = Set<Int>()
    private var calls: [LegWrite] = []

    init(_ volume: MirroredVolume) { self.volume = volume }

    /// Starts `change` on the legs and runs `local`, leaving the legs' answers to `settle`;
    /// false, with nothing of this thread's left in flight, when `change` takes the ordinary path.
    func apply(_ change: VolumeChange, local: () throws(StrataError) -> Void) throws(StrataError) -> Bool {
        let (offset, length) = change.range
        if case .copied = change { return self.settled() }
        guard length > 0 else { return self.settled() }
        let volume = self.volume
        let indexes = volume.stripes.indexes(
            first: offset / volume.chunkSize, last: (offset + length - 1) / volume.chunkSize)
        if !self.stripes.isDisjoint(with: indexes) { self.finishCalls() }
        if !self.holdsQuiesce {
            volume.quiesce.lockShared()
            self.holdsQuiesce = true
        }
        if !volume.stripes.tryLock(indexes) {
            self.settle()
            volume.quiesce.lockShared()
            self.holdsQuiesce = true
            volume.stripes.lock(indexes)
        }
        self.stripes.formUnion(indexes)
        let targets = volume.legs.filter { $0.state.receivesWrites }
        guard !targets.isEmpty, try volume.fitsVolume(change) else {
            try local()
            return true
        }
        self.calls += try volume.startInParallel(change, to: targets, local: local)
        return true
    }

    func settle() {
        self.finishCalls()
        if self.holdsQuiesce {
            self.volume.quiesce.unlock()
            self.holdsQuiesce = false
        }
    }

    private func settled() -> Bool {
        self.settle()
        return false
    }

    /// Waits for the legs' answers and releases the stripes (`quiesce` stays held).
    private func finishCalls() {
        self.volume.finish(self.calls)
        self.calls.removeAll(keepingCapacity: true)
        self.volume.stripes.unlock(self.stripes.sorted())
        self.stripes.removeAll(keepingCapacity: true)
    }
}
