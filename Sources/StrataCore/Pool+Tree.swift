// Mapping-tree operations on one volume record: lookup, set and clear an entry, truncate,
// free, and walks. All run under `meta` (mutators exclusively) and touch only the open
// transaction's nodes, shadowing committed or shared ones first.

extension Pool {
    /// Chunks addressable by a tree of `depth` levels.
    @inline(__always)
    static func span(depth: UInt8) -> UInt64 {
        depth >= 8 ? UInt64.max : UInt64(1) << (8 * UInt64(depth))
    }

    /// Depth needed to address `chunks` chunks (at least 1).
    static func depth(forChunks chunks: UInt64) -> UInt8 {
        var depth: UInt8 = 1
        while depth < 8, Self.span(depth: depth) < chunks { depth += 1 }
        return depth
    }

    /// The leaf entry for `chunk`.
    func lookup(_ record: VolumeRecord, chunk: ChunkIndex) throws(StrataError) -> LeafEntry {
        guard let entry = try self.lookup(record, chunk: chunk, waiting: .allowed) else {
            preconditionFailure("a lookup that may wait always reaches a leaf")
        }
        return entry
    }

    /// The leaf entry for `chunk`; with `.never`, nil when a node on the way is not in memory.
    func lookup(_ record: VolumeRecord, chunk: ChunkIndex, waiting: Waiting) throws(StrataError) -> LeafEntry? {
        guard chunk.rawValue < Self.span(depth: record.depth) else { return .hole }
        var page = record.root.rawValue
        var level = record.depth - 1
        while page != 0 {
            guard let node = try self.node(page, level: level, waiting: waiting) else { return nil }
            let index = Int((chunk.rawValue >> (8 * UInt64(level))) & 0xFF)
            if level == 0 { return LeafEntry(slot: node.slots[index], time: node.times[index]) }
            page = node.slots[index]
            level -= 1
        }
        return .hole
    }

    /// Grows the tree until it addresses `chunk`, adding root levels above the old root.
    func ensureDepth(_ record: inout VolumeRecord, chunk: ChunkIndex) throws(StrataError) {
        while chunk.rawValue >= Self.span(depth: record.depth) {
            precondition(Int(record.depth) < Limits.treeDepthMax, "volume \(record.name): tree deeper than 8")
            if record.root != .none {
                let (page, node) = try self.newNode(level: record.depth)
                node.slots[0] = record.root.rawValue
                record.root = PageNumber(page)
            }
            record.depth += 1
        }
    }

    /// Throws `.noSpace` unless `count` node pages can be allocated, so a tree update never
    /// fails half done.
    func requireNodePages(_ count: Int, forRelease: Bool, operation: String) throws(StrataError) {
        let keep = forRelease ? self.metadataReserve / 2 : self.metadataReserve
        guard self.metadataPagesFree > keep + UInt64(count) else {
            throw StrataError(
                .noSpace,
                "\(operation): pool metadata full (free pages=\(self.metadataPagesFree) reserve=\(keep)); delete snapshots or volumes to free space, or create the pool with a larger --metadata-size"
            )
        }
    }

    /// Sets the leaf entry for `chunk`, shadowing the path; returns the entry it replaced.
    /// The caller owns the old entry's chunk reference and the new entry's.
    @discardableResult
    func setEntry(
        _ record: inout VolumeRecord, chunk: ChunkIndex, to entry: LeafEntry, forRelease: Bool = false
    ) throws(StrataError) -> LeafEntry {
        try self.ensureDepth(&record, chunk: chunk)
        var level = record.depth - 1
        var (page, node) =
            record.root == .none
            ? try self.newNode(level: level, forRelease: forRelease)
            : try self.shadow(record.root.rawValue, level: level, forRelease: forRelease)
        record.root = PageNumber(page)
        while level > 0 {
            let index = Int((chunk.rawValue >> (8 * UInt64(level))) & 0xFF)
            let child = node.slots[index]
            let (childPage, childNode) =
                child == 0
                ? try self.newNode(level: level - 1, forRelease: forRelease)
                : try self.shadow(child, level: level - 1, forRelease: forRelease)
            node.slots[index] = childPage
            node = childNode
            page = childPage
            level -= 1
        }
        let index = Int(chunk.rawValue & 0xFF)
        let old = LeafEntry(slot: node.slots[index], time: node.times[index])
        node.slots[index] = entry.slot
        node.times[index] = entry.time
        self.metadataChanged = true
        return old
    }

    /// Drops every entry at or past chunk `keepBelow`, freeing what nothing else references.
    /// Checks every node it will touch first (`checkTruncatable`), so it fails whole or not at all.
    func truncate(_ record: inout VolumeRecord, keepBelow: ChunkIndex) throws(StrataError) {
        guard record.root != .none else { return }
        try self.checkTruncatable(record, keepBelow: keepBelow)
        let root = try self.truncate(
            page: record.root.rawValue, level: record.depth - 1, base: 0, keepBelow: keepBelow.rawValue)
        record.root = PageNumber(root)
    }

    /// Reads, changing nothing, every node `truncate` at `keepBelow` would shadow or free (a
    /// superset: shared subtrees too), so the truncate that follows cannot stop half done on a
    /// damaged page: it throws first, naming the page.
    func checkTruncatable(_ record: VolumeRecord, keepBelow: ChunkIndex) throws(StrataError) {
        guard record.root != .none else { return }
        try self.checkTruncatable(page: record.root.rawValue, level: record.depth - 1, base: 0, keepBelow: keepBelow.rawValue)
    }

    private func checkTruncatable(page: UInt64, level: UInt8, base: UInt64, keepBelow: UInt64) throws(StrataError) {
        let childSpan = Self.span(depth: level)
        let (span, overflow) = childSpan.multipliedReportingOverflow(by: 256)
        if !overflow, base + span <= keepBelow { return }
        let node = try self.checkedNode(page, level: level)
        guard level > 0 else { return }
        for index in 0..<256 where node.slots[index] != 0 {
            try self.checkTruncatable(
                page: node.slots[index], level: level - 1, base: base + UInt64(index) * childSpan, keepBelow: keepBelow)
        }
    }

    private func truncate(page: UInt64, level: UInt8, base: UInt64, keepBelow: UInt64) throws(StrataError) -> UInt64 {
        let childSpan = Self.span(depth: level)
        let (span, overflow) = childSpan.multipliedReportingOverflow(by: 256)
        if base >= keepBelow {
            try self.releaseNode(page, level: level)
            return 0
        }
        if !overflow, base + span <= keepBelow { return page }
        let (copyPage, node) = try self.shadow(page, level: level, forRelease: true)
        for index in 0..<256 where node.slots[index] != 0 {
            let childBase = base + UInt64(index) * childSpan
            if level == 0 {
                if childBase >= keepBelow {
                    if let chunk = LeafEntry(slot: node.slots[index], time: 0).chunk { self.releaseChunk(chunk) }
                    node.slots[index] = 0
                    node.times[index] = 0
                }
            } else {
                node.slots[index] = try self.truncate(
                    page: node.slots[index], level: level - 1, base: childBase, keepBelow: keepBelow)
            }
        }
        if node.isEmpty {
            try self.releaseNode(copyPage, level: level)
            return 0
        }
        return copyPage
    }

    /// Calls `body(chunk, physical, epoch)` for every mapped entry in [first, end).
    func forEachMapping(
        _ record: VolumeRecord, from first: ChunkIndex = ChunkIndex(0), to end: ChunkIndex = ChunkIndex(.max),
        _ body: (ChunkIndex, PhysicalChunk, UInt32) throws(StrataError) -> Void
    ) throws(StrataError) {
        guard record.root != .none else { return }
        _ = try self.walk(
            page: record.root.rawValue, level: record.depth - 1, base: 0, first: first.rawValue, end: end.rawValue
        ) { chunk, slot, time throws(StrataError) in
            guard case .mapped(let physical, let epoch) = LeafEntry(slot: slot, time: time) else { return true }
            try body(ChunkIndex(chunk), physical, epoch)
            return true
        }
    }

    /// The first `limit` mapped chunks in [first, end), in order. Cost: the nodes on the way to
    /// them; empty subtrees are skipped whole.
    func mappedChunks(_ record: VolumeRecord, from first: ChunkIndex, to end: ChunkIndex, limit: Int)
        throws(StrataError) -> [ChunkIndex]
    {
        precondition(limit > 0, "mappedChunks needs a positive limit")
        guard record.root != .none else { return [] }
        var found: [ChunkIndex] = []
        _ = try self.walk(
            page: record.root.rawValue, level: record.depth - 1, base: 0, first: first.rawValue, end: end.rawValue
        ) { chunk, _, _ in
            found.append(ChunkIndex(chunk))
            return found.count < limit
        }
        return found
    }

    /// Visits mapped entries in [first, end) in order until `body` returns false; returns false
    /// when it stopped early.
    private func walk(
        page: UInt64, level: UInt8, base: UInt64, first: UInt64, end: UInt64,
        _ body: (UInt64, UInt64, UInt32) throws(StrataError) -> Bool
    ) throws(StrataError) -> Bool {
        let node = try self.node(page, level: level)
        let childSpan = Self.span(depth: level)
        for index in 0..<256 where node.slots[index] != 0 {
            let childBase = base + UInt64(index) * childSpan
            if childBase >= end { return true }
            if level == 0 {
                if childBase >= first, !(try body(childBase, node.slots[index], node.times[index])) { return false }
            } else {
                let (childEnd, overflow) = childBase.addingReportingOverflow(childSpan)
                if !overflow && childEnd <= first { continue }
                let more = try self.walk(
                    page: node.slots[index], level: level - 1, base: childBase, first: first, end: end, body)
                if !more { return false }
            }
        }
        return true
    }

    /// Bytes deleting this tree would free: chunks reachable only through nodes of reference
    /// count 1 and themselves referenced once. Cost: the tree's exclusive part only.
    func exclusiveChunks(_ record: VolumeRecord) throws(StrataError) -> UInt64 {
        guard record.root != .none else { return 0 }
        return try self.exclusiveChunks(page: record.root.rawValue, level: record.depth - 1)
    }

    private func exclusiveChunks(page: UInt64, level: UInt8) throws(StrataError) -> UInt64 {
        guard self.metaRefs[Int(page)] == 1 else { return 0 }
        let node = try self.node(page, level: level)
        var count: UInt64 = 0
        for slot in node.slots where slot != 0 {
            if level == 0 {
                if self.dataRefs[Int(slot - 1)] == 1 { count += 1 }
            } else {
                count += try self.exclusiveChunks(page: slot, level: level - 1)
            }
        }
        return count
    }
}
