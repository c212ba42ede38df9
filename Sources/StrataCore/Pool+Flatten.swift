// Detaching a based volume from its base (issue 10): flatten and rebase.
//
// Flatten copies every chunk the volume still reads from its base into the pool, then drops
// the base from the volume's record. It runs while clients read and write: each copy takes the
// chunk's write lock and copies only if the chunk is still a hole, so a client write that got
// there first is never overwritten. Progress is durable every `Limits.flattenCommitBytes`, and
// the record's flatten flag (set durably before the first copy) makes the daemon resume an
// interrupted flatten when it opens the pool; a resumed flatten skips what is already copied,
// since those chunks are no longer holes. Snapshots taken before or during a flatten keep the
// base: they are frozen layers and still read through it.
//
// Rebase points a volume at another file, allowed only when the new file reads identically
// to the old base wherever the volume still reads through, which is checked, not assumed:
// either every file of the new stack has the recorded size and content fingerprint (a moved
// or copied base), or the old base is readable and the two compare equal over every hole.

import Foundation

extension Pool {
    /// Copies everything `volume` reads from its base into the pool and drops the base.
    /// `progress(done, total)` counts bytes of the base's range.
    /// - Throws: `.invalidArgument` when the volume has no base, the base's errors (naming the
    ///   file) when it cannot be read, `.noSpace` when the pool fills.
    /// `isCancelled` is asked between steps; a cancelled flatten throws `.busy` and leaves the
    /// volume marked, so it resumes when the pool next opens in a daemon.
    /// `rateBytesPerSecond` bounds the copy: after each step the flatten sleeps until it is
    /// back under the rate (the base's range counts, as progress does).
    public func flatten(
        _ volume: String, rateBytesPerSecond: UInt64? = nil, progress: (UInt64, UInt64) -> Void = { _, _ in },
        isCancelled: () -> Bool = { false }
    ) throws(StrataError) {
        let operation = "flatten \(volume)"
        let id = try self.setFlattening(volume, operation: operation)
        let gate = self.gates.gate(id)
        guard let base = try self.baseImage(id: id, name: volume) else {
            throw StrataError(.invalidArgument, "\(operation): the volume has no base image; nothing to flatten")
        }
        try self.flush()
        let size = self.meta.withReadLock { self.record(id: id)?.size ?? 0 }
        let end = min(size, base.virtualSize)
        let step = UInt64(Limits.flattenScanChunks) << self.chunkShift
        var buffer = [UInt8](repeating: 0, count: Int(self.chunkSize))
        var uncommitted: UInt64 = 0
        var offset: UInt64 = 0
        var limiter = rateBytesPerSecond.flatMap { $0 > 0 ? RateLimiter(bytesPerSecond: $0) : nil }
        while offset < end {
            if isCancelled() {
                try self.flush()
                throw StrataError(.busy, "\(operation): interrupted at byte offset \(offset); it resumes when the daemon starts, or run `strata volume flatten \(volume)` again").at(byteOffset: offset)
            }
            let length = min(step, end - offset)
            gate.lockShared()
            let outcome = Result { () throws(StrataError) in
                for extent in try base.allocation(at: offset, length: length) where extent.mapped {
                    let first = extent.offset >> self.chunkShift
                    let last = (extent.offset + extent.length - 1) >> self.chunkShift
                    for chunk in first...last {
                        if try self.fillFromBase(base, id: id, name: volume, chunk: ChunkIndex(chunk), buffer: &buffer) {
                            uncommitted += self.chunkSize
                        }
                    }
                }
            }
            gate.unlock()
            try outcome.get()
            offset += length
            progress(offset, end)
            if let wait = limiter?.reserve(length, nowNanos: DispatchTime.now().uptimeNanoseconds), wait > 0 {
                usleep(useconds_t(min(wait / 1000, 1_000_000)))
            }
            if uncommitted >= Limits.flattenCommitBytes {
                try self.flush()
                uncommitted = 0
            }
        }
        try self.dropBase(volume, id: id, operation: operation)
        progress(end, end)
    }

    /// Ends a hydration: once every unit of `volume`'s base is local (its plan has nothing
    /// pending), drops the base and the flag, durably.
    /// - Throws: `.busy` when a unit is still pending (the hydration must copy it first),
    ///   `.notFound` when the volume is gone.
    public func finishHydration(_ volume: String) throws(StrataError) {
        let operation = "hydrate \(volume)"
        let id = try self.meta.withReadLock { () throws(StrataError) in
            try self.volumeRecord(volume, operation: "hydrate").id
        }
        if let plan = try self.hydrationPlan(volume), !plan.pending.isEmpty {
            throw StrataError(.busy, "\(operation): \(plan.pending.count) objects still read from the base")
        }
        try self.dropBase(volume, id: id, operation: operation)
        try self.flush()
    }

    /// Commits, then drops volume `id`'s base and flatten flag: every chunk the base held is in
    /// the pool. I/O is drained (the gate held exclusively) so no read is between looking up a
    /// hole and reading the base.
    private func dropBase(_ volume: String, id: UInt64, operation: String) throws(StrataError) {
        try self.flush()
        let gate = self.gates.gate(id)
        gate.lockExclusive()
        defer { gate.unlock() }
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("flatten volume", volume)
            guard var record = self.record(id: id) else {
                throw StrataError(.notFound, "\(operation): the volume was deleted")
            }
            record.baseID = 0
            record.flags &= ~VolumeRecord.flagFlattening
            self.store(record)
        }
    }

    /// Marks `volume` as flattening (so a crash resumes it) and returns its id.
    func setFlattening(_ volume: String, operation: String) throws(StrataError) -> UInt64 {
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("flatten volume", volume)
            var record = try self.volumeRecord(volume, operation: "flatten")
            guard !record.isReplica else {
                throw StrataError(.readOnly, "\(operation): the volume is a replica; promote it first")
            }
            guard record.baseID != 0 else {
                throw StrataError(.invalidArgument, "\(operation): the volume has no base image; nothing to flatten")
            }
            record.flags |= VolumeRecord.flagFlattening
            self.store(record)
            return record.id
        }
    }

    /// Stores into volume `handle` what reads at `offsets` just fetched from its base: every
    /// chunk of the aligned `fillUnitBytes` units around them where the base holds data and the
    /// volume still has a hole (fill-on-read, docs/OBJECTSTORE.md "Storing what was fetched").
    /// Each chunk is copied under its lock only if still a hole, so a client write is never
    /// overwritten; the base serves the copies from what the read just fetched.
    /// - Throws: the base's errors, `.noSpace` when the pool fills.
    public func fillFetched(_ handle: VolumeHandle, offsets: [UInt64]) throws(StrataError) {
        let gate = self.gates.gate(handle.id)
        gate.lockShared()
        defer { gate.unlock() }
        guard let base = try self.baseImage(id: handle.id, name: handle.name), let unit = base.fillUnitBytes else { return }
        _ = try self.fillUnits(base, id: handle.id, name: handle.name, starts: offsets.map { $0 / unit * unit }, unit: unit)
    }

    /// Copies into volume `id`'s holes every chunk of the `unit`-sized units starting at
    /// `starts` where `base` holds data; returns the bytes copied. Caller holds the gate shared.
    func fillUnits(
        _ base: any BaseImage, id: UInt64, name: String, starts: [UInt64], unit: UInt64
    ) throws(StrataError) -> UInt64 {
        precondition(unit.nonzeroBitCount == 1 && unit >= self.chunkSize, "a fill unit is a power of two of whole chunks")
        let size = self.meta.withReadLock { self.record(id: id)?.size ?? 0 }
        let end = min(size, base.virtualSize)
        let chunkBytes = Int(self.chunkSize)
        var scratch: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunkBytes)
        var copied: UInt64 = 0
        for start in Set(starts).sorted() where start < end {
            let length = min(unit, end - start)
            let data = try base.allocation(at: start, length: length).filter(\.mapped)
            let holes = try self.meta.withReadLock { () throws(StrataError) -> [MappingExtent] in
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "fill \(name): the volume was deleted")
                }
                return try self.treeExtents(record, at: start, length: length)
            }
            // Nothing of the unit still reads the base: no need to read (fetch) it.
            guard HydrationPlan.isPending(data: data, holes: holes) else { continue }
            // The whole unit in one read (one object, fetched whole and verified, its bytes
            // lent as received), then its chunks stored from it without another copy.
            let chunks = Self.holeChunks(data: data, holes: holes, shift: self.chunkShift)
            try base.withBytes(at: start, length: Int(length), scratch: &scratch) { contents throws(StrataError) in
                copied += try self.storeUnit(id: id, name: name, start: start, contents: contents, chunks: chunks, buffer: &buffer)
            }
        }
        return copied
    }

    /// The chunks where some `data` extent meets an unmapped extent of `holes` (both ascending,
    /// chunk-aligned but for the volume's end), ascending.
    static func holeChunks(data: [MappingExtent], holes: [MappingExtent], shift: UInt64) -> [UInt64] {
        var chunks: [UInt64] = []
        HydrationPlan.meetings(data: data, holes: holes) { range in
            for chunk in (range.lowerBound >> shift)...((range.upperBound - 1) >> shift)
            where chunks.last.map({ chunk > $0 }) ?? true {
                chunks.append(chunk)
            }
            return true
        }
        return chunks
    }

    /// Stores `chunks` (ascending; holes of volume `id` when the unit at `start` was looked at)
    /// from `contents`, the unit's bytes. Their bytes go to fresh chunks first, nothing holding
    /// a lock, each run of neighbours in both the volume and the pool in one write around the
    /// page cache (`PoolDevice.writeUncached`: a fill stores what a read already served, and a
    /// cached write's copy was most of a fill's CPU). Then, under each chunk's lock, a chunk
    /// still a hole is pointed at its fresh copy; one the volume wrote meanwhile keeps its data
    /// (the volume wins) and the copy is abandoned. Returns the bytes stored.
    private func storeUnit(
        id: UInt64, name: String, start: UInt64, contents: UnsafeRawBufferPointer, chunks: [UInt64], buffer: inout [UInt8]
    ) throws(StrataError) -> UInt64 {
        let chunkBytes = Int(self.chunkSize)
        var fresh: [PhysicalChunk] = []
        fresh.reserveCapacity(chunks.count)
        // fresh[unmapped...] are this call's: abandoned when it fails.
        var unmapped = 0
        var stored: UInt64 = 0
        do throws(StrataError) {
            for _ in chunks { fresh.append(try self.allocateData(operation: "fill \(name)")) }
            var first = 0
            while first < chunks.count {
                var next = first + 1
                while next < chunks.count, chunks[next] == chunks[next - 1] + 1,
                    fresh[next].rawValue == fresh[next - 1].rawValue + 1
                {
                    next += 1
                }
                let inside = Int((chunks[first] << self.chunkShift) - start)
                let whole = min(next - first, (contents.count - inside) / chunkBytes)
                if whole > 0 {
                    try self.device.writeUncached(
                        UnsafeRawBufferPointer(rebasing: contents[inside..<(inside + whole * chunkBytes)]),
                        at: self.dataOffset(fresh[first]))
                }
                if whole < next - first {
                    // The unit's end (the volume's or the base's) inside its last chunk: zeros after it.
                    let from = inside + whole * chunkBytes
                    try buffer.withUnsafeMutableBufferPointer { typed throws(StrataError) in
                        let target = UnsafeMutableRawBufferPointer(typed)
                        let available = contents.count - from
                        target.copyMemory(from: UnsafeRawBufferPointer(rebasing: contents[from...]))
                        UnsafeMutableRawBufferPointer(rebasing: target[available...]).initializeMemory(as: UInt8.self, repeating: 0)
                        try self.device.writeUncached(UnsafeRawBufferPointer(target), at: self.dataOffset(fresh[first + whole]))
                    }
                }
                first = next
            }
            self.dataWrites.add(1, ordering: .relaxed)
            while unmapped < chunks.count {
                let index = unmapped
                let chunk = ChunkIndex(chunks[index])
                let mapped = try self.chunkLocks.withLock(volume: id, chunk: chunk.rawValue) { () throws(StrataError) -> Bool in
                    let hole = try self.meta.withReadLock { () throws(StrataError) -> Bool in
                        guard let record = self.record(id: id) else {
                            throw StrataError(.notFound, "fill \(name): the volume was deleted")
                        }
                        return try self.lookup(record, chunk: chunk).isHole
                    }
                    guard hole else { return false }
                    // From here `mapFresh` maps the copy or abandons it.
                    unmapped = index + 1
                    try self.mapFresh(id: id, name: name, chunk: chunk, fresh: fresh[index])
                    return true
                }
                if mapped {
                    stored += self.chunkSize
                } else {
                    unmapped = index + 1
                    self.abandon(fresh[index])
                }
            }
        } catch {
            // Unless the pool failed half way through a mapping, no copy left is referenced.
            if self.meta.withReadLock({ self.failure == nil }) {
                for chunk in fresh[unmapped...] { self.abandon(chunk) }
            }
            throw error
        }
        return stored
    }

    /// Has reads hand what they fetched to `deferral` instead of storing it before they return
    /// (it answers false to have a read store it itself, when its queue is full); nil restores
    /// storing in the read. The deferred work must call `fillFetched` with what it was given.
    public func deferFills(to deferral: (@Sendable (VolumeHandle, [UInt64]) -> Bool)?) {
        self.fillDeferral.withLock { $0 = deferral }
    }

    /// Copies one chunk from the base if it is still a hole; true when it copied.
    private func fillFromBase(
        _ base: any BaseImage, id: UInt64, name: String, chunk: ChunkIndex, buffer: inout [UInt8]
    ) throws(StrataError) -> Bool {
        try self.fillHole(id: id, name: name, chunk: chunk, buffer: &buffer) { target throws(StrataError) in
            try base.read(at: chunk.rawValue << self.chunkShift, into: target)
            return UnsafeRawBufferPointer(target)
        }
    }

    /// Under the chunk's lock, if chunk `chunk` of volume `id` is still a hole, stores the
    /// chunk's bytes `contents` gives (written into `buffer`, or lent from elsewhere); true
    /// when it did. A chunk the volume wrote is never overwritten: the volume wins. The chunk is
    /// written around the page cache: a fill stores what a read already served (or hydration
    /// what no read asked for yet), and the cached write's copy was most of a fill's CPU.
    private func fillHole(
        id: UInt64, name: String, chunk: ChunkIndex, buffer: inout [UInt8],
        contents: (UnsafeMutableRawBufferPointer) throws(StrataError) -> UnsafeRawBufferPointer
    ) throws(StrataError) -> Bool {
        try self.chunkLocks.withLock(volume: id, chunk: chunk.rawValue) { () throws(StrataError) -> Bool in
            let hole = try self.meta.withReadLock { () throws(StrataError) -> Bool in
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "fill \(name): the volume was deleted")
                }
                return try self.lookup(record, chunk: chunk).isHole
            }
            guard hole else { return false }
            try buffer.withUnsafeMutableBufferPointer { typed throws(StrataError) in
                let bytes = try contents(UnsafeMutableRawBufferPointer(typed))
                precondition(bytes.count == Int(self.chunkSize), "a fill stores whole chunks")
                try self.remap(id: id, name: name, chunk: chunk, contents: bytes, at: 0, uncached: true)
            }
            return true
        }
    }

    /// Points `volume` at the image file `basePath` instead of its current base.
    /// - Throws: `.invalidArgument` naming the first offset where the new file reads
    ///   differently, or when the volume has no base; the images' errors naming the file.
    public func rebase(_ volume: String, basePath: String) throws(StrataError) {
        let operation = "rebase \(volume)"
        let (id, oldID, size) = try self.meta.withReadLock { () throws(StrataError) in
            let record = try self.volumeRecord(volume, operation: "rebase")
            return (record.id, record.baseID, record.size)
        }
        guard oldID != 0, let old = self.bases.descriptor(oldID) else {
            throw StrataError(.invalidArgument, "\(operation): the volume has no base image; create a based volume instead")
        }
        let path = Self.absolutePath(basePath)
        let image = try self.bases.openFile(path, operation: operation)
        let descriptor = try BaseDescriptor.recording(image, path: path)
        let sameFiles =
            descriptor.fingerprints == old.fingerprints && descriptor.files.map(\.size) == old.files.map(\.size)
            && descriptor.virtualSize == old.virtualSize
        let gate = self.gates.gate(id)
        gate.lockExclusive()
        defer { gate.unlock() }
        if !sameFiles {
            let current = try self.bases.image(oldID, for: volume)
            try self.compareHoles(id: id, size: size, current, image, operation: operation, newPath: path)
        }
        let newID = try self.bases.register(descriptor, image: image)
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("rebase volume", volume)
            guard var record = self.record(id: id) else {
                throw StrataError(.notFound, "\(operation): the volume was deleted")
            }
            record.baseID = newID
            self.store(record)
        }
    }

    /// Throws unless `current` and `candidate` read the same over every hole of volume `id`.
    private func compareHoles(
        id: UInt64, size: UInt64, _ current: any BaseImage, _ candidate: any BaseImage, operation: String,
        newPath: String
    ) throws(StrataError) {
        let end = min(size, max(current.virtualSize, candidate.virtualSize))
        let step = UInt64(Limits.flattenScanChunks) << self.chunkShift
        var offset: UInt64 = 0
        while offset < end {
            let length = min(step, end - offset)
            let holes = try self.meta.withReadLock { () throws(StrataError) -> [MappingExtent] in
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "\(operation): the volume was deleted")
                }
                return try self.treeExtents(record, at: offset, length: length).filter { !$0.mapped }
            }
            for hole in holes {
                try Self.compare(current, candidate, hole, operation: operation, newPath: newPath)
            }
            offset += length
        }
    }

    /// Throws naming the first differing byte offset of `extent` between two images.
    private static func compare(
        _ first: any BaseImage, _ second: any BaseImage, _ extent: MappingExtent, operation: String, newPath: String
    ) throws(StrataError) {
        let piece = UInt64(Limits.streamRecordBytesMax)
        var left = [UInt8](repeating: 0, count: Int(piece))
        var right = left
        var offset = extent.offset
        while offset < extent.offset + extent.length {
            let count = Int(min(piece, extent.offset + extent.length - offset))
            try left.withUnsafeMutableBufferPointer { raw throws(StrataError) in
                try first.read(at: offset, into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: raw[0..<count])))
            }
            try right.withUnsafeMutableBufferPointer { raw throws(StrataError) in
                try second.read(at: offset, into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: raw[0..<count])))
            }
            if left[0..<count] != right[0..<count] {
                let at = offset + UInt64(zip(left[0..<count], right[0..<count]).prefix { $0 == $1 }.count)
                throw StrataError(
                    .invalidArgument,
                    "\(operation): \(newPath) reads differently from the current base at byte offset \(at), where the volume still reads its base; rebase only onto an identical copy, or flatten the volume against the original"
                ).at(byteOffset: at)
            }
            offset += UInt64(count)
        }
    }
}
