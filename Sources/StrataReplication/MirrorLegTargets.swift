// The leg daemon's side of remote mirror legs (`strata mirror add VOL --to HOST:PORT` on another
// daemon): the copies this daemon holds for mirrors elsewhere, and the sessions that write them.
//
// A copy is a volume of this pool named after the mirrored volume, flagged as a replica, so it
// is exported read-only while the mirror owns it; only its session writes it, through the
// replica-writer handle (`Pool.mirrorLegHandle`). Detach may rename it (`--as NAME`) and, with
// `--writable`, clear the flag; attach brings the name and the flag back; `mirror remove`
// (`release`) clears the flag and forgets it, leaving an ordinary volume; an add that fails
// after the copy was made deletes it (`discard`).
//
// `mirror-copies.json` in the pool directory records whose copy each volume is (the mirror's
// pool UUID, its volume and leg), written through `AtomicFile` after the pool change and before
// the session answers, so a copy is never claimed by two mirrors and a mirror that reconnects
// finds its own copy. A crash between the pool change and the table leaves a flagged volume the
// table does not name: adding the leg again is refused (the volume exists) with the fix.
//
// Fencing. A mirror that lost its link opens a new session while the old connection may still
// deliver requests here. Each copy has a fence (a readers-writer lock and a session generation):
// every request holds the fence shared and is refused unless its session is the newest; opening
// a session takes it exclusively, so once a new session is open, no request of an older one is
// applied, and the older one's connection is ended (it would otherwise hold one of the
// replication port's connections until its idle timeout). What an older session applied before
// that is found by the copy's split-point diff.

import Foundation
import NIOCore
import StrataCore
import Synchronization

/// What a mirror asks when it opens its leg on this daemon (the `mirror` request line).
public struct MirrorLegOpen: Codable, Sendable, Equatable {
    public var volume: String
    /// The mirrored volume's pool (its UUID): with `leg`, whose copy it is.
    public var sourcePool: String
    public var leg: String
    /// True for `mirror add` (make the copy), false for a reconnect (find it).
    public var create: Bool
    public var size: UInt64
    /// What the mirrored volume holds: the free space a new copy needs.
    public var allocatedBytes: UInt64

    public init(volume: String, sourcePool: String, leg: String, create: Bool, size: UInt64, allocatedBytes: UInt64) {
        self.volume = volume
        self.sourcePool = sourcePool
        self.leg = leg
        self.create = create
        self.size = size
        self.allocatedBytes = allocatedBytes
    }
}

/// One copy as `mirror-copies.json` keeps it.
public struct MirrorCopyRecord: Codable, Sendable, Equatable {
    public var volume: String
    /// The copy's name now: the volume's, or the detached copy's own (`detach --as`).
    public var copyName: String
    public var sourcePool: String
    public var leg: String

    func belongs(to open: MirrorLegOpen) -> Bool {
        self.volume == open.volume && self.sourcePool == open.sourcePool && self.leg == open.leg
    }
}

/// The copies this daemon holds for mirrors on other daemons.
public final class MirrorLegTargets: Sendable {
    public static let fileName = "mirror-copies.json"
    let pool: Pool
    let directory: String
    private struct State {
        var copies: [MirrorCopyRecord]
        var generations: [String: UInt64] = [:]
        var fences: [String: RWLock] = [:]
        /// Ends the newest session of each copy (its connection), when a newer one opens.
        var enders: [String: @Sendable () -> Void] = [:]
    }
    private let state: Mutex<State>

    /// Loads the table of the pool in `directory`.
    /// - Throws: `.corrupt` when it is unreadable.
    public init(pool: Pool, directory: String) throws(StrataError) {
        self.pool = pool
        self.directory = directory
        let path = (directory as NSString).appendingPathComponent(Self.fileName)
        var copies: [MirrorCopyRecord] = []
        if FileManager.default.fileExists(atPath: path) {
            do {
                copies = try JSONDecoder().decode([MirrorCopyRecord].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                throw StrataError(.corrupt, "load mirror copies \(path): unreadable (\(error)); restore it from a backup")
            }
        }
        self.state = Mutex(State(copies: copies))
    }

    /// Refuses `operation` on `name` when it is a copy a mirror owns (delete, rename, resize,
    /// rollback, receive, promote on the leg daemon), naming the mirror and the fix.
    /// - Throws: `.busy`; `.corrupt` when the table is unreadable.
    public static func refuseIfHeld(_ name: String, operation: String, pool: Pool, directory: String) throws(StrataError) {
        guard let copy = try MirrorLegTargets(pool: pool, directory: directory).copies.first(where: { $0.copyName == name })
        else { return }
        throw StrataError(
            .busy,
            "\(operation) \(name): it is the copy of mirror leg \(copy.leg) of volume \(copy.volume) (pool \(copy.sourcePool)); `strata mirror remove \(copy.volume) \(copy.leg)` on the mirror's daemon first"
        )
    }

    /// The copies held, for status and tests.
    public var copies: [MirrorCopyRecord] { self.state.withLock { $0.copies } }

    /// True when `name` is a copy some mirror owns (replication must not write it).
    public func holds(_ name: String) -> Bool { self.state.withLock { $0.copies.contains { $0.copyName == name } } }

    private func save(_ copies: [MirrorCopyRecord]) throws(StrataError) {
        try AtomicFile.writeJSON(
            copies, to: (self.directory as NSString).appendingPathComponent(Self.fileName), operation: "save mirror copies")
    }

    /// Opens a session for `open`: makes the copy (`create`) or finds it, fences off every
    /// older session of the same copy and ends its connection (`end`, given when it opened).
    /// - Throws: a clear error naming the copy and the fix; nothing is changed when it throws.
    public func open(_ open: MirrorLegOpen, peer: String, end: @escaping @Sendable () -> Void) throws(StrataError)
        -> MirrorLegSession
    {
        try Names.validate(open.volume, kind: "volume", operation: "mirror leg")
        let key = "\(open.sourcePool)/\(open.volume)/\(open.leg)"
        let record = open.create ? try self.create(open) : try self.find(open)
        let (fence, generation, older) = self.state.withLock { state -> (RWLock, UInt64, (@Sendable () -> Void)?) in
            let fence = state.fences[key] ?? RWLock()
            state.fences[key] = fence
            defer { state.enders[key] = end }
            return (fence, (state.generations[key] ?? 0) + 1, state.enders[key])
        }
        // Waits for every request of an older session in flight; none is applied after this.
        fence.withWriteLock { self.state.withLock { $0.generations[key] = generation } }
        older?()
        let handle = try self.pool.mirrorLegHandleOrPlain(record.copyName)
        return MirrorLegSession(targets: self, key: key, generation: generation, fence: fence, record: record, handle: handle)
    }

    private func create(_ open: MirrorLegOpen) throws(StrataError) -> MirrorCopyRecord {
        let copies = self.copies
        let what = "mirror add \(open.volume) (leg \(open.leg))"
        if let same = copies.first(where: { $0.belongs(to: open) }) {
            throw StrataError(
                .alreadyExists,
                "\(what): this daemon already holds that leg's copy (\(same.copyName)); see `strata mirror status`, or delete the copy here to start over"
            )
        }
        if let other = copies.first(where: { $0.copyName == open.volume || $0.volume == open.volume }) {
            throw StrataError(
                .busy,
                "\(what): the volume \(open.volume) here belongs to leg \(other.leg) of another mirror (pool \(other.sourcePool)); remove that mirror or use another daemon"
            )
        }
        if let existing = try self.pool.listVolumes().first(where: { $0.name == open.volume }) {
            throw StrataError(
                .busy,
                "\(what): a volume named \(open.volume) already exists here (\(SizeParser.format(existing.allocatedBytes)) allocated); delete or rename it, or mirror to another daemon"
            )
        }
        let free = self.pool.status().dataFreeBytes
        guard free >= open.allocatedBytes else {
            throw StrataError(
                .noSpace,
                "\(what): the pool here has \(SizeParser.format(free)) free but the volume holds \(SizeParser.format(open.allocatedBytes)); grow the pool or use another daemon"
            )
        }
        let record = MirrorCopyRecord(volume: open.volume, copyName: open.volume, sourcePool: open.sourcePool, leg: open.leg)
        try self.pool.createVolume(open.volume, size: open.size)
        do throws(StrataError) {
            try self.pool.setReplica(open.volume, true)
            try self.pool.flush()
            try self.save(copies + [record])
        } catch {
            try? self.pool.deleteVolume(open.volume, recursive: true)
            try? self.pool.flush()
            throw error
        }
        self.state.withLock { $0.copies.append(record) }
        return record
    }

    private func find(_ open: MirrorLegOpen) throws(StrataError) -> MirrorCopyRecord {
        guard let record = self.copies.first(where: { $0.belongs(to: open) }) else {
            throw StrataError(
                .notFound,
                "open mirror leg \(open.leg) of \(open.volume): this daemon holds no copy for it (removed here, or another pool); `strata mirror remove \(open.volume) \(open.leg)` on the mirror's daemon and add the leg again"
            )
        }
        return record
    }

    /// Replaces the record of `key` (a detach or attach renamed it); `nil` forgets it.
    func update(_ old: MirrorCopyRecord, to new: MirrorCopyRecord?) throws(StrataError) {
        let copies = self.copies.compactMap { $0 == old ? new : $0 }
        try self.save(copies)
        self.state.withLock { $0.copies = copies }
    }

    /// True while `generation` is the newest session of `key`. The caller holds the fence.
    func isCurrent(_ key: String, _ generation: UInt64) -> Bool {
        self.state.withLock { $0.generations[key] == generation }
    }
}

extension Pool {
    /// The handle a copy's session writes through: the replica writer while the copy is flagged,
    /// else (a copy detached `--writable`, only read until attach) the plain one.
    func mirrorLegHandleOrPlain(_ name: String) throws(StrataError) -> VolumeHandle {
        try self.isReplica(name) ? try self.mirrorLegHandle(name) : try self.handle(name)
    }
}

/// One session of a mirror with its copy here: applies its requests (each on the thread pool).
public final class MirrorLegSession: Sendable {
    let targets: MirrorLegTargets
    let key: String
    let generation: UInt64
    let fence: RWLock
    private let current: Mutex<(record: MirrorCopyRecord, handle: VolumeHandle)>

    init(
        targets: MirrorLegTargets, key: String, generation: UInt64, fence: RWLock, record: MirrorCopyRecord,
        handle: VolumeHandle
    ) {
        self.targets = targets
        self.key = key
        self.generation = generation
        self.fence = fence
        self.current = Mutex((record, handle))
    }

    var pool: Pool { self.targets.pool }

    /// Applies `requests` one after another; returns their answers, encoded in that order.
    package func answers(to requests: [MirrorRequestMessage]) -> ByteBuffer {
        var out = ByteBuffer()
        for request in requests {
            MirrorReplyMessage(id: request.id, result: Result { () throws(StrataError) in try self.apply(request) })
                .encode(into: &out)
        }
        return out
    }

    /// Applies `request`; returns the reply's payload.
    /// - Throws: the engine's error, or `.busy` when a newer session of the copy has opened.
    public func apply(_ request: MirrorRequestMessage) throws(StrataError) -> [UInt8] {
        try self.fence.withReadLock { () throws(StrataError) -> [UInt8] in
            guard self.targets.isCurrent(self.key, self.generation) else {
                throw StrataError(.busy, "mirror leg \(self.key): a newer session of this leg has opened; this one is ended")
            }
            let (record, handle) = self.current.withLock { $0 }
            return try self.applyCurrent(request, record: record, handle: handle)
        }
    }

    private func applyCurrent(_ request: MirrorRequestMessage, record: MirrorCopyRecord, handle: VolumeHandle)
        throws(StrataError) -> [UInt8]
    {
        // The payload is a name only for the split-point, changes and detach operations; a
        // write's payload is data, and decoding it as text would cost more than applying it.
        var name: String { String(decoding: request.payload, as: UTF8.self) }
        switch request.operation {
        case .write:
            try self.pool.write(handle, at: request.offset, request.payload)
        case .zero:
            try self.pool.writeZeroes(
                handle, at: request.offset, length: request.length,
                allowTrim: request.flags & MirrorRequestMessage.flagTrim != 0)
        case .flush:
            try self.pool.flush()
        case .read:
            guard request.length <= UInt64(Limits.mirrorPayloadBytesMax) else {
                throw StrataError(.invalidArgument, "mirror leg \(record.copyName): a read of \(request.length) bytes is over the limit")
            }
            return try self.pool.read(handle, at: request.offset, count: Int(request.length))
        case .size:
            return MirrorPayload.integer(try self.pool.size(of: handle))
        case .createSplitPoint, .deleteSplitPoint:
            let splitPoint = name
            guard splitPoint.hasPrefix(Pool.hiddenSnapshotPrefix), Names.isValid(splitPoint) else {
                throw StrataError(.invalidArgument, "mirror leg \(record.copyName): \(splitPoint) is not a split point's name")
            }
            if request.operation == .createSplitPoint {
                try self.pool.createHiddenSnapshot(record.copyName, splitPoint)
            } else {
                try self.pool.deleteHiddenSnapshot(record.copyName, splitPoint)
            }
        case .splitPoints:
            return Array(try self.pool.hiddenSnapshots(of: record.copyName).joined(separator: "\n").utf8)
        case .changes:
            return try MirrorPayload.extents(try self.pool.changes(of: record.copyName, since: name))
        case .commitIfNeeded:
            try self.pool.commitIfNeeded()
        case .detach:
            let detached = name
            try self.detach(record, as: detached.isEmpty ? nil : detached, writable: request.flags & MirrorRequestMessage.flagWritable != 0)
        case .attach:
            try self.attach(record)
        case .release:
            try self.pool.setReplica(record.copyName, false)
            try self.pool.flush()
            try self.targets.update(record, to: nil)
        case .discard:
            try self.pool.deleteVolume(record.copyName, recursive: true)
            try self.pool.flush()
            try self.targets.update(record, to: nil)
        }
        return []
    }

    /// The copy becomes a point-in-time copy of its own: renamed to `name`, writable if asked.
    private func detach(_ record: MirrorCopyRecord, as name: String?, writable: Bool) throws(StrataError) {
        var next = record
        if let name, name != record.copyName {
            try Names.validate(name, kind: "detached copy", operation: "mirror detach \(record.volume)")
            try self.pool.renameVolume(record.copyName, to: name)
            next.copyName = name
        }
        if writable { try self.pool.setReplica(next.copyName, false) }
        try self.pool.flush()
        try self.targets.update(record, to: next)
        let handle = try self.pool.mirrorLegHandleOrPlain(next.copyName)
        self.current.withLock { $0 = (next, handle) }
    }

    /// The copy is the mirror's again: its name and the replica flag come back.
    private func attach(_ record: MirrorCopyRecord) throws(StrataError) {
        var next = record
        if record.copyName != record.volume {
            try self.pool.renameVolume(record.copyName, to: record.volume)
            next.copyName = record.volume
        }
        try self.pool.setReplica(next.copyName, true)
        try self.pool.flush()
        try self.targets.update(record, to: next)
        let handle = try self.pool.mirrorLegHandle(next.copyName)
        self.current.withLock { $0 = (next, handle) }
    }
}
