// Based volumes (issue 10): a volume whose never-written chunks read from an external base
// image. The tree is the same as any volume's; only a hole means "read the base" instead of
// "read zeros". So the rest follows from three rules kept in Pool+IO.swift:
// - a read of a hole reads the base (zeros past the base's end);
// - the first partial write to a hole fills the rest of the new chunk from the base;
// - zeroing a hole where the base holds data writes zeros (a hole would show the base again).
// Snapshots, clones and rollbacks carry the base id with the tree, so a clone of a snapshot of
// a based volume keeps the base. Flatten copies what is still read from the base into the
// pool, then drops the base; rebase swaps the base for one proven identical where it is read.

import Foundation

/// One entry of a volume's stack, from the top down, for `strata volume layers`.
public struct LayerInfo: Sendable, Codable, Equatable {
    /// "volume" (the writable top), "snapshot" (a read-only layer) or "base" (an image file).
    public let kind: String
    /// `VOLUME`, `VOLUME@SNAPSHOT`, or the base file's path.
    public let name: String
    public let sizeBytes: UInt64
    public let writable: Bool
    /// Base files: "raw" or "qcow2".
    public var format: String? = nil
    /// Base files: why the base cannot be read now, if it cannot.
    public var problem: String? = nil
}

extension Pool {
    /// The base image behind volume `id`, or nil when it has none.
    func baseImage(id: UInt64, name: String) throws(StrataError) -> (any BaseImage)? {
        let baseID = self.meta.withReadLock { self.record(id: id)?.baseID ?? 0 }
        return baseID == 0 ? nil : try self.bases.image(baseID, for: name)
    }

    /// True when any byte of [offset, offset + length) of `base` holds data.
    static func holdsData(_ base: any BaseImage, at offset: UInt64, length: UInt64) throws(StrataError) -> Bool {
        guard offset < base.virtualSize else { return false }
        let clipped = min(length, base.virtualSize - offset)
        return try base.allocation(at: offset, length: clipped).contains { $0.mapped }
    }

    /// Writes zero chunks over every chunk in [first, end) where `base` holds data: the part of
    /// a trim of a based volume that a hole cannot express. Cost: the base's data in the range.
    func zeroBaseData(
        _ base: any BaseImage, id: UInt64, name: String, from first: ChunkIndex, to end: ChunkIndex, zeros: [UInt8]
    ) throws(StrataError) {
        let start = first.rawValue << self.chunkShift
        guard start < base.virtualSize else { return }
        let stop = min(end.rawValue << self.chunkShift, base.virtualSize)
        var next = first.rawValue
        for extent in try base.allocation(at: start, length: stop - start) where extent.mapped {
            let from = max(next, extent.offset >> self.chunkShift)
            let to = (extent.offset + extent.length + self.chunkSize - 1) >> self.chunkShift
            for chunk in from..<max(from, to) {
                try zeros.withUnsafeBufferPointer { buffer throws(StrataError) in
                    try self.writePiece(
                        id: id, name: name, chunk: ChunkIndex(chunk), inside: 0, UnsafeRawBufferPointer(buffer))
                }
            }
            next = max(next, to)
        }
    }

    // MARK: Create

    /// Creates a thin volume whose never-written chunks read from the image file at `basePath`
    /// (opened read-only, never written). `size` defaults to the image's virtual size.
    /// - Throws: `.invalidArgument` for a bad name, size or image, `.alreadyExists`, and the
    ///   image's own errors naming the file.
    public func createVolume(_ name: String, size: UInt64?, basePath: String) throws(StrataError) {
        try self.checkNewVolume(name)
        let path = Self.absolutePath(basePath)
        let image = try self.bases.openFile(path, operation: "create volume \(name)")
        let descriptor = try BaseDescriptor.recording(image, path: path)
        try self.createVolume(name, size: size, base: image, descriptor: descriptor)
    }

    /// Creates a thin volume whose never-written chunks read from `base`, an image the caller
    /// opened (a remote snapshot) and recorded as `descriptor`. `size` defaults to its size.
    /// - Throws: `.invalidArgument` for a bad name or size, `.alreadyExists`, `.io` when the
    ///   base table cannot be written.
    public func createVolume(
        _ name: String, size: UInt64?, base image: any BaseImage, descriptor: BaseDescriptor
    ) throws(StrataError) {
        try self.checkNewVolume(name)
        let bytes = size ?? (image.virtualSize + Limits.sectorSize - 1) / Limits.sectorSize * Limits.sectorSize
        try Self.validateSize(bytes, operation: "create volume", object: name)
        let baseID = try self.bases.register(descriptor, image: image)
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("create volume", name)
            guard self.volumeIDByName[name] == nil else {
                throw StrataError(.alreadyExists, "create volume \(name): a volume with that name exists; choose another name")
            }
            var record = self.newRecord(kind: .volume, name: name, parent: 0, size: bytes)
            record.baseID = baseID
            self.insert(record)
        }
    }

    /// Throws unless a volume called `name` could be created now.
    private func checkNewVolume(_ name: String) throws(StrataError) {
        try Names.validate(name, kind: "volume", operation: "create")
        try self.meta.withReadLock { () throws(StrataError) in
            try self.checkWritable("create volume", name)
            guard self.volumeIDByName[name] == nil else {
                throw StrataError(.alreadyExists, "create volume \(name): a volume with that name exists; choose another name")
            }
        }
    }

    /// `path` made absolute against the working directory, with `.` and `..` resolved.
    static func absolutePath(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return URL(fileURLWithPath: absolute).standardizedFileURL.path
    }

    // MARK: Inspect

    /// The base of a volume or snapshot: its descriptor and why it cannot be read now, if so.
    public func base(of target: String) throws(StrataError) -> (descriptor: BaseDescriptor, problem: String?)? {
        let baseID = try self.meta.withReadLock { () throws(StrataError) in
            try self.resolve(target, operation: "show base of").baseID
        }
        guard baseID != 0 else { return nil }
        guard let descriptor = self.bases.descriptor(baseID) else {
            return (
                BaseDescriptor(
                    id: baseID, path: "?", format: "?", virtualSize: 0, files: [], layers: [], fingerprints: [],
                    createdAtNanos: 0),
                "base image id \(baseID) is missing from the pool's base table"
            )
        }
        return (descriptor, self.bases.problem(baseID, for: target))
    }

    /// The stack `volume` reads through, from the top down: the volume, its snapshots newest
    /// first, for a clone the origin snapshot and the older snapshots of its volume (and so on
    /// up the clone chain), then the base image's files.
    public func layers(of volume: String) throws(StrataError) -> [LayerInfo] {
        var result: [LayerInfo] = []
        let baseID = try self.meta.withReadLock { () throws(StrataError) -> UInt32 in
            var record = try self.volumeRecord(volume, operation: "list layers of")
            result.append(LayerInfo(kind: "volume", name: record.name, sizeBytes: record.size, writable: !record.isReplica))
            var before = Int64.max
            var visited: Set<UInt64> = []
            while visited.insert(record.id).inserted {
                let snapshots = (self.snapshotIDs[record.id] ?? [:]).values.compactMap { self.record(id: $0) }
                for snapshot in snapshots.sorted(by: { ($0.createdAtNanos, $0.id) > ($1.createdAtNanos, $1.id) })
                where snapshot.createdAtNanos <= before {
                    result.append(
                        LayerInfo(kind: "snapshot", name: self.fullName(snapshot), sizeBytes: snapshot.size, writable: false))
                }
                guard record.parent != 0, let origin = self.record(id: record.parent), origin.kind == .snapshot,
                    let parent = self.record(id: origin.parent)
                else { break }
                // A clone reads through its origin snapshot and what that snapshot's volume held.
                before = origin.createdAtNanos
                record = parent
            }
            return try self.volumeRecord(volume, operation: "list layers of").baseID
        }
        guard baseID != 0 else { return result }
        let problem = self.bases.problem(baseID, for: volume)
        for layer in self.bases.descriptor(baseID)?.layers ?? [] {
            result.append(
                LayerInfo(
                    kind: "base", name: layer.path, sizeBytes: layer.virtualSize, writable: false, format: layer.format,
                    problem: problem))
        }
        return result
    }

    /// Base ids some record still names.
    func referencedBases() -> Set<UInt32> {
        self.meta.withReadLock {
            Set(self.slotByID.values.map { self.volumes[$0].baseID }.filter { $0 != 0 })
        }
    }

    /// Drops base descriptors no record names. Call after the change that stopped naming them
    /// is durable (a flush), so a crash never leaves a record without its descriptor.
    public func collectBases() throws(StrataError) {
        try self.bases.collect(referenced: self.referencedBases())
    }

    /// Volumes whose flatten was interrupted (resumed by the daemon when it starts).
    public func volumesFlattening() -> [String] {
        self.meta.withReadLock {
            self.volumeIDByName.compactMap { name, id in self.record(id: id)?.isFlattening == true ? name : nil }.sorted()
        }
    }
}
