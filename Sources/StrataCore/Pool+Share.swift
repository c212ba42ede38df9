// Copies between volumes of one pool (the engine under SCSI EXTENDED COPY): where the source
// and target ranges line up on chunk boundaries the target's chunks are made to name the
// source's physical chunks (no data moves, nothing is allocated); elsewhere bytes are read and
// written as an initiator would.
//
// Sharing and the epoch rule (Pool.swift): a leaf entry whose epoch is at or after its volume's
// shared-before epoch may be written in place. A shared chunk has two entries naming it, so
// neither may look exclusive:
// - the target's new entry gets an epoch just before the target's shared-before epoch;
// - a source entry that looks exclusive is rewritten (same chunk) with an epoch just before the
//   source's shared-before epoch ("demoted"). Its nodes are already the source's own (an
//   exclusive entry is only reachable through nodes of reference count 1), so nothing else
//   changes. A snapshot's entries are never written, so a snapshot source needs no demotion.
// The chunk's reference count goes up by one; the target's old chunk loses one. A later write
// to either side then copies the chunk (as after a snapshot), and the other side keeps it.
// Shared-before epochs only grow, so a demoted entry never looks exclusive again. Both entries
// live in the open transaction and become durable together at the next commit.
//
// Locking: both volumes' gates shared (in id order, so two copies in opposite directions cannot
// deadlock behind a snapshot), then per batch the chunk locks of every source and target chunk
// (so no write is half done in a chunk being shared), then `meta` exclusively for the tree
// updates. A copy within one volume whose ranges overlap runs backwards when the target lies
// after the source, so every chunk is read before it is overwritten (memmove's rule).

/// What an in-pool copy did: bytes shared copy-on-write and bytes moved through memory.
public struct CopyReport: Sendable, Equatable {
    public var sharedBytes: UInt64 = 0
    public var copiedBytes: UInt64 = 0

    public init(sharedBytes: UInt64 = 0, copiedBytes: UInt64 = 0) {
        self.sharedBytes = sharedBytes
        self.copiedBytes = copiedBytes
    }
}

extension Pool {
    /// Copies `length` bytes from `source` at `sourceOffset` to `target` at `targetOffset`,
    /// sharing the chunks both ranges cover whole and at the same place inside a chunk, and
    /// copying the rest. The source may be a snapshot; the target may be the source volume
    /// (overlapping ranges copy as if through a buffer). Nothing is made durable.
    /// - Throws: `.invalidArgument` for a range past either end, `.readOnly` for a read-only
    ///   target, `.notFound` for a deleted volume, `.noSpace` when the copied part or the
    ///   metadata does not fit (what was copied before stays), `.io`, `.corrupt`.
    @discardableResult
    public func copy(
        from source: VolumeHandle, at sourceOffset: UInt64, to target: VolumeHandle, at targetOffset: UInt64,
        length: UInt64
    ) throws(StrataError) -> CopyReport {
        var report = CopyReport()
        try self.tapped(target.id, .copied(offset: targetOffset, length: length)) { () throws(StrataError) in
            report = try self.copyUntapped(
                from: source, at: sourceOffset, to: target, at: targetOffset, length: length)
        }
        return report
    }

    private func copyUntapped(
        from source: VolumeHandle, at sourceOffset: UInt64, to target: VolumeHandle, at targetOffset: UInt64,
        length: UInt64
    ) throws(StrataError) -> CopyReport {
        try self.checkCopy(source, sourceOffset, target, targetOffset, length, operation: "copy")
        let based = try self.meta.withReadLock { () throws(StrataError) -> Bool in
            (self.record(id: source.id)?.baseID ?? 0) != 0 || (self.record(id: target.id)?.baseID ?? 0) != 0
        }
        // (source offset, target offset, length, shared)
        var segments: [(UInt64, UInt64, UInt64, Bool)] = []
        let mask = self.chunkSize - 1
        let sameInside = sourceOffset & mask == targetOffset & mask
        let head = sameInside ? min(length, (self.chunkSize - sourceOffset & mask) & mask) : length
        let middle = (length - head) & ~mask
        if !based && sameInside && middle > 0 {
            segments.append((sourceOffset, targetOffset, head, false))
            segments.append((sourceOffset + head, targetOffset + head, middle, true))
            let tail = head + middle
            segments.append((sourceOffset + tail, targetOffset + tail, length - tail, false))
        } else {
            segments.append((sourceOffset, targetOffset, length, false))
        }
        let backwards = source.id == target.id && targetOffset > sourceOffset
        var report = CopyReport()
        for (from, to, count, shared) in backwards ? segments.reversed() : segments where count > 0 {
            if shared {
                try self.shareChunksUntapped(from: source, at: from, to: target, at: to, length: count)
                report.sharedBytes += count
            } else {
                try self.copyBytes(from: source, at: from, to: target, at: to, length: count, backwards: backwards)
                report.copiedBytes += count
            }
        }
        return report
    }

    /// Makes `length` bytes of `target` at `targetOffset` name the same physical chunks as
    /// `source` at `sourceOffset`, copy-on-write, with reference counts; holes stay holes.
    /// - Precondition: none; misuse is an operating error.
    /// - Throws: `.invalidArgument` unless both offsets and the length are whole chunks inside
    ///   both volumes, `.unsupported` when either volume is based on an image (its holes read
    ///   the base, so they cannot be shared), `.readOnly`, `.notFound`, `.noSpace` for metadata.
    public func shareChunks(
        from source: VolumeHandle, at sourceOffset: UInt64, to target: VolumeHandle, at targetOffset: UInt64,
        length: UInt64
    ) throws(StrataError) {
        try self.tapped(target.id, .copied(offset: targetOffset, length: length)) { () throws(StrataError) in
            try self.shareChunksUntapped(from: source, at: sourceOffset, to: target, at: targetOffset, length: length)
        }
    }

    private func shareChunksUntapped(
        from source: VolumeHandle, at sourceOffset: UInt64, to target: VolumeHandle, at targetOffset: UInt64,
        length: UInt64
    ) throws(StrataError) {
        let mask = self.chunkSize - 1
        guard sourceOffset & mask == 0, targetOffset & mask == 0, length & mask == 0 else {
            throw StrataError(
                .invalidArgument,
                "share \(source.name) to \(target.name): range not chunk-aligned (source offset=\(sourceOffset) target offset=\(targetOffset) length=\(length) chunk size=\(self.chunkSize)); use copy"
            )
        }
        try self.checkCopy(source, sourceOffset, target, targetOffset, length, operation: "share")
        let gates = Set([source.id, target.id]).sorted().map { self.gates.gate($0) }
        for gate in gates { gate.lockShared() }
        defer { for gate in gates.reversed() { gate.unlock() } }
        try self.withContext("share", target.name) { () throws(StrataError) in
            let count = length >> self.chunkShift
            let sourceFirst = sourceOffset >> self.chunkShift
            let targetFirst = targetOffset >> self.chunkShift
            let backwards = source.id == target.id && targetFirst > sourceFirst
            var done: UInt64 = 0
            while done < count {
                let batch = min(Limits.shareBatchChunks, count - done)
                // Chunk indexes relative to the first, in the order they are shared.
                let start = backwards ? count - done - batch : done
                let order = backwards ? Array((start..<start + batch).reversed()) : Array(start..<start + batch)
                try self.shareBatch(source, sourceFirst, target, targetFirst, order)
                done += batch
            }
        }
    }

    /// Shares one batch of chunks (indexes relative to the firsts), under the chunk locks of all
    /// of them and `meta`. The caller holds both gates.
    private func shareBatch(
        _ source: VolumeHandle, _ sourceFirst: UInt64, _ target: VolumeHandle, _ targetFirst: UInt64, _ order: [UInt64]
    ) throws(StrataError) {
        let keys = order.map { (source.id, sourceFirst + $0) } + order.map { (target.id, targetFirst + $0) }
        try self.chunkLocks.withLocks(keys) { () throws(StrataError) in
            try self.meta.withWriteLock { () throws(StrataError) in
                try self.checkWritable("share", target.name)
                for index in order {
                    try self.shareChunk(source, sourceFirst + index, target, targetFirst + index)
                }
            }
        }
    }

    /// Points `target`'s `targetChunk` at the physical chunk behind `source`'s `sourceChunk`.
    /// Caller holds `meta` exclusively and both chunks' locks.
    private func shareChunk(_ source: VolumeHandle, _ sourceChunk: UInt64, _ target: VolumeHandle, _ targetChunk: UInt64)
        throws(StrataError)
    {
        guard var sourceRecord = self.record(id: source.id) else {
            throw StrataError(.notFound, "share \(source.name): the volume was deleted")
        }
        let entry = try self.lookup(sourceRecord, chunk: ChunkIndex(sourceChunk))
        guard var targetRecord = self.record(id: target.id) else {
            throw StrataError(.notFound, "share \(target.name): the volume was deleted")
        }
        let current = try self.lookup(targetRecord, chunk: ChunkIndex(targetChunk))
        let targetTime = Self.sharedEpoch(targetRecord)
        // Already the same chunk, and already marked shared: nothing to do.
        if current.chunk == entry.chunk && (entry.isHole || UInt64(current.time) < targetRecord.sharedBefore) { return }
        let demote =
            !entry.isHole && sourceRecord.kind != .snapshot && UInt64(entry.time) >= sourceRecord.sharedBefore
        try self.requireNodePages(
            Int(sourceRecord.depth + targetRecord.depth) + 4, forRelease: entry.isHole,
            operation: "share \(target.name)")
        do throws(StrataError) {
            if demote, let physical = entry.chunk {
                try self.setEntry(
                    &sourceRecord, chunk: ChunkIndex(sourceChunk),
                    to: .mapped(physical, epoch: Self.sharedEpoch(sourceRecord)))
                self.store(sourceRecord)
                // Within one volume the target record is the source record just changed.
                if source.id == target.id { targetRecord = sourceRecord }
            }
            let shared: LeafEntry = entry.chunk.map { .mapped($0, epoch: targetTime) } ?? .hole
            let old = try self.setEntry(
                &targetRecord, chunk: ChunkIndex(targetChunk), to: shared, forRelease: entry.isHole)
            if let physical = entry.chunk { self.retainChunk(physical) }
            if let replaced = old.chunk { self.releaseChunk(replaced) }
            self.store(targetRecord)
        } catch {
            // Corruption met half way through a tree update: stop writing (STYLE §4).
            self.failure = error
            throw error
        }
    }

    /// The epoch a shared entry of `record` gets: just before its shared-before epoch, so a
    /// write copies the chunk instead of writing it in place.
    private static func sharedEpoch(_ record: VolumeRecord) -> UInt32 {
        UInt32(max(record.sharedBefore, 1) - 1)
    }

    /// Range and permission checks of a copy, before anything changes.
    private func checkCopy(
        _ source: VolumeHandle, _ sourceOffset: UInt64, _ target: VolumeHandle, _ targetOffset: UInt64, _ length: UInt64,
        operation: String
    ) throws(StrataError) {
        _ = try self.writableRecord(target, operation: operation, offset: targetOffset, length: length)
        try self.meta.withReadLock { () throws(StrataError) in
            guard let record = self.record(id: source.id) else {
                throw StrataError(.notFound, "\(operation) \(source.name): the volume was deleted")
            }
            try self.checkRange(record, source, operation: operation, offset: sourceOffset, length: length)
        }
    }

    /// Copies through memory in pieces of `Limits.copyPieceBytes`, last piece first when
    /// `backwards`.
    private func copyBytes(
        from source: VolumeHandle, at sourceOffset: UInt64, to target: VolumeHandle, at targetOffset: UInt64,
        length: UInt64, backwards: Bool
    ) throws(StrataError) {
        let pieces = (length + Limits.copyPieceBytes - 1) / Limits.copyPieceBytes
        for step in 0..<pieces {
            let piece = backwards ? pieces - 1 - step : step
            let start = piece * Limits.copyPieceBytes
            let count = min(Limits.copyPieceBytes, length - start)
            let bytes = try self.read(source, at: sourceOffset + start, count: Int(count))
            try self.write(target, at: targetOffset + start, bytes)
        }
    }
}

extension Pool {
    /// The pool's own identifier (the first half of its UUID), for names that must differ
    /// between pools, such as the NAA designators of iSCSI logical units.
    public var identifier: UInt64 { self.uuid.0 }

    /// The handle of the volume or snapshot with record id `id`, if it exists (copy targets
    /// are named by id, which stays the same across renames).
    public func handle(id: UInt64, frontEnd: FrontEnd? = nil) -> VolumeHandle? {
        self.meta.withReadLock {
            guard let record = self.record(id: id), record.kind != .staging, !record.isHidden else { return nil }
            return VolumeHandle(
                id: record.id, name: self.fullName(record),
                readOnly: record.kind == .snapshot || record.isReplica || self.readOnly,
                counters: frontEnd.flatMap { self.statistics.counters(volumeID: record.id, frontEnd: $0) })
        }
    }
}
