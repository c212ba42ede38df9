// Copies and split points of a mirrored volume's legs (docs/MIRROR.md, "The mechanism").
//
// A split-point pair is a hidden snapshot of the volume and one of the leg's copy with the same
// name, `..split.LEG.GEN`, taken at one instant (`quiesce` held exclusively, so both hold the same
// bytes). The blocks the two copies may differ in since then are
//     changes(volume since pair) ∪ changes(leg since pair)
// both read from copy-on-write metadata: the volume's side holds every write the leg missed
// (degraded, detached, or lost in a crash of the leg's pool), the leg's side every write the
// volume lost in a crash of its own pool after the leg had it, and every write to a writable
// detached copy (discarded: the volume wins). A pair is made durable on both sides (leg flush,
// then pool flush) before the older pair is deleted, so after a crash at any point some pair
// exists on both sides; `recover` takes the newest one both hold.
//
// A copy job (`startCopy`) is a list of chunk ranges, computed with `quiesce` held exclusively at
// the instant the leg starts receiving writes; the worker (`MirrorCoordinator.run`) copies it a
// batch at a time (`copyStep`), each batch under the stripes of its chunks (holes trimmed on the
// leg without being read), and at the end takes
// a new pair and the leg is connected (`finishCopy`).

import StrataCore

extension MirroredVolume {
    // MARK: Split points

    /// Takes the split-point pair of the next generation, runs `atInstant` at the pair's instant
    /// (with `quiesce` held exclusively), makes the pair durable on both sides, then deletes
    /// the leg's older pairs and records the generation.
    /// - Throws: the failing side's error; nothing is changed then except a half pair deleted.
    func takeSplitPoint(_ runtime: LegRuntime, atInstant: (LegRuntime) -> Void = { _ in }) throws(StrataError) {
        // The generation is read under the exclusive lock: a detach and the worker's periodic
        // split point can both be here, and each must take the next generation after the other's.
        self.quiesce.lockExclusive()
        let (leg, generation) = runtime.with { ($0.record.leg, $0.record.generation + 1) }
        let name = MirrorLegRecord.splitPointName(leg: leg, generation: generation)
        do throws(StrataError) {
            try self.pool.createHiddenSnapshot(self.volume, name)
            do throws(StrataError) {
                try runtime.call { leg throws(StrataError) in try leg.createSplitPoint(name) }
            } catch {
                try? self.pool.deleteHiddenSnapshot(self.volume, name)
                throw error
            }
        } catch {
            self.quiesce.unlock()
            throw error
        }
        // The pair exists on both sides from here: changes are tracked from it even if making it
        // durable fails below (then the older pair stays too, and a crash falls back to it).
        runtime.with {
            $0.record.generation = generation
            $0.lastSplitPoint = .now
        }
        atInstant(runtime)
        self.quiesce.unlock()
        try runtime.call { leg throws(StrataError) in try leg.flush() }
        try self.pool.flush()
        // Only older pairs: a newer one another caller took since (outside the lock) is the one
        // changes are tracked from now.
        try self.dropSplitPoints(runtime, keeping: generation, olderOnly: true)
    }

    /// Deletes every split point of the leg on both sides except generation `keeping` (0: all);
    /// with `olderOnly`, only those older than `keeping`.
    func dropSplitPoints(_ runtime: LegRuntime, keeping: UInt64, olderOnly: Bool = false) throws(StrataError) {
        let leg = runtime.name
        func dropped(_ name: String) -> Bool {
            guard let generation = MirrorLegRecord.generation(ofSplitPoint: name, leg: leg), generation != keeping else {
                return false
            }
            return !olderOnly || generation < keeping
        }
        for name in try self.pool.hiddenSnapshots(of: self.volume) where dropped(name) {
            try self.pool.deleteHiddenSnapshot(self.volume, name)
        }
        let remote = try runtime.call { leg throws(StrataError) in try leg.splitPoints() }
        for name in remote where dropped(name) {
            try runtime.call { leg throws(StrataError) in try leg.deleteSplitPoint(name) }
        }
    }

    /// The newest generation whose split point both the volume and the leg hold, or 0.
    func newestCommonSplitPoint(_ runtime: LegRuntime) throws(StrataError) -> UInt64 {
        let leg = runtime.name
        let local = Set(
            try self.pool.hiddenSnapshots(of: self.volume).compactMap {
                MirrorLegRecord.generation(ofSplitPoint: $0, leg: leg)
            })
        let remote = Set(
            try runtime.call { leg throws(StrataError) in try leg.splitPoints() }.compactMap {
                MirrorLegRecord.generation(ofSplitPoint: $0, leg: leg)
            })
        return local.intersection(remote).max() ?? 0
    }

    /// After a restart, with the leg open: keeps the newest split-point pair both sides hold
    /// (deleting the others) and starts what the leg's recorded state needs: a connected,
    /// resyncing or degraded (auto-resync) leg resyncs the chunks changed on either side since
    /// that pair, a leg that never finished its first copy copies everything, a detached leg
    /// stays detached.
    /// - Throws: when either side's split points cannot be read or changed.
    func recover(_ runtime: LegRuntime) throws(StrataError) {
        let record = runtime.currentRecord
        let generation = try self.newestCommonSplitPoint(runtime)
        try self.dropSplitPoints(runtime, keeping: generation)
        runtime.with { $0.record.generation = generation }
        switch record.state {
        case .detached:
            return
        case .degraded where !record.autoResync:
            return
        case .syncing where generation == 0:
            try self.startCopy(runtime, machine: LegStateMachine(state: .syncing), full: true, fresh: false)
        default:
            try self.startCopy(runtime, machine: LegStateMachine(state: .resyncing), full: generation == 0, fresh: false)
        }
    }

    // MARK: Copies

    /// Starts a copy to the leg and moves it to `machine`'s state (syncing or resyncing), at one
    /// instant. `full`: every chunk (a fresh leg only needs the volume's mapped extents: pass
    /// `fresh`); otherwise the chunks changed on either side since the newest split-point pair.
    /// - Throws: when the leg or the volume's metadata cannot be read; nothing is changed then.
    func startCopy(_ runtime: LegRuntime, machine: LegStateMachine, full: Bool, fresh: Bool) throws(StrataError) {
        // The copy's time counts from here: the quiesce and the search for changes are part of it.
        let started = ContinuousClock.now
        self.quiesce.lockExclusive()
        defer { self.quiesce.unlock() }
        let size = try self.pool.size(of: self.handle)
        let generation = runtime.with { $0.record.generation }
        var extents: [(UInt64, UInt64)] = []
        if fresh {
            extents = try self.pool.mapping(self.handle, at: 0, length: size).filter(\.mapped).map {
                ($0.offset, $0.length)
            }
        } else if full || generation == 0 {
            extents = [(0, size)]
        } else {
            let name = MirrorLegRecord.splitPointName(leg: runtime.name, generation: generation)
            extents = try self.pool.changes(of: self.volume, since: name).map { ($0.offset, $0.length) }
            extents += try runtime.call { leg throws(StrataError) in try leg.changes(since: name) }.map {
                ($0.offset, $0.length)
            }
            // An interrupted full copy goes on from where it was committed on the leg.
            if let from = runtime.with({ $0.record.fullCopyFrom }), from < (size + self.chunkSize - 1) / self.chunkSize {
                extents.append((from * self.chunkSize, size - from * self.chunkSize))
            }
        }
        // A full copy over a split-point pair records its progress, so it can resume; the first
        // copy (no pair yet) starts over after a restart, since nothing else finds what it missed.
        let resumable = full && generation > 0
        let ranges = Self.chunkRanges(extents, chunkSize: self.chunkSize, size: size)
        runtime.with {
            if resumable { $0.record.fullCopyFrom = 0 }
            $0.pending = ranges
            $0.pendingBytes = ranges.reduce(0) { $0 + Self.bytes(of: $1, chunkSize: self.chunkSize, size: size) }
            $0.copiedBytes = 0
            $0.copyStarted = started
            $0.copyFinished = nil
            $0.record.lastError = nil
            $0.setMachine(machine)
        }
    }

    /// Copies up to `MirrorLimits.resyncBatchChunks` chunks of the leg's copy job.
    /// - Returns: the bytes copied; 0 when the job has nothing left (or the leg failed).
    func copyStep(_ runtime: LegRuntime) -> UInt64 {
        let batch: Range<UInt64>? = runtime.with { runtime in
            guard runtime.machine.state == .syncing || runtime.machine.state == .resyncing,
                let range = runtime.pending.first
            else { return nil }
            let end = min(range.upperBound, range.lowerBound + MirrorLimits.resyncBatchChunks)
            if end == range.upperBound {
                runtime.pending.removeFirst()
            } else {
                runtime.pending[0] = end..<range.upperBound
            }
            return range.lowerBound..<end
        }
        guard let batch else { return 0 }
        self.quiesce.lockShared()
        defer { self.quiesce.unlock() }
        do throws(StrataError) {
            let copied = try self.stripes.withLocks(first: batch.lowerBound, last: batch.upperBound - 1) {
                () throws(StrataError) -> UInt64 in
                let size = try self.pool.size(of: self.handle)
                let offset = batch.lowerBound * self.chunkSize
                guard offset < size else { return 0 }
                let count = min(batch.count * Int(self.chunkSize), Int(size - offset))
                // Holes are trimmed on the leg without being read; data that reads as zeros too.
                var bytes = [UInt8](repeating: 0, count: count)
                var holes: [Range<Int>] = []
                var failure: StrataError?
                bytes.withUnsafeMutableBytes { buffer in
                    do throws(StrataError) {
                        holes = try self.pool.readLeavingHoles(self.handle, at: offset, into: buffer, waiting: .allowed) ?? []
                    } catch {
                        failure = error
                    }
                }
                if let failure { throw failure }
                for piece in Pool.pieces(of: count, holes: holes) {
                    let at = offset + UInt64(piece.range.lowerBound)
                    let data = Array(bytes[piece.range])
                    if piece.hole || data.allSatisfy({ $0 == 0 }) {
                        try runtime.call { leg throws(StrataError) in
                            try leg.zero(at: at, length: UInt64(piece.range.count), trim: true)
                        }
                    } else {
                        try runtime.call { leg throws(StrataError) in try leg.write(at: at, data) }
                    }
                }
                return UInt64(count)
            }
            runtime.with {
                $0.copiedBytes += copied
                $0.pendingBytes -= min($0.pendingBytes, copied)
            }
            return max(copied, 1)
        } catch {
            self.fail(runtime, error)
            return 0
        }
    }

    /// True when the leg's copy job has copied everything.
    func copyDone(_ runtime: LegRuntime) -> Bool {
        runtime.with { ($0.machine.state == .syncing || $0.machine.state == .resyncing) && $0.pending.isEmpty }
    }

    /// Ends a finished copy: a new split-point pair, and the leg is connected.
    func finishCopy(_ runtime: LegRuntime) {
        do throws(StrataError) {
            try self.takeSplitPoint(runtime) { runtime in
                // A leg that failed since the copy ended stays degraded.
                guard runtime.machine.state == .syncing || runtime.machine.state == .resyncing else { return }
                var machine = runtime.machine
                guard (try? machine.handle(.copied, leg: runtime.record.leg)) != nil else { return }
                runtime.setMachine(machine)
                runtime.record.splitAt = nil
                runtime.record.lastError = nil
                runtime.record.fullCopyFrom = nil
                runtime.copyFinished = .now
            }
            self.persist()
        } catch {
            self.fail(runtime, error)
        }
    }

    // MARK: Arithmetic

    /// Chunk ranges covering `extents` (byte offset, length) within `size`, sorted and merged.
    static func chunkRanges(_ extents: [(UInt64, UInt64)], chunkSize: UInt64, size: UInt64) -> [Range<UInt64>] {
        let chunks = (size + chunkSize - 1) / chunkSize
        let ranges = extents.compactMap { offset, length -> Range<UInt64>? in
            guard length > 0, offset < size else { return nil }
            let first = offset / chunkSize
            let end = min(chunks, (offset + length + chunkSize - 1) / chunkSize)
            return first..<end
        }.sorted { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for range in ranges {
            if let last = merged.last, range.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    /// The bytes chunk range `range` covers within `size`.
    static func bytes(of range: Range<UInt64>, chunkSize: UInt64, size: UInt64) -> UInt64 {
        min(range.upperBound * chunkSize, size) - min(range.lowerBound * chunkSize, size)
    }
}
