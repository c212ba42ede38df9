// The superblock: the root of everything committed. Two copies, at pages 0 and 1; a commit of
// generation g writes slot g % 2 after every page it references is durable, then syncs. Open
// picks the valid slot with the higher generation, so a torn superblock write falls back to
// the previous commit and no repair step is ever needed.
//
// Body layout (after the 32-byte page header; kind = superblock, level = 0):
//
// | OFFSET | SIZE | FIELD                                                          |
// |--------|------|----------------------------------------------------------------|
// | 32     | 8    | format magic "STRATAPL" (0x4C50415441525453 little-endian)    |
// | 40     | 4    | format version (2; version 1 is still read, see FormatFeatures)|
// | 44     | 4    | page size (4096)                                               |
// | 48     | 8    | chunk size in bytes (power of two, 4 KiB ... 1 MiB)            |
// | 56     | 8    | metadata pages (pages 0 ..< this are the metadata region)      |
// | 64     | 8    | data start: byte offset of data chunk 0 (chunk-aligned)        |
// | 72     | 8    | chunk count of the data region                                 |
// | 80     | 8    | epoch: sharing counter, bumped by snapshot, clone and rollback |
// | 88     | 8    | next volume id                                                 |
// | 96     | 8    | volume table root page                                         |
// | 104    | 8    | metadata space map root page                                   |
// | 112    | 8    | data space map root page                                       |
// | 120    | 8    | pool creation time (nanoseconds since 1970)                    |
// | 128    | 16   | pool UUID                                                      |
// | 144    | 8    | data chunks in use (checked against the data space map)        |
// | 152    | 8    | metadata reserve pages                                         |
// | 160    | 8    | version 2: incompatible features (FormatFeatures.swift); else 0 |

/// The fields of a committed superblock.
struct Superblock: Equatable, Sendable {
    static let formatMagic: UInt64 = 0x4C50_4154_4152_5453
    /// The format version this strata writes, and the newest it reads.
    static let formatVersion: UInt32 = 2

    var generation: Generation
    var chunkSize: UInt64
    var metadataPages: UInt64
    var dataStart: UInt64
    var chunkCount: UInt64
    var epoch: UInt64
    var nextVolumeID: UInt64
    var volumeTableRoot: PageNumber
    var metadataMapRoot: PageNumber
    var dataMapRoot: PageNumber
    var createdAtNanos: Int64
    var uuid: (UInt64, UInt64)
    var dataChunksUsed: UInt64
    var metadataReservePages: UInt64
    /// The version this superblock was read with (commits write `Superblock.formatVersion`).
    var version: UInt32 = Superblock.formatVersion
    /// Features a reader must know to open the pool; always empty at version 1.
    var incompatibleFeatures: IncompatibleFeatures = []

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.generation == rhs.generation && lhs.volumeTableRoot == rhs.volumeTableRoot
            && lhs.metadataMapRoot == rhs.metadataMapRoot && lhs.dataMapRoot == rhs.dataMapRoot
            && lhs.uuid == rhs.uuid && lhs.epoch == rhs.epoch
    }

    /// The slot (page 0 or 1) this generation is written to.
    var slot: PageNumber { PageNumber(self.generation.rawValue % 2) }

    func encode() -> [UInt8] {
        // Paired with `decode`'s checks (STYLE §5): geometry that decode would refuse is a bug here.
        precondition(self.chunkSize.nonzeroBitCount == 1, "superblock: chunk size \(self.chunkSize) not a power of two")
        precondition(
            self.chunkSize >= Limits.chunkSizeMin && self.chunkSize <= Limits.chunkSizeMax,
            "superblock: chunk size \(self.chunkSize) out of range")
        precondition(self.dataChunksUsed <= self.chunkCount, "superblock: more chunks used than exist")
        precondition(self.volumeTableRoot.rawValue < self.metadataPages, "superblock: volume table outside metadata")
        var page = [UInt8](repeating: 0, count: Limits.pageSize)
        page.storeLE(Self.formatMagic, at: 32)
        precondition(self.version >= 2 || self.incompatibleFeatures.isEmpty, "version 1 has no feature field")
        page.storeLE(self.version, at: 40)
        page.storeLE(UInt32(Limits.pageSize), at: 44)
        page.storeLE(self.chunkSize, at: 48)
        page.storeLE(self.metadataPages, at: 56)
        page.storeLE(self.dataStart, at: 64)
        page.storeLE(self.chunkCount, at: 72)
        page.storeLE(self.epoch, at: 80)
        page.storeLE(self.nextVolumeID, at: 88)
        page.storeLE(self.volumeTableRoot.rawValue, at: 96)
        page.storeLE(self.metadataMapRoot.rawValue, at: 104)
        page.storeLE(self.dataMapRoot.rawValue, at: 112)
        page.storeLE(self.createdAtNanos, at: 120)
        page.storeLE(self.uuid.0, at: 128)
        page.storeLE(self.uuid.1, at: 136)
        page.storeLE(self.dataChunksUsed, at: 144)
        page.storeLE(self.metadataReservePages, at: 152)
        page.storeLE(self.incompatibleFeatures.rawValue, at: 160)
        PageHeader.seal(&page, kind: .superblock, level: 0, count: 0, number: self.slot, generation: self.generation)
        return page
    }

    /// Decodes and validates a superblock slot.
    /// - Parameter reader: the versions and features the reader knows (tests narrow it to play
    ///   an older strata).
    /// - Throws: `.unsupported` when the slot is intact but written by a newer strata (a format
    ///   version or incompatible feature the reader does not know); `.corrupt` naming the slot
    ///   when any field is invalid.
    static func decode(
        _ page: [UInt8], slot: PageNumber, deviceSize: UInt64, reader: FormatReader = .current
    ) throws(StrataError) -> Superblock {
        let header = try PageHeader.verify(page, kind: .superblock, number: slot)
        func bad(_ what: String) -> StrataError { StrataError.corrupt(page: slot, "superblock: \(what)") }
        guard page.loadLE(at: 32) as UInt64 == Self.formatMagic else { throw bad("not a Strata pool (format magic)") }
        let version: UInt32 = page.loadLE(at: 40)
        guard version >= 1 else { throw bad("invalid format version 0") }
        let features = version >= 2 ? IncompatibleFeatures(rawValue: page.loadLE(at: 160)) : []
        try reader.require(version: version, features: features, slot: slot)
        guard page.loadLE(at: 44) as UInt32 == UInt32(Limits.pageSize) else { throw bad("page size is not 4096") }
        let block = Superblock(
            generation: header.generation,
            chunkSize: page.loadLE(at: 48), metadataPages: page.loadLE(at: 56), dataStart: page.loadLE(at: 64),
            chunkCount: page.loadLE(at: 72), epoch: page.loadLE(at: 80), nextVolumeID: page.loadLE(at: 88),
            volumeTableRoot: PageNumber(page.loadLE(at: 96)), metadataMapRoot: PageNumber(page.loadLE(at: 104)),
            dataMapRoot: PageNumber(page.loadLE(at: 112)), createdAtNanos: page.loadLE(at: 120),
            uuid: (page.loadLE(at: 128), page.loadLE(at: 136)), dataChunksUsed: page.loadLE(at: 144),
            metadataReservePages: page.loadLE(at: 152), version: version, incompatibleFeatures: features)
        guard block.generation.rawValue % 2 == slot.rawValue else { throw bad("generation in the wrong slot") }
        guard block.chunkSize.nonzeroBitCount == 1, block.chunkSize >= Limits.chunkSizeMin,
            block.chunkSize <= Limits.chunkSizeMax
        else { throw bad("invalid chunk size \(block.chunkSize)") }
        // Every product and sum of stored fields is checked for overflow: a damaged slot with a
        // valid checksum once trapped here (metadata pages × 4096) instead of being refused
        // (found by the superblock fuzz target, docs/TESTING.md).
        let (metadataBytes, metadataOverflow) = block.metadataPages.multipliedReportingOverflow(by: UInt64(Limits.pageSize))
        guard block.metadataPages >= 16, !metadataOverflow, block.dataStart >= metadataBytes,
            block.dataStart % block.chunkSize == 0
        else { throw bad("invalid metadata region (pages=\(block.metadataPages) dataStart=\(block.dataStart))") }
        let (dataBytes, overflow) = block.chunkCount.multipliedReportingOverflow(by: block.chunkSize)
        let (dataEnd, endOverflow) = block.dataStart.addingReportingOverflow(dataBytes)
        guard !overflow, !endOverflow, dataEnd <= deviceSize else {
            throw bad("data region past the end of the device (chunks=\(block.chunkCount) device=\(deviceSize))")
        }
        for root in [block.volumeTableRoot, block.metadataMapRoot, block.dataMapRoot] {
            guard root.rawValue >= 2, root.rawValue < block.metadataPages else {
                throw bad("root page \(root) outside the metadata region")
            }
        }
        return block
    }
}
