// A node of a volume's mapping tree: a copy-on-write radix tree of 256-way nodes keyed by the
// logical chunk index, 8 bits per level (the leaf level uses the lowest 8 bits). Keys are
// dense integers, so a fixed fan-out needs no splits, merges or key storage, and a missing
// subtree (page 0) is an unmapped range of any size. Nodes are shared between a volume, its
// snapshots and clones, with reference counts in the metadata space map (dm-thin's scheme).
//
// Interior page (kind treeInterior, level ≥ 1):
// | OFFSET | SIZE  | FIELD                                              |
// | 32     | 2048  | 256 child page numbers (u64; 0 = empty subtree)    |
// Leaf page (kind treeLeaf, level 0):
// | OFFSET | SIZE  | FIELD                                              |
// | 32     | 2048  | 256 mappings: physical chunk + 1 (u64; 0 = hole)   |
// | 2080   | 1024  | 256 mapping epochs (u32): when the mapping was made |
// The header's count is the number of non-zero entries; a decoder checks it.

/// One mapping-tree node in memory. Mutated only by the pool's metadata writer while the node
/// is exclusively owned by the open transaction; otherwise immutable.
final class TreeNode: @unchecked Sendable {
    static let fanout = Limits.treeFanout
    static let timesOffset = PageHeader.size + 8 * 256

    let level: UInt8
    var slots: [UInt64]
    var times: [UInt32]

    init(level: UInt8) {
        self.level = level
        self.slots = [UInt64](repeating: 0, count: Self.fanout)
        self.times = level == 0 ? [UInt32](repeating: 0, count: Self.fanout) : []
    }

    private init(level: UInt8, slots: [UInt64], times: [UInt32]) {
        self.level = level
        self.slots = slots
        self.times = times
    }

    func copy() -> TreeNode { TreeNode(level: self.level, slots: self.slots, times: self.times) }

    var isEmpty: Bool { self.slots.allSatisfy { $0 == 0 } }

    func encode(page: PageNumber, generation: Generation) -> [UInt8] {
        // Paired with `decode`'s checks (STYLE §5): what is written must decode again.
        precondition(Int(self.level) < Limits.treeDepthMax, "node for page \(page): level \(self.level) out of range")
        precondition(self.slots.count == Self.fanout, "node for page \(page): \(self.slots.count) slots")
        // Negative space: only a leaf has epochs, and a hole carries none.
        precondition(self.times.count == (self.level == 0 ? Self.fanout : 0), "node for page \(page): epochs")
        precondition(page.rawValue >= 2, "node written over a superblock (page \(page))")
        var bytes = [UInt8](repeating: 0, count: Limits.pageSize)
        var used: UInt32 = 0
        if self.level == 0 {
            for index in 0..<Self.fanout {
                precondition(self.slots[index] != 0 || self.times[index] == 0, "node for page \(page): epoch on a hole")
            }
        }
        for index in 0..<Self.fanout where self.slots[index] != 0 {
            precondition(self.level == 0 || self.slots[index] >= 2, "node for page \(page): child points at a superblock")
            used += 1
            bytes.storeLE(self.slots[index], at: PageHeader.size + index * 8)
            if self.level == 0 { bytes.storeLE(self.times[index], at: Self.timesOffset + index * 4) }
        }
        PageHeader.seal(
            &bytes, kind: self.level == 0 ? .treeLeaf : .treeInterior, level: self.level, count: used, number: page,
            generation: generation)
        return bytes
    }

    /// Decodes and validates a node.
    /// - Parameters:
    ///   - pageLimit: child pages must lie in 2 ..< pageLimit.
    ///   - chunkLimit: leaf entries must name a chunk below this.
    ///   - epochLimit: mapping epochs may not exceed the pool's epoch.
    static func decode(
        _ bytes: [UInt8], page: PageNumber, level: UInt8, pageLimit: UInt64, chunkLimit: UInt64, epochLimit: UInt64
    ) throws(StrataError) -> TreeNode {
        let header = try PageHeader.verify(bytes, kind: level == 0 ? .treeLeaf : .treeInterior, number: page)
        guard header.level == level else {
            throw StrataError.corrupt(page: page, "tree node at the wrong level (expected=\(level) actual=\(header.level))")
        }
        let node = TreeNode(level: level)
        var used: UInt32 = 0
        for index in 0..<Self.fanout {
            let value: UInt64 = bytes.loadLE(at: PageHeader.size + index * 8)
            guard value != 0 else { continue }
            used += 1
            if level == 0 {
                guard value <= chunkLimit else {
                    throw StrataError.corrupt(page: page, "entry \(index) maps chunk \(value - 1) past the data region")
                }
                let time: UInt32 = bytes.loadLE(at: Self.timesOffset + index * 4)
                guard UInt64(time) <= epochLimit else {
                    throw StrataError.corrupt(page: page, "entry \(index) has epoch \(time) after the pool's \(epochLimit)")
                }
                node.times[index] = time
            } else {
                guard value >= 2, value < pageLimit else {
                    throw StrataError.corrupt(page: page, "child \(index) points outside the metadata region (\(value))")
                }
            }
            node.slots[index] = value
        }
        guard used == header.count else {
            throw StrataError.corrupt(page: page, "entry count mismatch (expected=\(header.count) actual=\(used))")
        }
        return node
    }
}

/// Clean (committed) tree nodes decoded from disk, shared by concurrent readers.
final class NodeCache: @unchecked Sendable {
    private let mutex = BlockingMutex()
    private var nodes: [UInt64: TreeNode] = [:]

    func get(_ page: UInt64) -> TreeNode? { self.mutex.withLock { self.nodes[page] } }

    /// The cached node at `page`; with `.never`, nil also when the cache is busy.
    func get(_ page: UInt64, _ waiting: Waiting) -> TreeNode? {
        self.mutex.withLock(waiting) { self.nodes[page] } ?? nil
    }

    func put(_ page: UInt64, _ node: TreeNode) {
        self.mutex.withLock {
            if self.nodes.count >= Limits.nodeCachePagesMax {
                // Drop about half, arbitrarily: clean nodes can always be read again.
                var dropped = 0
                for key in self.nodes.keys where dropped < Limits.nodeCachePagesMax / 2 {
                    self.nodes[key] = nil
                    dropped += 1
                }
            }
            self.nodes[page] = node
        }
    }

    func remove(_ page: UInt64) { self.mutex.withLock { _ = self.nodes.removeValue(forKey: page) } }
    /// Nodes held now (at most `Limits.nodeCachePagesMax`).
    var count: Int { self.mutex.withLock { self.nodes.count } }
    func removeAll() { self.mutex.withLock { self.nodes.removeAll() } }
}
