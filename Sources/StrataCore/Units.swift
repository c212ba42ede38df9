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
