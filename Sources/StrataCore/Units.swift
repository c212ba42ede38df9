// Integer domains of the engine, each its own type so an index, a count and a page number
// cannot be mixed by accident (STYLE §2). Byte offsets and lengths stay `UInt64` with the
// unit in the argument label (`at offset:`, `length:`).

/// The number of a 4 KiB metadata page in the pool file (page 0 and 1 are the superblocks).
public struct PageNumber: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "\(self.rawValue)" }
    /// The null pointer: no page (an empty subtree).
    public static let none = PageNumber(0)
}

/// The index of a data chunk in the pool's data region.
public struct PhysicalChunk: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "\(self.rawValue)" }

    /// `chunks` as runs of adjacent chunks, in ascending order (duplicates count once): what one
    /// call each can discard, where a chunk at a time made a volume's delete cost a system call
    /// per chunk.
    public static func runs(_ chunks: [PhysicalChunk]) -> [(first: PhysicalChunk, count: UInt64)] {
        var runs: [(first: PhysicalChunk, count: UInt64)] = []
        for chunk in chunks.sorted() {
            if let last = runs.last, chunk.rawValue < last.first.rawValue + last.count { continue }
            if let last = runs.last, chunk.rawValue == last.first.rawValue + last.count {
                runs[runs.count - 1].count += 1
            } else {
                runs.append((chunk, 1))
            }
        }
        return runs
    }
}

/// The index of a chunk inside a volume: byte offset divided by the chunk size.
public struct ChunkIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "\(self.rawValue)" }
}

/// A commit's sequence number; the superblock with the highest valid generation wins at open.
public struct Generation: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "\(self.rawValue)" }
}

extension UInt64 {
    /// Rounds up to a multiple of `alignment`, which must be a power of two.
    @inline(__always)
    func alignedUp(to alignment: UInt64) -> UInt64 {
        precondition(alignment.nonzeroBitCount == 1, "alignment \(alignment) is not a power of two")
        return (self + alignment - 1) & ~(alignment - 1)
    }
}

/// One leaf slot of a mapping tree: a hole (reads as zeros, or as the volume's base image), or
/// a physical chunk with the epoch its mapping was made in (the copy-on-write test compares it
/// with the volume's shared-before epoch).
enum LeafEntry: Equatable, Sendable {
    case hole
    case mapped(PhysicalChunk, epoch: UInt32)

    /// Decodes a leaf slot. In `TreeNode.slots` (and on disk) a mapped chunk is stored as its
    /// number plus one, so that zero is a hole; this is the only place that knows it.
    init(slot: UInt64, time: UInt32) {
        self = slot == 0 ? .hole : .mapped(PhysicalChunk(slot - 1), epoch: time)
    }

    /// The slot value that encodes this entry (see `init(slot:time:)`).
    var slot: UInt64 {
        guard case .mapped(let chunk, _) = self else { return 0 }
        precondition(chunk.rawValue < UInt64.max, "physical chunk \(chunk) cannot be encoded")
        return chunk.rawValue + 1
    }

    /// The epoch stored beside the slot (zero for a hole).
    var time: UInt32 {
        guard case .mapped(_, let epoch) = self else { return 0 }
        return epoch
    }

    /// The mapped chunk, or nil for a hole.
    var chunk: PhysicalChunk? {
        guard case .mapped(let chunk, _) = self else { return nil }
        return chunk
    }

    var isHole: Bool { self == .hole }
}

extension ChunkIndex {
    /// The chunk index `count` chunks further on.
    @inline(__always)
    func advanced(by count: UInt64) -> ChunkIndex { ChunkIndex(self.rawValue + count) }
}
