// Diff: the extents that differ between two trees, found by walking both at once and skipping
// every subtree the two share (same page number). The cost grows with what changed, not with
// the volume size: two snapshots one write apart differ in one root-to-leaf path.
//
// Trees of different depth are compared as if the shallower had extra root levels whose
// only child is its real root (that is what growing a volume does to its tree).

/// One differing extent: `data` when the newer side maps it, `zero` when it reads as zeros.
public struct DiffExtent: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case data, zero }
    public let offset: UInt64
    public let length: UInt64
    public let kind: Kind

    public init(offset: UInt64, length: UInt64, kind: Kind) {
        self.offset = offset
        self.length = length
        self.kind = kind
    }
}

extension Pool {
    /// Extents in which `target` (`VOLUME[@SNAP]`) differs from `source` (`VOLUME@SNAP`), within
    /// the target's size.
    public func diff(from source: String, to target: String) throws(StrataError) -> [DiffExtent] {
        var visits = 0
        return try self.diff(from: source, to: target, nodesVisited: &visits)
    }

    /// `diff`, also counting the tree nodes it read (tests prove the walk skips shared subtrees).
    func diff(from source: String, to target: String, nodesVisited visits: inout Int) throws(StrataError)
        -> [DiffExtent]
    {
        try self.withContext("diff", "\(source) \(target)") { () throws(StrataError) in
            try self.diffUnchecked(from: source, to: target, nodesVisited: &visits)
        }
    }

    private func diffUnchecked(from source: String, to target: String, nodesVisited visits: inout Int)
        throws(StrataError) -> [DiffExtent]
    {
        try self.meta.withReadLock { () throws(StrataError) in
            let old = try self.resolve(source, operation: "diff")
            let new = try self.resolve(target, operation: "diff")
            return try self.diffRecords(old: old, new: new, nodesVisited: &visits)
        }
    }

    /// The extents in which `new` differs from `old`, within `new`'s size. The caller holds `meta`.
    func diffRecords(old: VolumeRecord, new: VolumeRecord, nodesVisited visits: inout Int) throws(StrataError)
        -> [DiffExtent]
    {
        var extents: [DiffExtent] = []
        let limit = self.chunks(for: new.size)
        let depth = max(old.depth, new.depth)
        try self.diffNodes(
            old: (old.root.rawValue, old.depth - 1), new: (new.root.rawValue, new.depth - 1), level: depth - 1,
            base: 0, limit: limit, visits: &visits
        ) { chunk, mapped in
            let offset = chunk << self.chunkShift
            let length = min(self.chunkSize, new.size - offset)
            let kind: DiffExtent.Kind = mapped ? .data : .zero
            if let last = extents.last, last.kind == kind, last.offset + last.length == offset {
                extents[extents.count - 1] = DiffExtent(offset: last.offset, length: last.length + length, kind: kind)
            } else {
                extents.append(DiffExtent(offset: offset, length: length, kind: kind))
            }
        }
        return extents
    }

    /// A subtree reference: page and the level the page really is at. When `level` (the level
    /// being compared) is above `pageLevel`, the reference is a virtual node whose slot 0 leads on.
    typealias SubtreeReference = (page: UInt64, pageLevel: UInt8)

    private func children(of reference: SubtreeReference, level: UInt8) throws(StrataError) -> [UInt64]? {
        if reference.page == 0 { return nil }
        if level > reference.pageLevel { return nil }
        return try self.node(reference.page, level: level).slots
    }

    private func diffNodes(
        old: SubtreeReference, new: SubtreeReference, level: UInt8, base: UInt64, limit: UInt64, visits: inout Int,
        _ emit: (UInt64, Bool) throws(StrataError) -> Void
    ) throws(StrataError) {
        if base >= limit { return }
        // The same page at the same real level is the same subtree: skip it whole.
        if old.page == new.page && old.pageLevel == new.pageLevel { return }
        if old.page == 0 && new.page == 0 { return }
        let oldSlots = try self.children(of: old, level: level)
        let newSlots = try self.children(of: new, level: level)
        visits += (oldSlots == nil ? 0 : 1) + (newSlots == nil ? 0 : 1)
        let childSpan = Self.span(depth: level)
        for index in 0..<256 {
            // A virtual level (page deeper than `level`) has one child: the real root, at slot 0.
            let oldChild: UInt64 =
                oldSlots?[index] ?? ((old.page != 0 && level > old.pageLevel && index == 0) ? old.page : 0)
            let newChild: UInt64 =
                newSlots?[index] ?? ((new.page != 0 && level > new.pageLevel && index == 0) ? new.page : 0)
            if oldChild == 0 && newChild == 0 { continue }
            let childBase = base + UInt64(index) * childSpan
            if childBase >= limit { return }
            if level == 0 {
                if oldChild != newChild { try emit(childBase, newChild != 0) }
            } else {
                let oldLevel = (oldSlots != nil) ? level - 1 : old.pageLevel
                let newLevel = (newSlots != nil) ? level - 1 : new.pageLevel
                try self.diffNodes(
                    old: (oldChild, oldLevel), new: (newChild, newLevel), level: level - 1, base: childBase,
                    limit: limit, visits: &visits, emit)
            }
        }
    }
}
