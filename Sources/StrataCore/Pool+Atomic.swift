// Atomic writes (the engine under SCSI WRITE ATOMIC(16), SBC-4 §4.29): a write that every reader,
// and the pool after a crash, sees entirely or not at all.
//
// How: no byte is written in place. Each chunk the write touches is built whole in memory (its
// current bytes, or zeros, or the base's bytes, with the new bytes laid over them) and written
// to a fresh chunk that nothing references; then one exclusive section of `meta` points every
// chunk at its fresh copy and releases the old ones. Readers resolve all their chunks under one
// shared section of `meta`, so they see the mappings before that section or after it, never a
// mix; a commit encodes the tree under `meta` too, so every commit holds all of the write's
// mappings or none, and the fresh chunks are synced before the superblock that names them.
// Old chunks return to the allocator only after a commit without them is durable, so a crash
// before that leaves them intact. The chunk locks of the whole range are held throughout, so
// no other write to these chunks interleaves.

extension Pool {
    /// Writes `bytes` at `offset` atomically: readers and the pool after a crash see either all
    /// of it or none of it.
    /// - Throws: as `write`; on `.noSpace` nothing was written.
    public func writeAtomic(_ handle: VolumeHandle, at offset: UInt64, _ bytes: [UInt8], fua: Bool = false)
        throws(StrataError)
    {
        guard !bytes.isEmpty else { return }
        // A tap reads the bytes back: whole, since the local write is atomic under its gate.
        try self.tapped(handle.id, .copied(offset: offset, length: UInt64(bytes.count))) { () throws(StrataError) in
            try self.writeAtomicUntapped(handle, at: offset, bytes)
        }
        if fua { try self.flush() }
    }

    private func writeAtomicUntapped(_ handle: VolumeHandle, at offset: UInt64, _ bytes: [UInt8]) throws(StrataError) {
        try self.withContext("write atomic", handle.name) { () throws(StrataError) in
            let gate = self.gates.gate(handle.id)
            gate.lockShared()
            defer { gate.unlock() }
            let record = try self.writableRecord(
                handle, operation: "write atomic", offset: offset, length: UInt64(bytes.count))
            // Nothing to make atomic; the last-chunk arithmetic below needs a byte (as in `write`).
            guard !bytes.isEmpty else { return }
            let first = offset >> self.chunkShift
            let last = (offset + UInt64(bytes.count) - 1) >> self.chunkShift
            try self.chunkLocks.withLocks(volume: handle.id, chunks: first..<(last + 1)) { () throws(StrataError) in
                var fresh: [PhysicalChunk] = []
                do throws(StrataError) {
                    for chunk in first...last {
                        let contents = try self.atomicContents(record, handle, chunk: chunk, offset: offset, bytes)
                        let target = try self.allocateData(operation: "write atomic \(handle.name)")
                        fresh.append(target)
                        try self.device.write(contents, at: self.dataOffset(target))
                    }
                    self.dataWrites.add(1, ordering: .relaxed)
                    try self.remapAll(handle, first: first, fresh: fresh)
                } catch {
                    // Unless the pool failed half way through the remap, no fresh chunk is mapped.
                    if self.meta.withReadLock({ self.failure == nil }) {
                        for chunk in fresh { self.abandon(chunk) }
                    }
                    throw error
                }
            }
        }
    }

    /// The whole new contents of `chunk`: what it holds now (or its base's bytes, or zeros),
    /// with the part of `bytes` that falls inside it laid over.
    private func atomicContents(
        _ record: VolumeRecord, _ handle: VolumeHandle, chunk: UInt64, offset: UInt64, _ bytes: [UInt8]
    ) throws(StrataError) -> [UInt8] {
        let start = chunk << self.chunkShift
        let from = max(start, offset)
        let to = min(start + self.chunkSize, offset + UInt64(bytes.count))
        var contents: [UInt8]
        if from == start && to == start + self.chunkSize {
            contents = []
        } else {
            let entry = try self.meta.withReadLock { () throws(StrataError) in
                try self.lookup(self.record(id: handle.id) ?? record, chunk: ChunkIndex(chunk))
            }
            if let physical = entry.chunk {
                contents = try self.device.read(count: Int(self.chunkSize), at: self.dataOffset(physical))
            } else {
                contents = [UInt8](repeating: 0, count: Int(self.chunkSize))
                if record.baseID != 0 {
                    let base = try self.bases.image(record.baseID, for: handle.name)
                    try contents.withUnsafeMutableBufferPointer { buffer throws(StrataError) in
                        try base.read(at: start, into: UnsafeMutableRawBufferPointer(buffer))
                    }
                }
            }
        }
        let piece = bytes[Int(from - offset)..<Int(to - offset)]
        if contents.isEmpty { return Array(piece) }
        contents.replaceSubrange(Int(from - start)..<Int(to - start), with: piece)
        return contents
    }

    /// Points chunks `first...` at `fresh` in one exclusive section, releasing the old chunks.
    private func remapAll(_ handle: VolumeHandle, first: UInt64, fresh: [PhysicalChunk]) throws(StrataError) {
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("write atomic", handle.name)
            guard var record = self.record(id: handle.id) else {
                throw StrataError(.notFound, "write atomic \(handle.name): the volume was deleted")
            }
            // Every node on every path may need shadowing: refuse before changing anything.
            try self.requireNodePages(
                fresh.count * (Int(record.depth) + 2), forRelease: false, operation: "write atomic \(handle.name)")
            do throws(StrataError) {
                for (index, chunk) in fresh.enumerated() {
                    let old = try self.setEntry(
                        &record, chunk: ChunkIndex(first + UInt64(index)), to: .mapped(chunk, epoch: UInt32(self.epoch)))
                    self.retainChunk(chunk)
                    if let replaced = old.chunk { self.releaseChunk(replaced) }
                }
                self.store(record)
            } catch {
                // Corruption met half way through a tree update: stop writing (STYLE §4).
                self.failure = error
                throw error
            }
        }
    }
}
