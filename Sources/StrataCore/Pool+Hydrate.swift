// Hydration (issue 11): copying, unit by unit, what a volume still reads from a base that fills
// on read (`BaseImage.fillUnitBytes`: a remote snapshot, whose unit is one object), so the
// daemon can fetch units in parallel and at a bounded rate, and drop the base at the end.
//
// What is "already local" is derived from the engine's own tree, never from a side file that a
// crash could leave disagreeing with it: a unit is pending while some chunk where the base holds
// data is still a hole of the volume. A unit the volume wrote over, a unit a read filled, and a
// unit an earlier (killed) hydration copied and committed are all not pending, so a resumed
// hydration fetches none of them again. A unit copied but not yet committed when the daemon was
// killed is a hole again after recovery and is fetched again: that costs one object, never data.
//
// The copy itself is `fillFromBase` (Pool+Flatten.swift), chunk by chunk under each chunk's
// lock, copying only while the chunk is still a hole, so a chunk a client wrote meanwhile is
// never overwritten: the volume wins. The durable flatten flag (VolumeRecord bit 1) says "a
// hydration should run": the daemon resumes it when it opens the pool.

import Foundation

/// What a hydration has left to copy: the base's units that hold data, and which of them the
/// volume still reads (some of) from the base.
public struct HydrationPlan: Sendable, Equatable {
    /// The base's fill unit (the object size of a remote base).
    public let unitBytes: UInt64
    /// Units holding data in the base, ascending (unit i covers [i × unitBytes, (i + 1) × unitBytes)).
    public let units: [UInt64]
    /// Of `units`, those the volume still reads from the base, ascending.
    public let pending: [UInt64]

    public init(unitBytes: UInt64, units: [UInt64], pending: [UInt64]) {
        self.unitBytes = unitBytes
        self.units = units
        self.pending = pending
    }

    /// Units already local (copied, filled by a read, or overwritten by the volume).
    public var local: Int { self.units.count - self.pending.count }

    /// True when some of the base's `data` extents meet one of the volume's `holes`: the unit
    /// still reads from the base. Both lists are in ascending order and do not overlap themselves.
    public static func isPending(data: [MappingExtent], holes: [MappingExtent]) -> Bool {
        var pending = false
        Self.meetings(data: data, holes: holes) { _ in
            pending = true
            return false
        }
        return pending
    }

    /// Calls `body` with each range where one of the base's mapped `data` extents meets an
    /// unmapped extent of `holes` (both ascending, neither overlapping itself), in order, while
    /// `body` returns true.
    static func meetings(data: [MappingExtent], holes: [MappingExtent], _ body: (Range<UInt64>) -> Bool) {
        var index = 0
        for extent in data where extent.mapped {
            let end = extent.offset + extent.length
            while index < holes.count, holes[index].offset + holes[index].length <= extent.offset { index += 1 }
            var probe = index
            while probe < holes.count, holes[probe].offset < end {
                let hole = holes[probe]
                if !hole.mapped, !body(max(hole.offset, extent.offset)..<min(hole.offset + hole.length, end)) { return }
                probe += 1
            }
        }
    }
}

extension Pool {
    /// What `volume` still has to copy from its base, or nil when it has no base that fills on
    /// read (no base, or an image file: `flatten` copies those).
    /// - Throws: `.notFound` for a missing volume, the base's errors.
    public func hydrationPlan(_ volume: String) throws(StrataError) -> HydrationPlan? {
        let record = try self.meta.withReadLock { () throws(StrataError) in
            try self.volumeRecord(volume, operation: "hydrate")
        }
        guard let base = try self.baseImage(id: record.id, name: volume), let unit = base.fillUnitBytes else { return nil }
        let end = min(record.size, base.virtualSize)
        var units: [UInt64] = []
        var pending: [UInt64] = []
        var start: UInt64 = 0
        while start < end {
            let length = min(unit, end - start)
            let data = try base.allocation(at: start, length: length)
            if data.contains(where: \.mapped) {
                units.append(start / unit)
                let holes = try self.meta.withReadLock { () throws(StrataError) -> [MappingExtent] in
                    guard let current = self.record(id: record.id) else {
                        throw StrataError(.notFound, "hydrate \(volume): the volume was deleted")
                    }
                    return try self.treeExtents(current, at: start, length: length)
                }
                if HydrationPlan.isPending(data: data, holes: holes) { pending.append(start / unit) }
            }
            start += unit
        }
        return HydrationPlan(unitBytes: unit, units: units, pending: pending)
    }

    /// Copies unit `unit` of `volume`'s base into the volume's holes; returns the bytes copied.
    /// - Throws: `.notFound` when the volume is gone, the base's errors (naming the object),
    ///   `.noSpace` when the pool fills.
    @discardableResult
    public func hydrateUnit(_ volume: String, unit: UInt64) throws(StrataError) -> UInt64 {
        let handle = try self.meta.withReadLock { () throws(StrataError) in
            try self.volumeRecord(volume, operation: "hydrate")
        }
        let gate = self.gates.gate(handle.id)
        gate.lockShared()
        defer { gate.unlock() }
        guard let base = try self.baseImage(id: handle.id, name: volume), let unitBytes = base.fillUnitBytes else { return 0 }
        return try self.fillUnits(base, id: handle.id, name: volume, starts: [unit * unitBytes], unit: unitBytes)
    }

    /// Marks `volume` durably as hydrating (the flatten flag), so the daemon resumes its
    /// hydration whenever it opens the pool until the base is dropped.
    /// - Throws: `.invalidArgument` when it has no base, `.readOnly` for a replica.
    public func markHydrating(_ volume: String) throws(StrataError) {
        _ = try self.setFlattening(volume, operation: "hydrate \(volume)")
        try self.flush()
    }

    /// True when `volume` carries the flatten flag: a hydration (or flatten) is due.
    public func isHydrating(_ volume: String) throws(StrataError) -> Bool {
        try self.meta.withReadLock { () throws(StrataError) in
            try self.volumeRecord(volume, operation: "show").isFlattening
        }
    }

    /// The descriptor of `volume`'s base, or nil; never opens the base (no I/O, no network).
    public func baseDescriptor(of volume: String) throws(StrataError) -> BaseDescriptor? {
        let baseID = try self.meta.withReadLock { () throws(StrataError) in
            try self.volumeRecord(volume, operation: "show").baseID
        }
        return baseID == 0 ? nil : self.bases.descriptor(baseID)
    }

    /// The base `volume` reads through now, or nil.
    public func baseImage(of volume: String) throws(StrataError) -> (any BaseImage)? {
        let id = try self.meta.withReadLock { () throws(StrataError) in try self.volumeRecord(volume, operation: "show").id }
        return try self.baseImage(id: id, name: volume)
    }
}

/// What `strata volume status` shows, and the HTTP API's `hydration` part of a volume (the
/// same field names): the base a volume reads through and the state of its hydration.
public struct VolumeStatus: Sendable, Codable, Equatable {
    public var volume: String
    public var sizeBytes: UInt64
    /// `REMOTE:VOL@SNAP` for a remote base, the file's path for an image file, nil without a base.
    public var base: String?
    /// The remote's name, for a remote base.
    public var remote: String?
    /// `VOL@SNAP` in the remote, for a remote base.
    public var remoteSnapshot: String?
    /// "lazy" (background hydration due: the flag is set), "off" (only reads fetch), or "none"
    /// (no remote base).
    public var hydration: String
    /// "idle" (not running now), "running", "paused" (by an error, retrying), "done" (the base
    /// was dropped), or "none" (no remote base and no hydration seen).
    public var state: String
    /// Objects of the base holding data whose data is local now (fetched, or overwritten).
    public var objectsFetched: Int
    /// Objects of the base holding data (holes excluded).
    public var objectsTotal: Int
    /// Bytes fetched from the store for this volume since the daemon (or the command) opened its base.
    public var bytesFetched: UInt64
    /// Bytes per second a running hydration copies now (the last 5 seconds).
    public var rateBytesPerSecond: UInt64
    /// The hydration's bound, bytes per second, while one runs.
    public var rateLimitBytesPerSecond: UInt64?
    /// The last error of the hydration or of opening the base, naming the object.
    public var lastError: String?

    public init(volume: String, sizeBytes: UInt64) {
        self.volume = volume
        self.sizeBytes = sizeBytes
        self.hydration = "none"
        self.state = "none"
        self.objectsFetched = 0
        self.objectsTotal = 0
        self.bytesFetched = 0
        self.rateBytesPerSecond = 0
    }
}
