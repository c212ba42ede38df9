// Entry points to the metadata page decoders for code that checks pages it did not read from
// a pool: the fuzz targets (Sources/StrataFuzz, docs/TESTING.md "Fuzzing"). The engine itself
// reaches the same decoders through `Pool`; these add no checks of their own and change no
// behaviour, they only make the decoders callable with `package` access, without @testable.

/// The metadata page decoders (docs/FORMAT.md), one call per structure.
package enum MetadataDecoding {
    /// Recomputes a page's CRC-32C in place (header bytes 4..<8), as `PageHeader.seal` does,
    /// leaving every other byte as it is: a fuzz target calls it after mutating a page so the
    /// decoder gets past the checksum.
    /// - Precondition: `page` is one page long.
    package static func reseal(_ page: inout [UInt8]) {
        precondition(page.count == Limits.pageSize, "reseal: page of \(page.count) bytes")
        page.storeLE(UInt32(0), at: 4)
        page.storeLE(crc32c(page), at: 4)
    }

    /// Decodes a superblock slot, as opening a pool does.
    /// - Returns: the generation it carries.
    /// - Throws: what `Superblock.decode` throws (`.corrupt`, `.unsupported`).
    package static func superblock(_ page: [UInt8], slot: UInt64, deviceSize: UInt64) throws(StrataError) -> UInt64 {
        let block = try Superblock.decode(page, slot: PageNumber(slot), deviceSize: deviceSize)
        return block.generation.rawValue
    }

    /// Decodes a copy-on-write btree node, as a lookup does.
    /// - Returns: how many entries it holds.
    /// - Throws: `.corrupt` naming the page.
    package static func treeNode(
        _ bytes: [UInt8], page: UInt64, level: UInt8, pageLimit: UInt64, chunkLimit: UInt64, epochLimit: UInt64
    ) throws(StrataError) -> Int {
        let node = try TreeNode.decode(
            bytes, page: PageNumber(page), level: level, pageLimit: pageLimit, chunkLimit: chunkLimit,
            epochLimit: epochLimit)
        return node.slots.filter { $0 != 0 }.count
    }

    /// Loads the volume table from its root page, as opening a pool does, and decodes every
    /// record in it.
    /// - Parameter readPage: returns page `number` (any length; a wrong one is corruption).
    /// - Returns: for each live record, its problem (nil when it decodes cleanly).
    /// - Throws: `.corrupt` naming the page when the table's pages do not verify.
    package static func volumeTable(
        root: UInt64, pageLimit: UInt64, readPage: (UInt64) throws(StrataError) -> [UInt8]
    ) throws(StrataError) -> [String?] {
        let table = try PagedArray<VolumeRecord>.load(
            id: .volumeTable, root: PageNumber(root), pageLimit: pageLimit,
            readPage: { (number: PageNumber) throws(StrataError) in try readPage(number.rawValue) })
        var problems: [String?] = []
        for index in 0..<table.count where !table[index].isZero { problems.append(table[index].decodeProblem) }
        return problems
    }
}
