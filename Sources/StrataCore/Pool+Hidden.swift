// Hidden snapshots: the split points a mirror's change tracking is derived from
// (docs/MIRROR.md). A hidden snapshot is an ordinary snapshot record with flag bit 2 set
// (VolumeRecord.swift, incompatible feature bit 2): it shares chunks like any snapshot, so the
// blocks a volume changed since it are `diff(split point, volume)`, found by the two-tree walk of
// Pool+Diff.swift at a cost that grows with what changed. Tracking this way costs no I/O per write
// beyond what the engine already does (the first write to a chunk after the split copies it, as
// after any snapshot), and it survives kill -9 and power loss exactly as snapshots do: a split
// point is either in the last durable commit or not.
//
// Invariants: a hidden snapshot is never listed (`snapshot list`, `volume list`'s count), never
// exported (`targets`, `handle(id:)`), and every user operation that names one (delete, rollback,
// clone, diff, send, open) is refused by `snapshotRecord`, the one lookup they share. Names
// beginning with `hiddenSnapshotPrefix` are refused for user snapshots, so the two never collide.
// `check` verifies hidden snapshots like any other record.

extension Pool {
    /// The prefix of every hidden snapshot's name (valid characters, refused for user snapshots).
    public static let hiddenSnapshotPrefix = "..split."

    /// Takes a hidden snapshot of `volume` named `name` (which starts with `hiddenSnapshotPrefix`).
    /// - Throws: `.notFound` for a missing volume, `.alreadyExists` when the name is taken.
    /// - Precondition: `name` starts with `hiddenSnapshotPrefix` and is a valid name.
    public func createHiddenSnapshot(_ volume: String, _ name: String) throws(StrataError) {
        precondition(name.hasPrefix(Self.hiddenSnapshotPrefix), "hidden snapshot \(name) lacks the prefix")
        precondition(Names.isValid(name), "hidden snapshot \(name): invalid name")
        try self.createSnapshot(volume, name, hidden: true)
    }

    /// Deletes the hidden snapshot `name` of `volume`; a missing one is not an error.
    public func deleteHiddenSnapshot(_ volume: String, _ name: String) throws(StrataError) {
        try self.meta.withWriteLock { () throws(StrataError) in
            try self.checkWritable("delete split point", "\(volume)@\(name)")
            guard let record = try self.hiddenRecord(volume, name, operation: "delete split point") else { return }
            try self.remove(record)
        }
    }

    /// The names of `volume`'s hidden snapshots, sorted.
    public func hiddenSnapshots(of volume: String) throws(StrataError) -> [String] {
        try self.meta.withReadLock { () throws(StrataError) in
            let parent = try self.volumeRecord(volume, operation: "list split points of")
            return (self.snapshotIDs[parent.id] ?? [:]).values.compactMap { self.record(id: $0) }
                .filter(\.isHidden).map(\.name).sorted()
        }
    }

    /// The extents in which `volume` now differs from its hidden snapshot `name`.
    /// - Throws: `.notFound` when either is missing.
    public func changes(of volume: String, since name: String) throws(StrataError) -> [DiffExtent] {
        try self.meta.withReadLock { () throws(StrataError) in
            let current = try self.volumeRecord(volume, operation: "track changes of")
            guard let split = try self.hiddenRecord(volume, name, operation: "track changes of") else {
                throw StrataError(.notFound, "track changes of \(volume): split point \(name) is missing")
            }
            var visits = 0
            return try self.diffRecords(old: split, new: current, nodesVisited: &visits)
        }
    }

    /// Snapshots a user can see, for listings. The caller holds `meta`.
    func visibleSnapshotCount(_ volumeID: UInt64) -> Int {
        (self.snapshotIDs[volumeID] ?? [:]).values.reduce(0) { count, id in
            count + ((self.record(id: id)?.isHidden ?? false) ? 0 : 1)
        }
    }

    /// The hidden snapshot `name` of `volume`, or nil. The caller holds `meta`.
    private func hiddenRecord(_ volume: String, _ name: String, operation: String) throws(StrataError) -> VolumeRecord? {
        let parent = try self.volumeRecord(volume, operation: operation)
        guard let id = self.snapshotIDs[parent.id]?[name], let record = self.record(id: id), record.isHidden else {
            return nil
        }
        return record
    }
}
