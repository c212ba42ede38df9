// The data path: read, write, trim, write-zeroes and allocation maps on a volume or snapshot.
//
// A request is split at chunk boundaries. Reads resolve every chunk under one shared `meta`
// section, then copy outside it (holes read as zeros). A write to a chunk the volume owns
// exclusively (mapped at or after its shared-before epoch) goes in place; any other write
// builds the whole chunk (old contents or zeros, plus the new bytes), writes it to a fresh
// chunk, and only then remaps, so a failure or crash at any point leaves the old mapping
// whole. Writers of one logical chunk serialize on a striped lock; the volume's gate is held
// shared for the whole request so snapshot, rollback, resize and delete see no half write.

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// An allocation extent for block status: `mapped` false means a hole that reads as zeros.
public struct MappingExtent: Sendable, Equatable, Codable {
    public let offset: UInt64
    public let length: UInt64
    public let mapped: Bool

    public init(offset: UInt64, length: UInt64, mapped: Bool) {
        self.offset = offset
        self.length = length
        self.mapped = mapped
    }
}

extension Pool {
    /// Runs `body`, prefixing corruption and I/O errors with the operation and object, so a
    /// damaged page met while reading vm1 is reported as `read vm1: metadata page 7: …`.
    public func withContext<T>(_ operation: String, _ object: String, _ body: () throws(StrataError) -> T)
        throws(StrataError) -> T
    {
        do throws(StrataError) {
            return try body()
        } catch where error.code == .corrupt || error.code == .io {
            if error.message.hasPrefix("\(operation) \(object)") { throw error }
            let hint = error.code == .corrupt && !error.message.contains("strata check") ? "; run `strata check` for a full report" : ""
            throw error.withMessage("\(operation) \(object): \(error.message)\(hint)")
        }
    }

    func checkRange(
        _ record: VolumeRecord, _ handle: VolumeHandle, operation: String, offset: UInt64, length: UInt64
    ) throws(StrataError) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= record.size else {
            throw StrataError(
                .invalidArgument,
                "\(operation) \(handle.name): range beyond end of volume (offset=\(offset) length=\(length) size=\(record.size))"
            )
        }
    }

    func writableRecord(_ handle: VolumeHandle, operation: String, offset: UInt64, length: UInt64)
        throws(StrataError) -> VolumeRecord
    {
        try self.meta.withReadLock { () throws(StrataError) in
            try self.checkWritable(operation, handle.name)
            guard let record = self.record(id: handle.id) else {
                throw StrataError(.notFound, "\(operation) \(handle.name): the volume was deleted")
            }
            guard !record.isReplica || handle.replicaWriter else {
                throw StrataError(
                    .readOnly,
                    "\(operation) \(handle.name): the volume is a replication target and read-only; `strata replicate promote \(handle.name)` makes it writable")
            }
            guard record.kind != .snapshot, !handle.readOnly else {
                throw StrataError(
                    .readOnly,
                    "\(operation) \(handle.name): snapshots are read-only; clone it to write (`strata clone \(handle.name) NEW`)")
            }
            try self.checkRange(record, handle, operation: operation, offset: offset, length: length)
            return record
        }
    }

    // MARK: Read

    /// Reads `buffer.count` bytes at `offset`. Unwritten ranges read as zeros.
    /// - Throws: `.invalidArgument` past the end, `.notFound` if the volume is gone, `.io`, `.corrupt`.
    public func read(_ handle: VolumeHandle, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer)
        throws(StrataError)
    {
        try self.counted(handle, .read, bytes: UInt64(buffer.count)) { () throws(StrataError) in
            _ = try self.read(handle, at: offset, into: buffer, holes: .zeros, waiting: .allowed)
        }
    }

    /// Runs a front end's request, counted in the handle's counters when it has them
    /// (IOStatistics.swift): the one place I/O statistics are taken. The entry points here call
    /// it; a front end calls it itself where it reads with `readLeavingHoles` (uncounted, since a
    /// no-wait attempt that gives up must not count), so the request counts once.
    /// - Throws: what `body` throws.
    @inline(__always)
    public func counted<T>(_ handle: VolumeHandle, _ operation: IOOperation, bytes: UInt64, _ body: () throws(StrataError) -> T)
        throws(StrataError) -> T
    {
        guard let counters = handle.counters else { return try body() }
        return try counters.measure(operation, bytes: bytes, body)
    }

    /// Counts a request a front end served without the engine waiting (never in flight), which
    /// started at `start` (`MonotonicClock.nanos()`).
    public func countServed(_ handle: VolumeHandle, _ operation: IOOperation, bytes: UInt64, since start: UInt64) {
        handle.counters?.served(operation, bytes: bytes, since: start)
    }

    /// Reads as `read(_:at:into:)` does (uncounted), except that holes (unwritten ranges of a volume without
    /// a base) are left as they are in `buffer` and returned, as ranges of `buffer` in order, so
    /// a front end can answer them without sending zeros. With `.never`, returns nil when the
    /// read would wait (a lock, a node not in memory, data not in the page cache, a base that
    /// fills on read); `buffer` then holds nothing useful and the caller reads again on a thread
    /// that may wait.
    public func readLeavingHoles(
        _ handle: VolumeHandle, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, waiting: Waiting
    ) throws(StrataError) -> [Range<Int>]? {
        try self.read(handle, at: offset, into: buffer, holes: .report, waiting: waiting)
    }

    /// Reads as `readLeavingHoles` does with `.allowed`, except that pieces a base image keeps
    /// as they are in an open file (a raw base: `BaseImage.fileRange`) are not read either: they
    /// are returned as `BaseFileRange`s, each with a descriptor of its own (a `dup`) that the
    /// caller closes once it has sent them (with sendfile: no copy through memory). `buffer`
    /// holds nothing useful in those ranges.
    public func readLeavingHolesAndBaseFiles(
        _ handle: VolumeHandle, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
    ) throws(StrataError) -> (holes: [Range<Int>], files: [BaseFileRange]) {
        var files: [BaseFileRange]? = []
        do throws(StrataError) {
            let holes = try self.read(handle, at: offset, into: buffer, holes: .report, waiting: .allowed, files: &files)
            guard let holes else { preconditionFailure("a read that may wait returned without its result") }
            return (holes, files ?? [])
        } catch {
            for file in files ?? [] { file.close() }
            throw error
        }
    }

    private func read(
        _ handle: VolumeHandle, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, holes: HoleReads,
        waiting: Waiting
    ) throws(StrataError) -> [Range<Int>]? {
        var files: [BaseFileRange]?
        return try self.read(handle, at: offset, into: buffer, holes: holes, waiting: waiting, files: &files)
    }

    /// `files`: nil to read every piece; else where the base-file pieces left unread go.
    private func read(
        _ handle: VolumeHandle, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, holes: HoleReads,
        waiting: Waiting, files: inout [BaseFileRange]?
    ) throws(StrataError) -> [Range<Int>]? {
        try self.withContext("read", handle.name) { () throws(StrataError) -> [Range<Int>]? in
            guard
                let result = try self.readUnchecked(
                    handle, at: offset, into: buffer, holes: holes, waiting: waiting, files: &files)
            else { return nil }
            // Outside the read's gate and guard: storing what was fetched is a write.
            if !result.fetched.isEmpty {
                let deferral = self.fillDeferral.withLock { $0 }
                let deferred = deferral?(handle, result.fetched) ?? false
                if !deferred { try self.fillFetched(handle, offsets: result.fetched) }
            }
            return result.holes
        }
    }

    /// A buffer of `count` bytes cut into its data and hole ranges, in order, from the holes
    /// `readLeavingHoles` reported for it.
    public static func pieces(of count: Int, holes: [Range<Int>]) -> [(range: Range<Int>, hole: Bool)] {
        var pieces: [(range: Range<Int>, hole: Bool)] = []
        var cursor = 0
        for hole in holes {
            if cursor < hole.lowerBound { pieces.append((cursor..<hole.lowerBound, false)) }
            pieces.append((hole, true))
            cursor = hole.upperBound
        }
        if cursor < count { pieces.append((cursor..<count, false)) }
        return pieces
    }

    /// What a read does with holes.
    private enum HoleReads {
        /// Fills them with zeros.
        case zeros
        /// Leaves them untouched and reports them.
        case report
    }

    /// What a read leaves to its caller: the volume offsets of pieces read through a base that
    /// fills on read (`BaseImage.fillUnitBytes`), when the handle is a writable volume, and the
    /// holes it reported.
    private struct ReadResult {
        var fetched: [UInt64] = []
        var holes: [Range<Int>] = []
    }

    /// Reads as `read` does, without the error context and the fill; nil when `waiting` is
    /// `.never` and a step would wait.
    private func readUnchecked(
        _ handle: VolumeHandle, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, holes: HoleReads,
        waiting: Waiting, files: inout [BaseFileRange]?
    ) throws(StrataError) -> ReadResult? {
        let gate = self.gates.gate(handle.id)
        guard gate.lockShared(waiting) else { return nil }
        defer { gate.unlock() }
        guard let token = self.readGuard.enter(waiting) else { return nil }
        defer { self.readGuard.leave(token) }
        let length = UInt64(buffer.count)
        var pieces: [ReadPiece] = []
        var fillable = false
        let found = try self.meta.withReadLock(waiting) { () throws(StrataError) -> UInt32? in
            guard let record = self.record(id: handle.id) else {
                throw StrataError(.notFound, "read \(handle.name): the volume was deleted")
            }
            fillable = !self.readOnly && !handle.readOnly && record.kind == .volume && !record.isReplica
            try self.checkRange(record, handle, operation: "read", offset: offset, length: length)
            var position = offset
            while position < offset + length {
                let chunk = ChunkIndex(position >> self.chunkShift)
                let inside = position & (self.chunkSize - 1)
                let count = min(self.chunkSize - inside, offset + length - position)
                guard let entry = try self.lookup(record, chunk: chunk, waiting: waiting) else { return nil }
                pieces.append(ReadPiece(start: Int(position - offset), count: Int(count), physical: entry.chunk, inside: inside))
                position += count
            }
            return record.baseID
        }
        guard let baseID = found ?? nil else { return nil }
        // Holes of a based volume read through to its base image; of any other volume, zeros.
        var base: (any BaseImage)?
        if baseID != 0 && pieces.contains(where: { $0.physical == nil }) {
            guard let image = try self.bases.image(baseID, for: handle.name, waiting: waiting) else { return nil }
            base = image
        }
        let fills = fillable && base?.fillUnitBytes != nil
        if fills && waiting == .never { return nil }
        var result = ReadResult()
        // Physically contiguous pieces are read with one call.
        var index = 0
        while index < pieces.count {
            let first = pieces[index]
            var end = index + 1
            if first.physical != nil {
                while end < pieces.count, pieces[end].continues(pieces[end - 1], chunkSize: self.chunkSize) { end += 1 }
            } else {
                while end < pieces.count, pieces[end].physical == nil { end += 1 }
            }
            let stop = pieces[end - 1].start + pieces[end - 1].count
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[first.start..<stop])
            if let physical = first.physical {
                let at = self.dataOffset(physical) + first.inside
                if waiting == .never {
                    guard self.device.readIfCached(into: target, at: at) else { return nil }
                } else {
                    try self.device.read(into: target, at: at)
                }
            } else if let base, files != nil, !fills,
                let file = base.fileRange(at: offset + UInt64(first.start), length: UInt64(stop - first.start))
            {
                // Left in the base file for the caller to send from there; the descriptor is
                // its own, so the base may close while the caller still sends.
                let descriptor = dup(file.descriptor)
                guard descriptor >= 0 else {
                    throw StrataError(.io, "read \(handle.name): cannot duplicate its base file's descriptor (errno \(errno))")
                }
                files?.append(BaseFileRange(range: first.start..<stop, descriptor: descriptor, fileOffset: file.offset))
            } else if let base {
                if waiting == .never {
                    guard base.readIfCached(at: offset + UInt64(first.start), into: target) else { return nil }
                } else {
                    try base.read(at: offset + UInt64(first.start), into: target)
                }
                if fills { result.fetched.append(offset + UInt64(first.start)) }
            } else if holes == .zeros {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                result.holes.append(first.start..<stop)
            }
            index = end
        }
        return result
    }

    /// Reads `count` bytes at `offset` into a new array.
    public func read(_ handle: VolumeHandle, at offset: UInt64, count: Int) throws(StrataError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: StrataError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(StrataError) { try self.read(handle, at: offset, into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    // MARK: Write

    /// Writes `bytes` at `offset`; with `fua`, commits before returning.
    /// - Throws: `.readOnly` on a snapshot, `.invalidArgument` past the end, `.noSpace` when the
    ///   pool is full (nothing written is lost), `.io`.
    public func write(_ handle: VolumeHandle, at offset: UInt64, _ bytes: UnsafeRawBufferPointer, fua: Bool = false)
        throws(StrataError)
    {
        try self.counted(handle, .write, bytes: UInt64(bytes.count)) { () throws(StrataError) in
            try self.withContext("write", handle.name) { () throws(StrataError) in
                try self.tapped(handle.id, .write(offset: offset, bytes: bytes)) { () throws(StrataError) in
                    try self.writeUnchecked(handle, at: offset, bytes, fua: false)
                }
                if fua { try self.flush() }
            }
        }
    }

    private func writeUnchecked(_ handle: VolumeHandle, at offset: UInt64, _ bytes: UnsafeRawBufferPointer, fua: Bool)
        throws(StrataError)
    {
        let gate = self.gates.gate(handle.id)
        gate.lockShared()
        defer { gate.unlock() }
        _ = try self.writableRecord(handle, operation: "write", offset: offset, length: UInt64(bytes.count))
        // A zero-length write (an NBD client may send one) changes nothing once the checks above
        // pass. It once underflowed computing its last chunk and trapped the daemon (found by the
        // nbd-requests fuzz target, docs/TESTING.md).
        guard !bytes.isEmpty else { return }
        if try self.writeInPlace(id: handle.id, at: offset, bytes) {
            if fua { try self.flush() }
            return
        }
        var position = offset
        let end = offset + UInt64(bytes.count)
        while position < end {
            let chunk = ChunkIndex(position >> self.chunkShift)
            let inside = position & (self.chunkSize - 1)
            let count = min(self.chunkSize - inside, end - position)
            let start = Int(position - offset)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + Int(count))])
            try self.writePiece(id: handle.id, name: handle.name, chunk: chunk, inside: inside, piece)
            position += count
        }
        if fua { try self.flush() }
    }

    /// Writes an array of bytes at `offset`.
    public func write(_ handle: VolumeHandle, at offset: UInt64, _ bytes: [UInt8], fua: Bool = false)
        throws(StrataError)
    {
        var failure: StrataError?
        bytes.withUnsafeBytes { buffer in
            do throws(StrataError) { try self.write(handle, at: offset, buffer, fua: fua) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes a request spanning several chunks with one call per physically contiguous run,
    /// when every chunk it touches is the volume's own (no remap needed). Returns false, having
    /// written nothing, when any chunk needs copy-on-write or allocation.
    private func writeInPlace(id: UInt64, at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws(StrataError) -> Bool {
        let first = offset >> self.chunkShift
        let last = (offset + UInt64(bytes.count) - 1) >> self.chunkShift
        guard last > first else { return false }
        return try self.chunkLocks.withLocks(volume: id, chunks: first..<(last + 1)) { () throws(StrataError) -> Bool in
            var physical: [PhysicalChunk] = []
            physical.reserveCapacity(Int(last - first + 1))
            let exclusive = try self.meta.withReadLock { () throws(StrataError) -> Bool in
                guard let record = self.record(id: id) else { return false }
                for chunk in first...last {
                    guard case .mapped(let owned, let epoch) = try self.lookup(record, chunk: ChunkIndex(chunk)),
                        UInt64(epoch) >= record.sharedBefore
                    else { return false }
                    physical.append(owned)
                }
                return true
            }
            guard exclusive else { return false }
            var runStart = 0
            while runStart < physical.count {
                var runEnd = runStart + 1
                while runEnd < physical.count, physical[runEnd].rawValue == physical[runEnd - 1].rawValue + 1 {
                    runEnd += 1
                }
                let from = max(offset, (first + UInt64(runStart)) << self.chunkShift)
                let to = min(offset + UInt64(bytes.count), (first + UInt64(runEnd)) << self.chunkShift)
                let source = UnsafeRawBufferPointer(rebasing: bytes[Int(from - offset)..<Int(to - offset)])
                let inside = from - ((first + UInt64(runStart)) << self.chunkShift)
                try self.device.write(source, at: self.dataOffset(physical[runStart]) + inside)
                runStart = runEnd
            }
            self.dataWrites.add(1, ordering: .relaxed)
            return true
        }
    }

    /// Writes part of one chunk. The caller holds the volume's gate and has checked the range.
    func writePiece(id: UInt64, name: String, chunk: ChunkIndex, inside: UInt64, _ bytes: UnsafeRawBufferPointer)
        throws(StrataError)
    {
        try self.chunkLocks.withLock(volume: id, chunk: chunk.rawValue) { () throws(StrataError) in
            let (entry, sharedBefore, baseID) = try self.meta.withReadLock { () throws(StrataError) in
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "write \(name): the volume was deleted")
                }
                return (try self.lookup(record, chunk: chunk), record.sharedBefore, record.baseID)
            }
            if case .mapped(let owned, let epoch) = entry, UInt64(epoch) >= sharedBefore {
                try self.device.write(bytes, at: self.dataOffset(owned) + inside)
                self.dataWrites.add(1, ordering: .relaxed)
                return
            }
            let partial = !(inside == 0 && UInt64(bytes.count) == self.chunkSize)
            if entry.isHole && baseID == 0 && self.freeChunksAreZero.load(ordering: .relaxed) {
                // A fresh chunk already reads as zeros: write only the new bytes.
                try self.remap(id: id, name: name, chunk: chunk, contents: bytes, at: inside)
                return
            }
            var whole: [UInt8]
            if let shared = entry.chunk, partial {
                whole = try self.device.read(count: Int(self.chunkSize), at: self.dataOffset(shared))
            } else {
                whole = [UInt8](repeating: 0, count: Int(self.chunkSize))
                if entry.isHole && baseID != 0 && partial {
                    // The first write to a chunk of a based volume keeps the rest of the base's chunk.
                    let base = try self.bases.image(baseID, for: name)
                    try whole.withUnsafeMutableBufferPointer { buffer throws(StrataError) in
                        try base.read(at: chunk.rawValue << self.chunkShift, into: UnsafeMutableRawBufferPointer(buffer))
                    }
                }
            }
            whole.withUnsafeMutableBytes { buffer in
                UnsafeMutableRawBufferPointer(rebasing: buffer[Int(inside)..<(Int(inside) + bytes.count)])
                    .copyMemory(from: bytes)
            }
            try whole.withUnsafeBufferPointer { buffer throws(StrataError) in
                try self.remap(id: id, name: name, chunk: chunk, contents: UnsafeRawBufferPointer(buffer), at: 0)
            }
        }
    }

    /// Writes `contents` at `offset` inside a fresh chunk and points `chunk` at it, releasing
    /// the old one. The rest of the fresh chunk must already hold what it should (zeros).
    /// `uncached` writes around the page cache (`PoolDevice.writeUncached`): bytes a read is
    /// not expected to want again soon, a chunk stored from a base.
    func remap(
        id: UInt64, name: String, chunk: ChunkIndex, contents: UnsafeRawBufferPointer, at offset: UInt64,
        uncached: Bool = false
    ) throws(StrataError) {
        let fresh = try self.allocateData(operation: "write \(name)")
        do throws(StrataError) {
            if uncached {
                try self.device.writeUncached(contents, at: self.dataOffset(fresh) + offset)
            } else {
                try self.device.write(contents, at: self.dataOffset(fresh) + offset)
            }
        } catch {
            self.abandon(fresh)
            throw error
        }
        self.dataWrites.add(1, ordering: .relaxed)
        try self.mapFresh(id: id, name: name, chunk: chunk, fresh: fresh)
    }

    /// Points `chunk` of volume `id` at `fresh`, a chunk just written that nothing references,
    /// releasing the old one. When that fails, `fresh` is free again, unless the pool failed.
    func mapFresh(id: UInt64, name: String, chunk: ChunkIndex, fresh: PhysicalChunk) throws(StrataError) {
        try self.meta.withWriteLock { () throws(StrataError) in
            guard var record = self.record(id: id) else {
                self.abandonLocked(fresh)
                throw StrataError(.notFound, "write \(name): the volume was deleted")
            }
            do throws(StrataError) {
                try self.requireNodePages(Int(record.depth) + 2, forRelease: false, operation: "write \(name)")
            } catch {
                self.abandonLocked(fresh)
                throw error
            }
            do throws(StrataError) {
                let old = try self.setEntry(&record, chunk: chunk, to: .mapped(fresh, epoch: UInt32(self.epoch)))
                self.retainChunk(fresh)
                if let replaced = old.chunk { self.releaseChunk(replaced) }
                self.store(record)
            } catch {
                // Corruption met half way through a tree update: stop writing (STYLE §4).
                self.failure = error
                throw error
            }
        }
    }

    /// Returns a chunk that was allocated but never mapped (its write or remap failed). Nothing
    /// references it, so it is free at once, once it reads as zeros again.
    func abandon(_ chunk: PhysicalChunk) {
        self.meta.withWriteLock { self.abandonLocked(chunk) }
    }

    private func abandonLocked(_ chunk: PhysicalChunk) {
        if !self.device.discard(at: self.dataOffset(chunk), length: self.chunkSize) {
            self.freeChunksAreZero.store(false, ordering: .sequentiallyConsistent)
        }
        self.dataInUse.remove(Int(chunk.rawValue))
    }

    /// A free data chunk; when the pool is full but chunks await a commit, commits and retries.
    func allocateData(operation: String) throws(StrataError) -> PhysicalChunk {
        for attempt in 0..<2 {
            let (chunk, pending) = self.meta.withWriteLock { (self.allocateDataChunk(), !self.pendingData.isEmpty) }
            if let chunk { return chunk }
            if attempt == 0 && pending {
                try self.flush()
                continue
            }
            break
        }
        throw StrataError(
            .noSpace,
            "\(operation): pool full (chunks=\(self.chunkCount) chunk size=\(SizeParser.format(self.chunkSize))); free space by deleting snapshots or volumes, or trimming"
        )
    }

    // MARK: Trim and zeroes

    /// Unmaps a range: whole chunks return to the pool; partial chunks are zeroed.
    public func trim(_ handle: VolumeHandle, at offset: UInt64, length: UInt64) throws(StrataError) {
        try self.counted(handle, .trim, bytes: length) { () throws(StrataError) in
            try self.zeroRange(handle, at: offset, length: length, allowTrim: true, fua: false)
        }
    }

    /// Makes a range read as zeros. With `allowTrim`, whole chunks are unmapped (thin); without
    /// it (NBD's NO_HOLE), zeros are written and space stays allocated.
    public func writeZeroes(_ handle: VolumeHandle, at offset: UInt64, length: UInt64, allowTrim: Bool, fua: Bool = false)
        throws(StrataError)
    {
        try self.counted(handle, .writeZeroes, bytes: length) { () throws(StrataError) in
            try self.zeroRange(handle, at: offset, length: length, allowTrim: allowTrim, fua: fua)
        }
    }

    /// `trim` and `writeZeroes` without counting.
    private func zeroRange(_ handle: VolumeHandle, at offset: UInt64, length: UInt64, allowTrim: Bool, fua: Bool)
        throws(StrataError)
    {
        try self.withContext(allowTrim ? "trim" : "write zeroes", handle.name) { () throws(StrataError) in
            try self.tapped(handle.id, .zero(offset: offset, length: length, trim: allowTrim)) { () throws(StrataError) in
                let gate = self.gates.gate(handle.id)
                gate.lockShared()
                defer { gate.unlock() }
                _ = try self.writableRecord(
                    handle, operation: allowTrim ? "trim" : "write zeroes", offset: offset, length: length)
                try self.zeroUnlocked(id: handle.id, name: handle.name, from: offset, to: offset + length, allowTrim: allowTrim)
            }
            if fua { try self.flush() }
        }
    }

    /// Zeroes [from, to) of a volume. The caller holds the gate and checked the range.
    ///
    /// With `allowTrim`, the whole chunks of the range cost what is mapped there, not the range
    /// they span: a tree walk finds the mapped ones (skipping empty subtrees), so trimming 2^62
    /// bytes of a volume that holds little is as cheap as trimming what it holds.
    func zeroUnlocked(id: UInt64, name: String, from start: UInt64, to end: UInt64, allowTrim: Bool) throws(StrataError) {
        let zeros = [UInt8](repeating: 0, count: Int(self.chunkSize))
        // A hole of a based volume reads its base, so zeroing where the base holds data writes
        // zeros; where the base has a hole too, unmapping is enough.
        let base = try self.baseImage(id: id, name: name)
        var position = start
        while position < end {
            let chunk = ChunkIndex(position >> self.chunkShift)
            let inside = position & (self.chunkSize - 1)
            let count = min(self.chunkSize - inside, end - position)
            if allowTrim && count == self.chunkSize {
                let wholeEnd = ChunkIndex(end >> self.chunkShift)
                try self.unmapMapped(id: id, name: name, from: chunk, to: wholeEnd)
                if let base {
                    try self.zeroBaseData(base, id: id, name: name, from: chunk, to: wholeEnd, zeros: zeros)
                }
                position = wholeEnd.rawValue << self.chunkShift
                continue
            } else {
                let mapped = try self.meta.withReadLock { () throws(StrataError) in
                    guard let record = self.record(id: id) else { return false }
                    return try !self.lookup(record, chunk: chunk).isHole
                }
                let baseData = try base.map { base throws(StrataError) in
                    try Self.holdsData(base, at: position, length: count)
                } ?? false
                // A hole already reads as zeros; only NO_HOLE must allocate it.
                if mapped || baseData || !allowTrim {
                    try zeros.withUnsafeBufferPointer { buffer throws(StrataError) in
                        try self.writePiece(
                            id: id, name: name, chunk: chunk, inside: inside,
                            UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(count)))
                    }
                }
            }
            position += count
        }
    }

    /// Unmaps every mapped chunk in [first, end), finding them by walks of the tree in batches of
    /// `Limits.trimBatchChunks`, so the cost follows the mapped chunks and memory stays bounded.
    private func unmapMapped(id: UInt64, name: String, from first: ChunkIndex, to end: ChunkIndex) throws(StrataError) {
        var cursor = first
        while cursor < end {
            let batch = try self.meta.withReadLock { () throws(StrataError) -> [ChunkIndex] in
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "trim \(name): the volume was deleted")
                }
                return try self.mappedChunks(record, from: cursor, to: end, limit: Limits.trimBatchChunks)
            }
            for chunk in batch { try self.unmap(id: id, name: name, chunk: chunk) }
            guard batch.count == Limits.trimBatchChunks, let last = batch.last else { return }
            cursor = last.advanced(by: 1)
        }
    }

    private func unmap(id: UInt64, name: String, chunk: ChunkIndex) throws(StrataError) {
        try self.chunkLocks.withLock(volume: id, chunk: chunk.rawValue) { () throws(StrataError) in
            try self.meta.withWriteLock { () throws(StrataError) in
                guard var record = self.record(id: id) else {
                    throw StrataError(.notFound, "trim \(name): the volume was deleted")
                }
                guard try !self.lookup(record, chunk: chunk).isHole else { return }
                try self.requireNodePages(Int(record.depth) + 2, forRelease: true, operation: "trim \(name)")
                do throws(StrataError) {
                    let old = try self.setEntry(&record, chunk: chunk, to: .hole, forRelease: true)
                    if let replaced = old.chunk { self.releaseChunk(replaced) }
                    self.store(record)
                } catch {
                    self.failure = error
                    throw error
                }
            }
        }
    }

    // MARK: Allocation map

    /// Mapped and unmapped extents covering [offset, offset + length), merged, in order.
    public func mapping(_ handle: VolumeHandle, at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        try self.withContext("block status", handle.name) { () throws(StrataError) in
            try self.mappingUnchecked(handle, at: offset, length: length)
        }
    }

    private func mappingUnchecked(_ handle: VolumeHandle, at offset: UInt64, length: UInt64) throws(StrataError)
        -> [MappingExtent]
    {
        let (extents, baseID) = try self.meta.withReadLock { () throws(StrataError) -> ([MappingExtent], UInt32) in
            guard let record = self.record(id: handle.id) else {
                throw StrataError(.notFound, "block status \(handle.name): the volume was deleted")
            }
            try self.checkRange(record, handle, operation: "block status", offset: offset, length: length)
            return (try self.treeExtents(record, at: offset, length: length), record.baseID)
        }
        guard baseID != 0 else { return extents }
        // A based volume's holes are data where its base holds data.
        let base = try self.bases.image(baseID, for: handle.name)
        var merged: [MappingExtent] = []
        for extent in extents {
            let pieces = extent.mapped ? [extent] : try base.allocation(at: extent.offset, length: extent.length)
            for piece in pieces where piece.length > 0 {
                if let last = merged.last, last.mapped == piece.mapped, last.offset + last.length == piece.offset {
                    merged[merged.count - 1] = MappingExtent(
                        offset: last.offset, length: last.length + piece.length, mapped: piece.mapped)
                } else {
                    merged.append(piece)
                }
            }
        }
        return merged
    }
}

extension Pool {
    /// The tree's own mapped and unmapped extents over [offset, offset + length), merged, in
    /// order (a based volume's holes not yet resolved against its base). Caller holds `meta`.
    func treeExtents(_ record: VolumeRecord, at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        var extents: [MappingExtent] = []
        var cursor = offset
        let end = offset + length
        func add(_ start: UInt64, _ stop: UInt64, _ mapped: Bool) {
            guard stop > start else { return }
            if let last = extents.last, last.mapped == mapped, last.offset + last.length == start {
                extents[extents.count - 1] = MappingExtent(offset: last.offset, length: stop - last.offset, mapped: mapped)
            } else {
                extents.append(MappingExtent(offset: start, length: stop - start, mapped: mapped))
            }
        }
        let first = ChunkIndex(offset >> self.chunkShift)
        let last = ChunkIndex((end + self.chunkSize - 1) >> self.chunkShift)
        try self.forEachMapping(record, from: first, to: last) { chunk, _, _ in
            let start = max(chunk.rawValue << self.chunkShift, offset)
            let stop = min((chunk.rawValue + 1) << self.chunkShift, end)
            add(cursor, start, false)
            add(start, stop, true)
            cursor = stop
        }
        add(cursor, end, false)
        return extents
    }
}

/// One chunk-sized piece of a read: where it goes in the caller's buffer, and where it comes
/// from (a physical chunk and the offset inside it, or nil for a hole).
struct ReadPiece {
    /// Offset in the caller's buffer.
    let start: Int
    let count: Int
    let physical: PhysicalChunk?
    /// Offset of the piece inside its chunk.
    let inside: UInt64

    /// True when this piece starts where `previous` ends on the device: the next physical chunk,
    /// from its start, after a piece that ran to the end of its chunk.
    func continues(_ previous: ReadPiece, chunkSize: UInt64) -> Bool {
        guard let physical = self.physical, let before = previous.physical else { return false }
        return physical.rawValue == before.rawValue + 1 && self.inside == 0
            && previous.inside + UInt64(previous.count) == chunkSize
    }
}
