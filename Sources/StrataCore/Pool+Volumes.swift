// The control plane: create, list, resize, rename and delete volumes; create, list, delete
// and roll back snapshots; clone. Each operation validates everything before it changes
// anything, so a refused request leaves the pool as it was. None commits by itself: the
// caller (CLI or daemon) flushes when the change must be durable.
//
// A snapshot is a new record pointing at the volume's root with one more reference on it, and
// the volume's shared-before epoch moves past every mapping it has: O(1) whatever the volume
// size or the number of snapshots. Rollback and clone are the same move in the other direction.

import Foundation

/// A volume as `volume list` shows it.
public struct VolumeInfo: Sendable, Codable, Equatable {
    public let name: String
    public let sizeBytes: UInt64
    public let allocatedBytes: UInt64
    public let snapshots: Int
    public let createdAt: String
    /// `VOLUME@SNAPSHOT` this volume was cloned from, if any (and if it still exists).
    public let origin: String?
    public let guid: String
    /// Set when the volume's mapping tree could not be read; `strata check` names the damage.
    public var damaged: String? = nil
    /// The base image file a based volume's holes read from.
    public var base: String? = nil
    /// Why the base cannot be read now ("unavailable" in listings), if it cannot.
    public var baseProblem: String? = nil
    /// Volumes over a remote base, in the daemon's HTTP API: `strata volume status --json`'s object.
    public var hydration: VolumeStatus? = nil
    var baseID: UInt32 = 0

    enum CodingKeys: String, CodingKey {
        case name, sizeBytes, allocatedBytes, snapshots, createdAt, origin, guid, damaged, base, baseProblem, hydration
    }
}

/// A snapshot as `snapshot list` shows it.
public struct SnapshotInfo: Sendable, Codable, Equatable {
    public let volume: String
    public let name: String
    public let sizeBytes: UInt64
    public let createdAt: String
    /// Bytes only this snapshot references: what deleting it frees.
    public let exclusiveBytes: UInt64
    public let guid: String
}

/// A reference to a volume or snapshot for I/O; stays valid across renames. A front end's
/// handle (`Pool.handle(_:frontEnd:)`) carries the counters its requests add to
/// (IOStatistics.swift); two handles of the same object are equal whatever they count into.
public struct VolumeHandle: Sendable, Hashable {
    public let id: UInt64
    public let name: String
    public let readOnly: Bool
    /// Where this handle's requests are counted; nil when nothing counts them.
    public let counters: VolumeIOCounters?
    /// The handle of the one writer a replica-flagged volume has: a remote mirror leg's session
    /// applying the mirrored volume's writes (`Pool.mirrorLegHandle`). Every other handle of a
    /// replica is refused writes.
    public let replicaWriter: Bool

    public init(id: UInt64, name: String, readOnly: Bool, counters: VolumeIOCounters? = nil, replicaWriter: Bool = false) {
        precondition(!(readOnly && replicaWriter), "volume handle \(name): a replica writer cannot be read-only")
        self.id = id
        self.name = name
        self.readOnly = readOnly
        self.counters = counters
        self.replicaWriter = replicaWriter
    }

    /// The same handle, counting nothing: for the engine calls inside one counted request.
    public var uncounted: VolumeHandle {
        VolumeHandle(id: self.id, name: self.name, readOnly: self.readOnly, replicaWriter: self.replicaWriter)
    }

    public static func == (left: VolumeHandle, right: VolumeHandle) -> Bool {
        left.id == right.id && left.name == right.name && left.readOnly == right.readOnly
            && left.replicaWriter == right.replicaWriter
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.id)
        hasher.combine(self.name)
        hasher.combine(self.readOnly)
        hasher.combine(self.replicaWriter)
    }
}

extension Pool {
    // MARK: Lookup (under `meta`)

    func record(id: UInt64) -> VolumeRecord? {
        guard let slot = self.slotByID[id] else { return nil }
        return self.volumes[slot]
    }

    func store(_ record: VolumeRecord) {
        guard let slot = self.slotByID[record.id] else { preconditionFailure("record \(record.id) has no slot") }
        self.noteFeatures(of: record)
        if self.volumes[slot] != record {
            self.volumes[slot] = record
            self.metadataChanged = true
        }
    }

    func volumeRecord(_ name: String, operation: String) throws(StrataError) -> VolumeRecord {
        guard let id = self.volumeIDByName[name], let record = self.record(id: id) else {
            try Names.validate(name, kind: "volume", operation: operation)
            throw StrataError(.notFound, "\(operation) volume \(name): no such volume; see `strata volume list`")
        }
        return record
    }

    func snapshotRecord(_ volume: String, _ snapshot: String, operation: String) throws(StrataError) -> VolumeRecord {
        let parent = try self.volumeRecord(volume, operation: operation)
        guard let id = self.snapshotIDs[parent.id]?[snapshot], let record = self.record(id: id) else {
            try Names.validate(snapshot, kind: "snapshot", operation: operation)
            throw StrataError(
                .notFound, "\(operation) snapshot \(volume)@\(snapshot): no such snapshot; see `strata snapshot list \(volume)`")
        }
        guard !record.isHidden else {
            // Every user operation on a snapshot comes through here: a split point is refused once.
            throw StrataError(
                .invalidArgument,
                "\(operation) snapshot \(volume)@\(snapshot): a hidden split point of a mirror, kept for its change tracking; see `strata mirror status \(volume)`"
            )
        }
        return record
    }

    /// The record a `VOLUME` or `VOLUME@SNAPSHOT` name refers to.
    func resolve(_ target: String, operation: String) throws(StrataError) -> VolumeRecord {
        let (volume, snapshot) = Names.split(target)
        if let snapshot { return try self.snapshotRecord(volume, snapshot, operation: operation) }
        return try self.volumeRecord(volume, operation: operation)
    }

    func fullName(_ record: VolumeRecord) -> String {
        guard record.kind == .snapshot else { return record.name }
        let volume = self.record(id: record.parent)?.name ?? "?"
        return "\(volume)@\(record.name)"
    }

    func insert(_ record: VolumeRecord) {
        if self.freeSlots.isEmpty {
            let start = self.volumes.count
            self.volumes.grow(to: start + PagedArray<VolumeRecord>.perLeaf)
            self.freeSlots.append(contentsOf: (start..<self.volumes.count).reversed())
        }
        let slot = self.freeSlots.removeLast()
        precondition(self.volumes[slot].isZero, "volume table slot \(slot) is not free")
        self.noteFeatures(of: record)
        self.volumes[slot] = record
        self.slotByID[record.id] = slot
        switch record.kind {
        case .volume: self.volumeIDByName[record.name] = record.id
        case .snapshot: self.snapshotIDs[record.parent, default: [:]][record.name] = record.id
        case .staging: self.stagingIDByName[record.name] = record.id
        }
        self.metadataChanged = true
    }

    func remove(_ record: VolumeRecord) throws(StrataError) {
        if record.root != .none { try self.releaseNode(record.root.rawValue, level: record.depth - 1) }
        guard let slot = self.slotByID.removeValue(forKey: record.id) else { return }
        self.volumes[slot] = .zero
        self.freeSlots.append(slot)
        switch record.kind {
        case .volume:
            self.volumeIDByName[record.name] = nil
            self.snapshotIDs[record.id] = nil
        case .snapshot:
            self.snapshotIDs[record.parent]?[record.name] = nil
        case .staging:
            self.stagingIDByName[record.name] = nil
        }
        self.statistics.forget(volumeID: record.id)
        self.gates.forget(record.id)
        self.metadataChanged = true
    }

    func newRecord(kind: RecordKind, name: String, parent: UInt64, size: UInt64) -> VolumeRecord {
        defer { self.nextVolumeID += 1 }
        return VolumeRecord(
            id: self.nextVolumeID, kind: kind, depth: Self.depth(forChunks: self.chunks(for: size)), parent: parent,
            size: size, root: .none, sharedBefore: self.epoch, createdAtNanos: Int64(Date().timeIntervalSince1970 * 1e9),
            guid: (UInt64.random(in: 1...UInt64.max), UInt64.random(in: 1...UInt64.max)), name: name)
    }

    func chunks(for size: UInt64) -> UInt64 { (size + self.chunkSize - 1) >> self.chunkShift }

    static func validateSize(_ size: UInt64, operation: String, object: String) throws(StrataError) {
        guard size > 0, size % Limits.sectorSize == 0, size <= Limits.volumeSizeMax else {
            throw StrataError(
                .invalidArgument,
                "\(operation) \(object): invalid size \(size); use a positive multiple of 512 bytes up to \(SizeParser.format(Limits.volumeSizeMax)) (the largest volume), such as 10G")
        }
    }

    /// Takes the sharing epoch forward: every existing mapping of `record` becomes shared.
    func markShared(_ record: inout VolumeRecord) {
        self.epoch += 1
        precondition(self.epoch < UInt64(UInt32.max), "pool epoch exhausted")
        record.sharedBefore = self.epoch
    }

    // MARK: Volumes

    /// Creates an empty thin volume.
    /// - Throws: `.invalidArgument` for a bad name or size, `.alreadyExists` on a collision.
    public func createVolume(_ name: String, size: UInt64) throws(StrataError) {
        try Names.validate(name, kind: "volume", operation: "create")
        try Self.validateSize(size, operation: "create volume", object: name)
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("create volume", name)
            guard self.volumeIDByName[name] == nil else {
                throw StrataError(.alreadyExists, "create volume \(name): a volume with that name exists; choose another name")
            }
            self.insert(self.newRecord(kind: .volume, name: name, parent: 0, size: size))
        }
    }

    /// Lists volumes sorted by name.
    public func listVolumes() throws(StrataError) -> [VolumeInfo] {
        var result: [VolumeInfo] = []
        try self.meta.withReadLock { () throws(StrataError) in
            for (name, id) in self.volumeIDByName.sorted(by: { $0.key < $1.key }) {
                guard let record = self.record(id: id) else { continue }
                var mapped: UInt64 = 0
                var damage: String?
                do throws(StrataError) {
                    try self.forEachMapping(record) { _, _, _ in mapped += 1 }
                } catch {
                    // One damaged tree must not hide every other volume from the listing.
                    damage = error.message
                }
                var origin: String?
                if record.parent != 0, let snapshot = self.record(id: record.parent) { origin = self.fullName(snapshot) }
                result.append(
                    VolumeInfo(
                        name: name, sizeBytes: record.size, allocatedBytes: mapped * self.chunkSize,
                        snapshots: self.visibleSnapshotCount(id), createdAt: Self.timestamp(record.createdAtNanos),
                        origin: origin, guid: Self.guidString(record.guid), damaged: damage,
                        base: record.baseID == 0 ? nil : self.bases.descriptor(record.baseID)?.path ?? "?",
                        baseID: record.baseID))
            }
        }
        // Checking a base stats its files: done outside the metadata lock.
        for index in result.indices where result[index].baseID != 0 {
            result[index].baseProblem = self.bases.problem(result[index].baseID, for: result[index].name)
        }
        return result
    }

    /// Changes a volume's size. Shrinking frees every chunk past the new end and needs `allowShrink`.
    public func resizeVolume(_ name: String, size: UInt64, allowShrink: Bool = false) throws(StrataError) {
        try self.withContext("resize volume", name) { () throws(StrataError) in
            try Self.validateSize(size, operation: "resize volume", object: name)
            let (id, oldSize, baseID) = try self.meta.withReadLock { () throws(StrataError) in
                let record = try self.volumeRecord(name, operation: "resize")
                return (record.id, record.size, record.baseID)
            }
            if size < oldSize, baseID != 0, let base = self.bases.descriptor(baseID),
                size < (base.virtualSize + self.chunkSize - 1) / self.chunkSize * self.chunkSize
            {
                // Chunks dropped by a shrink become holes, and a hole of a based volume reads the
                // base: growing again would show the base's old data instead of zeros.
                throw StrataError(
                    .invalidArgument,
                    "resize volume \(name): cannot shrink below its base image \(base.path) (\(SizeParser.format(base.virtualSize))); run `strata volume flatten \(name)` first"
                )
            }
            if size < oldSize && !allowShrink {
                throw StrataError(
                    .invalidArgument,
                    "resize volume \(name): \(SizeParser.format(size)) is smaller than \(SizeParser.format(oldSize)) and would discard data; pass --allow-shrink to shrink"
                )
            }
            let gate = self.gates.gate(id)
            gate.lockExclusive()
            defer { gate.unlock() }
            let current = try self.meta.withReadLock { () throws(StrataError) in
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "resize volume \(name): no such volume; see `strata volume list`")
                }
                return record.size
            }
            if size < current, size % self.chunkSize != 0 {
                // The new last chunk keeps bytes past the new end: zero them now, so growing the
                // volume again reads zeros there, as it does everywhere else past the old end.
                let end = min(current, (size / self.chunkSize + 1) * self.chunkSize)
                try self.zeroUnlocked(id: id, name: name, from: size, to: end, allowTrim: true)
            }
            try self.meta.withWriteLock { () throws(StrataError) in
                try self.checkWritable("resize volume", name)
                guard var record = self.record(id: id) else {
                    throw StrataError(.notFound, "resize volume \(name): no such volume; see `strata volume list`")
                }
                let keep = self.chunks(for: size)
                if size < record.size {
                    try self.requireNodePages(Int(record.depth) * 2, forRelease: true, operation: "resize volume \(name)")
                    try self.truncate(&record, keepBelow: ChunkIndex(keep))
                }
                try self.requireNodePages(Int(Limits.treeDepthMax), forRelease: false, operation: "resize volume \(name)")
                try self.ensureDepth(&record, chunk: ChunkIndex(keep - 1))
                record.size = size
                self.store(record)
            }
        }
    }

    /// Renames a volume; its snapshots follow it.
    public func renameVolume(_ name: String, to newName: String) throws(StrataError) {
        try Names.validate(newName, kind: "volume", operation: "rename")
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("rename volume", name)
            var record = try self.volumeRecord(name, operation: "rename")
            guard self.volumeIDByName[newName] == nil else {
                throw StrataError(.alreadyExists, "rename volume \(name): \(newName) exists; choose another name")
            }
            self.volumeIDByName[name] = nil
            self.volumeIDByName[newName] = record.id
            record.name = newName
            self.store(record)
        }
    }

    /// Deletes a volume. With snapshots it needs `recursive`, which deletes them too.
    public func deleteVolume(_ name: String, recursive: Bool = false) throws(StrataError) {
        try self.withContext("delete volume", name) { () throws(StrataError) in
            let id = try self.meta.withReadLock { () throws(StrataError) in try self.volumeRecord(name, operation: "delete").id }
            let gate = self.gates.gate(id)
            gate.lockExclusive()
            defer { gate.unlock() }
            try self.meta.withWriteLock { () throws(StrataError) in
                try self.checkWritable("delete volume", name)
                guard let record = self.record(id: id) else {
                    throw StrataError(.notFound, "delete volume \(name): no such volume; see `strata volume list`")
                }
                let snapshots = self.snapshotIDs[id] ?? [:]
                if !snapshots.isEmpty && !recursive {
                    throw StrataError(
                        .busy,
                        "delete volume \(name): it has \(snapshots.count) snapshot(s) (\(snapshots.keys.sorted().prefix(5).joined(separator: ", "))); delete them first or pass --recursive"
                    )
                }
                // Snapshots first, then the volume; every tree checked before anything is removed.
                let doomed = snapshots.values.compactMap { self.record(id: $0) } + [record]
                try self.checkReleasable(doomed.map { ($0.root, $0.depth - 1) })
                for victim in doomed { try self.remove(victim) }
            }
        }
    }

    // MARK: Snapshots and clones

    /// Takes a read-only, point-in-time snapshot of a volume in O(1).
    public func createSnapshot(_ volume: String, _ snapshot: String) throws(StrataError) {
        try Names.validate(snapshot, kind: "snapshot", operation: "create")
        guard !snapshot.hasPrefix(Self.hiddenSnapshotPrefix) else {
            throw StrataError(
                .invalidArgument,
                "create snapshot \(volume)@\(snapshot): names beginning with \(Self.hiddenSnapshotPrefix) are kept for mirror split points; choose another name"
            )
        }
        try self.createSnapshot(volume, snapshot, hidden: false)
    }

    /// Takes a snapshot, hidden (a mirror's split point) or not; the caller validated the name.
    func createSnapshot(_ volume: String, _ snapshot: String, hidden: Bool) throws(StrataError) {
        let id = try self.meta.withReadLock { () throws(StrataError) in try self.volumeRecord(volume, operation: "snapshot").id }
        let gate = self.gates.gate(id)
        gate.lockExclusive()
        defer { gate.unlock() }
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("create snapshot", "\(volume)@\(snapshot)")
            guard var record = self.record(id: id) else {
                throw StrataError(.notFound, "create snapshot \(volume)@\(snapshot): no such volume; see `strata volume list`")
            }
            guard self.snapshotIDs[id]?[snapshot] == nil else {
                throw StrataError(
                    .alreadyExists, "create snapshot \(volume)@\(snapshot): a snapshot with that name exists; choose another name")
            }
            var copy = self.newRecord(kind: .snapshot, name: snapshot, parent: id, size: record.size)
            copy.depth = record.depth
            copy.root = record.root
            copy.baseID = record.baseID
            if hidden { copy.flags |= VolumeRecord.flagHidden }
            if record.root != .none { try self.retainNode(record.root.rawValue) }
            self.markShared(&record)
            copy.sharedBefore = record.sharedBefore
            self.store(record)
            self.insert(copy)
        }
    }

    /// Lists snapshots of one volume (or all), oldest first within each volume.
    public func listSnapshots(of volume: String? = nil) throws(StrataError) -> [SnapshotInfo] {
        try self.meta.withReadLock { () throws(StrataError) in
            var parents: [VolumeRecord] = []
            if let volume {
                parents = [try self.volumeRecord(volume, operation: "list snapshots of")]
            } else {
                parents = self.volumeIDByName.values.compactMap { self.record(id: $0) }.sorted { $0.name < $1.name }
            }
            var result: [SnapshotInfo] = []
            for parent in parents {
                let snapshots = (self.snapshotIDs[parent.id] ?? [:]).values.compactMap { self.record(id: $0) }
                    .filter { !$0.isHidden }
                for snapshot in snapshots.sorted(by: { ($0.createdAtNanos, $0.id) < ($1.createdAtNanos, $1.id) }) {
                    result.append(
                        SnapshotInfo(
                            volume: parent.name, name: snapshot.name, sizeBytes: snapshot.size,
                            createdAt: Self.timestamp(snapshot.createdAtNanos),
                            exclusiveBytes: try self.exclusiveChunks(snapshot) * self.chunkSize,
                            guid: Self.guidString(snapshot.guid)))
                }
            }
            return result
        }
    }

    /// Deletes a snapshot, freeing every chunk nothing else references.
    public func deleteSnapshot(_ volume: String, _ snapshot: String) throws(StrataError) {
        try self.withContext("delete snapshot", "\(volume)@\(snapshot)") { () throws(StrataError) in
            try self.meta.withWriteLock { () throws(StrataError) in
                try self.checkWritable("delete snapshot", "\(volume)@\(snapshot)")
                let record = try self.snapshotRecord(volume, snapshot, operation: "delete")
                try self.checkReleasable([(record.root, record.depth - 1)])
                try self.remove(record)
            }
        }
    }

    /// Makes a volume's content (and size) that of one of its snapshots, in O(1) plus freeing
    /// what only the volume held. The snapshot and every other snapshot stay.
    public func rollback(_ volume: String, _ snapshot: String) throws(StrataError) {
        try self.withContext("rollback", "\(volume)@\(snapshot)") { () throws(StrataError) in
            let id = try self.meta.withReadLock { () throws(StrataError) in try self.volumeRecord(volume, operation: "rollback").id }
            let gate = self.gates.gate(id)
            gate.lockExclusive()
            defer { gate.unlock() }
            try self.meta.withWriteLock { () throws(StrataError) in
                try self.checkWritable("rollback", "\(volume)@\(snapshot)")
                let source = try self.snapshotRecord(volume, snapshot, operation: "rollback to")
                guard var record = self.record(id: id) else {
                    throw StrataError(.notFound, "rollback volume \(volume): no such volume")
                }
                try self.checkReleasable([(record.root, record.depth - 1)])
                if source.root != .none { try self.retainNode(source.root.rawValue) }
                if record.root != .none { try self.releaseNode(record.root.rawValue, level: record.depth - 1) }
                record.root = source.root
                record.depth = source.depth
                record.size = source.size
                record.baseID = source.baseID
                self.markShared(&record)
                self.store(record)
            }
        }
    }

    /// Creates a writable volume sharing every chunk with a snapshot.
    public func clone(_ volume: String, _ snapshot: String, to newName: String) throws(StrataError) {
        try Names.validate(newName, kind: "volume", operation: "clone to")
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("clone", "\(volume)@\(snapshot)")
            let source = try self.snapshotRecord(volume, snapshot, operation: "clone")
            guard self.volumeIDByName[newName] == nil else {
                throw StrataError(.alreadyExists, "clone \(volume)@\(snapshot): volume \(newName) exists; choose another name")
            }
            var record = self.newRecord(kind: .volume, name: newName, parent: source.id, size: source.size)
            record.depth = source.depth
            record.root = source.root
            record.baseID = source.baseID
            if source.root != .none { try self.retainNode(source.root.rawValue) }
            self.markShared(&record)
            self.insert(record)
        }
    }

    /// Every volume and snapshot name with its size and whether it is read-only, sorted by name.
    public func targets() -> [(name: String, size: UInt64, readOnly: Bool)] {
        self.meta.withReadLock {
            var result: [(name: String, size: UInt64, readOnly: Bool)] = []
            for slot in self.slotByID.values where self.volumes[slot].kind != .staging && !self.volumes[slot].isHidden {
                let record = self.volumes[slot]
                result.append((self.fullName(record), record.size, record.kind == .snapshot))
            }
            return result.sorted { $0.name < $1.name }
        }
    }

    /// Ids of a volume and all its snapshots (for finding their connections).
    public func ids(ofVolume name: String) throws(StrataError) -> Set<UInt64> {
        try self.meta.withReadLock { () throws(StrataError) in
            let record = try self.volumeRecord(name, operation: "find")
            return Set([record.id] + (self.snapshotIDs[record.id]?.values.map { $0 } ?? []))
        }
    }

    /// A handle for I/O on `VOLUME` (read-write) or `VOLUME@SNAPSHOT` (read-only).
    public func handle(_ target: String) throws(StrataError) -> VolumeHandle {
        try self.meta.withReadLock { () throws(StrataError) in
            let record = try self.resolve(target, operation: "open")
            return VolumeHandle(
                id: record.id, name: target, readOnly: record.kind == .snapshot || record.isReplica || self.readOnly)
        }
    }

    /// A handle for a front end's requests: as `handle(_:)`, counted in `statistics` (per volume
    /// and front end) when statistics are on.
    public func handle(_ target: String, frontEnd: FrontEnd) throws(StrataError) -> VolumeHandle {
        let plain = try self.handle(target)
        return VolumeHandle(
            id: plain.id, name: plain.name, readOnly: plain.readOnly,
            counters: self.statistics.counters(volumeID: plain.id, frontEnd: frontEnd))
    }

    /// The current size of the volume or snapshot behind a handle.
    public func size(of handle: VolumeHandle) throws(StrataError) -> UInt64 {
        guard let size = try self.size(of: handle, waiting: .allowed) else {
            preconditionFailure("a lookup that may wait always answers")
        }
        return size
    }

    /// As `size(of:)`; with `.never`, nil when the pool's metadata lock is held for writing.
    public func size(of handle: VolumeHandle, waiting: Waiting) throws(StrataError) -> UInt64? {
        try self.meta.withReadLock(waiting) { () throws(StrataError) in
            guard let record = self.record(id: handle.id) else {
                throw StrataError(.notFound, "size \(handle.name): the volume was deleted")
            }
            return record.size
        }
    }

    static func timestamp(_ nanos: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(nanos) / 1e9))
    }

    static func guidString(_ guid: (UInt64, UInt64)) -> String {
        String(format: "%016llx%016llx", guid.0, guid.1)
    }
}
