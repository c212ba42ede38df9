// The common header of every 4 KiB metadata page, and little-endian field access.
//
// Every metadata page starts with this header; all integers are little-endian.
//
// | OFFSET | SIZE | FIELD                                                        |
// |--------|------|--------------------------------------------------------------|
// | 0      | 4    | magic 0x41525453 ("STRA")                                    |
// | 4      | 4    | crc32c of the whole page with this field set to zero         |
// | 8      | 1    | kind (PageKind)                                              |
// | 9      | 1    | level (tree nodes: 0 = leaf) or array id (space maps, table) |
// | 10     | 2    | reserved, zero                                               |
// | 12     | 4    | count: entries in use                                        |
// | 16     | 8    | page number this page was written to (catches misdirection) |
// | 24     | 8    | generation of the commit that wrote it                      |
//
// A page is valid only if magic, checksum, kind and page number all match what the reader
// expects; anything else is corruption, reported as data (STYLE §4), never a trap.

import CStrata

/// What a metadata page holds.
enum PageKind: UInt8, Sendable {
    case superblock = 1
    case treeInterior = 2
    case treeLeaf = 3
    case arrayRoot = 4
    case arrayIndex = 5
    case arrayLeaf = 6
}

/// Computes CRC-32C (Castagnoli) over `bytes`.
public func crc32c(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
    strata_crc32c(seed, bytes.baseAddress, bytes.count)
}

/// Computes CRC-32C (Castagnoli) over `bytes`.
public func crc32c(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { crc32c($0, seed: seed) }
}

enum PageHeader {
    static let magic: UInt32 = 0x4152_5453
    static let size = 32

    /// Fills in the header and checksum of an encoded page.
    static func seal(
        _ page: inout [UInt8], kind: PageKind, level: UInt8, count: UInt32, number: PageNumber,
        generation: Generation
    ) {
        precondition(page.count == Limits.pageSize, "page \(number): wrong buffer size \(page.count)")
        page.storeLE(Self.magic, at: 0)
        page.storeLE(UInt32(0), at: 4)
        page[8] = kind.rawValue
        page[9] = level
        page.storeLE(UInt16(0), at: 10)
        page.storeLE(count, at: 12)
        page.storeLE(number.rawValue, at: 16)
        page.storeLE(generation.rawValue, at: 24)
        page.storeLE(crc32c(page), at: 4)
    }

    /// Verifies a page read from `number`; returns its level and count.
    static func verify(
        _ page: [UInt8], kind: PageKind, number: PageNumber
    ) throws(StrataError) -> (level: UInt8, count: UInt32, generation: Generation) {
        guard page.count == Limits.pageSize else {
            throw StrataError.corrupt(page: number, "short page (\(page.count) bytes)")
        }
        let magic: UInt32 = page.loadLE(at: 0)
        guard magic == Self.magic else {
            throw StrataError.corrupt(
                page: number, "bad magic (expected=0x\(String(Self.magic, radix: 16)) actual=0x\(String(magic, radix: 16)))")
        }
        let stored: UInt32 = page.loadLE(at: 4)
        var copy = page
        copy.storeLE(UInt32(0), at: 4)
        let actual = crc32c(copy)
        guard stored == actual else {
            throw StrataError.corrupt(
                page: number,
                "checksum mismatch (expected=0x\(String(stored, radix: 16)) actual=0x\(String(actual, radix: 16)))")
        }
        guard page[8] == kind.rawValue else {
            throw StrataError.corrupt(page: number, "wrong page kind (expected=\(kind.rawValue) actual=\(page[8]))")
        }
        let written: UInt64 = page.loadLE(at: 16)
        guard written == number.rawValue else {
            throw StrataError.corrupt(page: number, "misdirected page (written for page \(written))")
        }
        return (page[9], page.loadLE(at: 12), Generation(page.loadLE(at: 24)))
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    public func loadLE<T: FixedWidthInteger>(at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= self.count, "field at \(offset) out of page")
        return self.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }

    @inline(__always)
    public mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= self.count, "field at \(offset) out of page")
        self.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }
}
