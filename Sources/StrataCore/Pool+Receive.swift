// Receive staging: the engine side of `strata receive`. A stream is applied to a hidden staging
// record (kind 3), never to the target volume: an incremental stream's staging starts as an O(1)
// clone of the base snapshot, a full stream's as an empty volume. Only when the whole stream has
// been verified does `finishReceive` move the staging tree into the volume and add the snapshot,
// in one metadata transaction, so the snapshot appears all at once or not at all and an
// interrupted or corrupt receive leaves the target as it was.
//
// The staging record remembers how far the receive got (`receivedBytes`, committed with the data
// it covers) and the GUIDs involved, so an interrupted receive resumes where it stopped.
//
// Invariants:
// - At most one staging record per target volume name.
// - A staging record's tree holds exactly one reference to its root, which `finishReceive`
//   transfers to the volume and `abortReceive` releases.

import Foundation

/// A snapshot's (or volume's) 128-bit GUID: random at creation, carried by send and receive.
public struct StrataGUID: Hashable, Sendable, Codable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses 32 hex digits, as `snapshot list` prints them.
    public init?(hex: String) {
        guard hex.utf8.count == 32, let high = UInt64(hex.prefix(16), radix: 16),
            let low = UInt64(hex.suffix(16), radix: 16)
        else { return nil }
        self.init(high: high, low: low)
    }

    public static let zero = StrataGUID(high: 0, low: 0)
    public var isZero: Bool { self.high == 0 && self.low == 0 }
    public var description: String { String(format: "%016llx%016llx", self.high, self.low) }
    var pair: (UInt64, UInt64) { (self.high, self.low) }
    init(_ pair: (UInt64, UInt64)) { self.init(high: pair.0, low: pair.1) }
}

/// A snapshot as send and receive see it: name, GUID, size and time.
public struct SnapshotIdentity: Sendable, Equatable {
    public let name: String
    public let guid: StrataGUID
    public let sizeBytes: UInt64
    public let createdAtNanos: Int64
}

/// A receive in progress on one volume.
public struct ReceiveStaging: Sendable {
    /// Writable handle on the hidden staging tree.
    public let handle: VolumeHandle
    /// Bytes from offset 0 applied and committed so far.
    public let receivedBytes: UInt64
    public let baseGUID: StrataGUID
    public let targetGUID: StrataGUID
    public let sizeBytes: UInt64
}

extension Pool {
    /// The snapshot `VOLUME@SNAPSHOT` with its GUID and time.
    public func snapshotIdentity(_ target: String) throws(StrataError) -> SnapshotIdentity {
        try self.meta.withReadLock { () throws(StrataError) in
            let (volume, snapshot) = Names.split(target)
            guard let snapshot else {
                throw StrataError(.invalidArgument, "send \(target): name a snapshot, VOLUME@SNAPSHOT")
            }
            let record = try self.snapshotRecord(volume, snapshot, operation: "send")
            return SnapshotIdentity(
                name: record.name, guid: StrataGUID(record.guid), sizeBytes: record.size,
                createdAtNanos: record.createdAtNanos)
        }
    }

    /// Snapshots of `volume`, oldest first (creation time, then id).
    func orderedSnapshots(of volumeID: UInt64) -> [VolumeRecord] {
        (self.snapshotIDs[volumeID] ?? [:]).values.compactMap { self.record(id: $0) }
            .sorted { ($0.createdAtNanos, $0.id) < ($1.createdAtNanos, $1.id) }
    }

    /// The staging of an interrupted receive into `volume`, if any.
    public func receiveStaging(_ volume: String) -> ReceiveStaging? {
        self.meta.withReadLock {
            guard let id = self.stagingIDByName[volume], let record = self.record(id: id) else { return nil }
            return self.stagingInfo(record)
        }
    }

    private func stagingInfo(_ record: VolumeRecord) -> ReceiveStaging {
        ReceiveStaging(
            handle: VolumeHandle(id: record.id, name: "\(record.name) (receiving)", readOnly: false),
            receivedBytes: record.receivedBytes, baseGUID: StrataGUID(record.baseGUID),
            targetGUID: StrataGUID(record.guid), sizeBytes: record.size)
    }

    /// Checks that `volume` can take a stream from `base` (zero GUID: a full stream) to `target`
    /// named `snapshot`. With `force`, a volume changed since the base, or with snapshots newer
    /// than it, is accepted (`finishReceive` rolls it back).
    /// - Throws: `.alreadyExists`, `.notFound`, or `.invalidArgument` naming both GUIDs on a mismatch.
    func checkReceiveTarget(
        _ volume: String, base: StrataGUID, target: StrataGUID, snapshot: String, force: Bool
    ) throws(StrataError) -> (volume: VolumeRecord, base: VolumeRecord, newer: [VolumeRecord])? {
        let operation = "receive \(volume)@\(snapshot)"
        guard let id = self.volumeIDByName[volume], let record = self.record(id: id) else {
            guard base.isZero else {
                throw StrataError(
                    .notFound,
                    "\(operation): no volume \(volume) holds the base snapshot \(base); send a full stream first (without --from)")
            }
            return nil
        }
        guard !base.isZero else {
            throw StrataError(
                .alreadyExists,
                "\(operation): volume \(volume) exists and the stream is a full one; receive into a new name, or send an incremental stream with --from"
            )
        }
        let snapshots = self.orderedSnapshots(of: id)
        if let existing = snapshots.first(where: { $0.name == snapshot }) {
            let what = StrataGUID(existing.guid) == target ? "already received" : "a different snapshot with that name exists"
            throw StrataError(.alreadyExists, "\(operation): \(what) (guid=\(StrataGUID(existing.guid)))")
        }
        let newest = snapshots.last.map { StrataGUID($0.guid) } ?? .zero
        guard let index = snapshots.firstIndex(where: { StrataGUID($0.guid) == base }) else {
            throw StrataError(
                .invalidArgument,
                "\(operation): base mismatch: the stream needs base snapshot \(base) but the newest snapshot of \(volume) is \(newest); send from a snapshot the target holds"
            ).naming(guids: [base, newest])
        }
        let baseRecord = snapshots[index]
        let newer = Array(snapshots[(index + 1)...])
        if !newer.isEmpty && !force {
            throw StrataError(
                .invalidArgument,
                "\(operation): base mismatch: the stream's base \(base) is not the newest snapshot of \(volume) (\(newest)); pass --force to delete the newer snapshots (\(newer.map(\.name).joined(separator: ", ")))"
            ).naming(guids: [base, newest])
        }
        let modified = record.root != baseRecord.root || record.size != baseRecord.size || record.depth != baseRecord.depth
        if modified && !force {
            throw StrataError(
                .busy,
                "\(operation): volume \(volume) was modified since its snapshot \(baseRecord.name) (\(base)); pass --force to roll it back first"
            )
        }
        return (record, baseRecord, newer)
    }

    /// Creates the staging for a receive into `volume`: a clone of the base snapshot (or an empty
    /// tree for a full stream) of `size` bytes.
    /// - Throws: `.busy` when a receive into `volume` is already staged, and everything
    ///   `checkReceiveTarget` throws.
    public func beginReceive(
        _ volume: String, snapshot: String, base: StrataGUID, target: StrataGUID, size: UInt64, force: Bool
    ) throws(StrataError) -> ReceiveStaging {
        try Names.validate(volume, kind: "volume", operation: "receive")
        try Names.validate(snapshot, kind: "snapshot", operation: "receive")
        try Self.validateSize(size, operation: "receive", object: volume)
        let id = try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("receive", volume)
            if let staged = self.stagingIDByName[volume], let record = self.record(id: staged) {
                throw StrataError(
                    .busy,
                    "receive \(volume): an interrupted receive of snapshot \(StrataGUID(record.guid)) is staged (\(record.receivedBytes) bytes applied); resume it with `strata send --resume TOKEN` or discard it with `strata receive --abort \(volume)`"
                )
            }
            let found = try self.checkReceiveTarget(volume, base: base, target: target, snapshot: snapshot, force: force)
            try self.requireNodePages(Int(Limits.treeDepthMax) * 2, forRelease: false, operation: "receive \(volume)")
            var staging = self.newRecord(kind: .staging, name: volume, parent: 0, size: size)
            staging.guid = target.pair
            staging.baseGUID = base.pair
            if let baseRecord = found?.base {
                staging.size = baseRecord.size
                staging.depth = baseRecord.depth
                staging.root = baseRecord.root
                if baseRecord.root != .none { try self.retainNode(baseRecord.root.rawValue) }
                self.markShared(&staging)
            }
            self.insert(staging)
            return staging.id
        }
        try self.resizeStaging(id: id, name: volume, to: size)
        guard let staging = self.receiveStaging(volume) else {
            throw StrataError(.notFound, "receive \(volume): the staging vanished")
        }
        return staging
    }

    /// Gives a staging tree the stream's volume size (growing or shrinking it).
    private func resizeStaging(id: UInt64, name: String, to size: UInt64) throws(StrataError) {
        let current = try self.meta.withReadLock { () throws(StrataError) in self.record(id: id)?.size ?? size }
        if size < current, size % self.chunkSize != 0 {
            // Bytes past the new end in the last chunk must read as zeros if the volume grows again.
            let end = min(current, (size / self.chunkSize + 1) * self.chunkSize)
            try self.zeroUnlocked(id: id, name: name, from: size, to: end, allowTrim: true)
        }
        try self.meta.withWriteLock { () throws(StrataError) in
            guard var record = self.record(id: id) else { return }
            let keep = self.chunks(for: size)
            if size < record.size { try self.truncate(&record, keepBelow: ChunkIndex(keep)) }
            try self.ensureDepth(&record, chunk: ChunkIndex(keep - 1))
            record.size = size
            self.store(record)
        }
    }

    /// Records that the first `bytes` bytes of the staged stream are applied; durable at the
    /// next commit, together with the data they cover.
    public func recordReceiveProgress(_ volume: String, receivedBytes bytes: UInt64) {
        self.meta.withWriteLock {
            guard let id = self.stagingIDByName[volume], var record = self.record(id: id) else { return }
            record.receivedBytes = bytes
            self.store(record)
        }
    }

    /// Discards the staging of an interrupted receive; the target volume is untouched.
    /// - Throws: `.notFound` when nothing is staged for `volume`.
    public func abortReceive(_ volume: String) throws(StrataError) {
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("receive --abort", volume)
            guard let id = self.stagingIDByName[volume], let record = self.record(id: id) else {
                throw StrataError(.notFound, "receive --abort \(volume): no interrupted receive is staged for \(volume)")
            }
            try self.checkReleasable([(record.root, record.depth - 1)])
            try self.remove(record)
        }
    }

    /// Makes a verified stream visible: the staging tree becomes the volume's content and the
    /// snapshot `snapshot` (GUID `target`, time `createdAtNanos`) is added, in one transaction.
    /// A full stream creates the volume. With `force`, changes since the base and snapshots
    /// newer than it are discarded.
    /// With `replica`, the volume becomes a read-only replication target.
    public func finishReceive(
        _ volume: String, snapshot: String, target: StrataGUID, createdAtNanos: Int64, force: Bool,
        replica: Bool = false
    ) throws(StrataError) {
        let existingID = self.meta.withReadLock { self.volumeIDByName[volume] }
        let gate = existingID.map { self.gates.gate($0) }
        gate?.lockExclusive()
        defer { gate?.unlock() }
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("receive", volume)
            guard let stagingID = self.stagingIDByName[volume], var staging = self.record(id: stagingID),
                StrataGUID(staging.guid) == target
            else {
                throw StrataError(.notFound, "receive \(volume)@\(snapshot): the staged receive is gone")
            }
            let found = try self.checkReceiveTarget(
                volume, base: StrataGUID(staging.baseGUID), target: target, snapshot: snapshot, force: force)
            var record: VolumeRecord
            if let found {
                // Staging is not released (its root moves to the volume), so only these trees.
                try self.checkReleasable((found.newer + [found.volume]).map { ($0.root, $0.depth - 1) })
                for newer in found.newer { try self.remove(newer) }
                record = found.volume
                if record.root != .none { try self.releaseNode(record.root.rawValue, level: record.depth - 1) }
            } else {
                record = self.newRecord(kind: .volume, name: volume, parent: 0, size: staging.size)
            }
            // The staging's one reference on its root moves to the volume.
            if replica { record.flags |= VolumeRecord.flagReplica }
            record.root = staging.root
            record.depth = staging.depth
            record.size = staging.size
            self.markShared(&record)
            staging.root = .none
            self.store(staging)
            try self.remove(staging)
            if found == nil { self.insert(record) } else { self.store(record) }
            var copy = self.newRecord(kind: .snapshot, name: snapshot, parent: record.id, size: record.size)
            copy.depth = record.depth
            copy.root = record.root
            copy.guid = target.pair
            copy.createdAtNanos = createdAtNanos
            copy.sharedBefore = record.sharedBefore
            if record.root != .none { try self.retainNode(record.root.rawValue) }
            self.insert(copy)
        }
    }
}

extension Pool {
    /// Makes a replication target writable (failover), or marks a volume as one.
    /// - Throws: `.notFound` for an unknown volume.
    public func setReplica(_ volume: String, _ replica: Bool) throws(StrataError) {
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("replicate promote", volume)
            var record = try self.volumeRecord(volume, operation: "replicate promote")
            if replica { record.flags |= VolumeRecord.flagReplica } else { record.flags &= ~VolumeRecord.flagReplica }
            self.store(record)
        }
    }

    /// The handle through which a remote mirror leg's session writes its copy, `volume`, which is
    /// flagged a replica (read-only to every other handle, so its exports are read-only while the
    /// mirror is connected).
    /// - Throws: `.notFound` for an unknown volume; `.invalidArgument` when it is not flagged.
    public func mirrorLegHandle(_ volume: String) throws(StrataError) -> VolumeHandle {
        try self.meta.withReadLock { () throws(StrataError) in
            let record = try self.volumeRecord(volume, operation: "open mirror leg")
            guard record.isReplica else {
                throw StrataError(
                    .invalidArgument, "open mirror leg \(volume): the volume is not flagged as a mirror leg's copy")
            }
            return VolumeHandle(id: record.id, name: volume, readOnly: false, replicaWriter: true)
        }
    }

    /// True when `volume` is a read-only replication target.
    public func isReplica(_ volume: String) throws(StrataError) -> Bool {
        try self.meta.withReadLock { () throws(StrataError) in try self.volumeRecord(volume, operation: "find").isReplica }
    }
}
