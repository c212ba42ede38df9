// Regression tests for what the fuzz targets found in the engine's decoders (docs/TESTING.md,
// "Fuzzing"). Each input is also in Fuzz/corpus/TARGET/finding-*, which the fuzz runs and
// StrataFuzzTests replay.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct FuzzFindingTests {
    /// The superblock fuzz target's first finding: a slot with a valid checksum whose metadata
    /// page count times 4096 overflows. `Superblock.decode` computed the product unchecked and
    /// trapped (so opening or checking such a pool crashed the process) instead of refusing the
    /// slot. The data region's end (dataStart + chunks × chunk size) had the same flaw.
    @Test func superblockFieldsThatOverflowAreRefusedNotTrapped() throws {
        let block = Superblock(
            generation: Generation(4), chunkSize: 65536, metadataPages: 2048, dataStart: 2048 * 4096, chunkCount: 1000,
            epoch: 3, nextVolumeID: 4, volumeTableRoot: PageNumber(10), metadataMapRoot: PageNumber(11),
            dataMapRoot: PageNumber(12), createdAtNanos: 123, uuid: (1, 2), dataChunksUsed: 5, metadataReservePages: 70)
        let good = block.encode()
        _ = try Superblock.decode(good, slot: PageNumber(0), deviceSize: .max)
        // metadata pages × 4096 past 2^64.
        var pages = good
        pages.storeLE(UInt64(1) << 61, at: 56)
        MetadataDecoding.reseal(&pages)
        let error = try #require(throws: StrataError.self) {
            try Superblock.decode(pages, slot: PageNumber(0), deviceSize: .max)
        }
        #expect(error.code == .corrupt)
        #expect(error.message.contains("invalid metadata region"))
        // dataStart + chunks × chunk size past 2^64, each term alone in range.
        var end = good
        end.storeLE(UInt64.max - 65535, at: 64)
        end.storeLE(UInt64(2), at: 72)
        MetadataDecoding.reseal(&end)
        let past = try #require(throws: StrataError.self) { try Superblock.decode(end, slot: PageNumber(0), deviceSize: .max) }
        #expect(past.message.contains("data region past the end"))
    }

    /// The stored input itself, replayed as the fuzz target does (page number and CRC fixed up).
    @Test func superblockFindingInputIsRefused() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/superblock/finding-metadata-pages-overflow")
        var page = Array(try Data(contentsOf: url).prefix(4096))
        page += [UInt8](repeating: 0, count: 4096 - page.count)
        let slot = UInt64(page[24] & 1)
        page.storeLE(slot, at: 16)
        MetadataDecoding.reseal(&page)
        #expect(throws: StrataError.self) { try Superblock.decode(page, slot: PageNumber(slot), deviceSize: 1 << 40) }
    }

    /// The nbd-requests fuzz target's finding: an NBD WRITE of length 0 at offset 0 (proto.md lets
    /// a client send one) reached `Pool.write`, whose in-place path computed its last chunk as
    /// (offset + 0 - 1) >> shift, which underflowed and trapped, taking the daemon and every
    /// client down. WRITE ATOMIC had the same arithmetic. Both are now no-ops after the volume's
    /// checks (a snapshot still refuses, a range past the end still fails).
    @Test func zeroLengthWritesChangeNothing() throws {
        let device = SimDevice(size: 512 * 4096 + 64 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 512)
        let pool = try Pool(device: device)
        try pool.createVolume("vm1", size: 1 << 20)
        let handle = try pool.handle("vm1")
        try pool.write(handle, at: 0, [UInt8](repeating: 7, count: 8192))
        try pool.write(handle, at: 0, [UInt8]())
        try pool.write(handle, at: 4096, [UInt8](), fua: true)
        try pool.writeAtomic(handle, at: 0, [UInt8]())
        #expect(throws: StrataError.self) { try pool.write(handle, at: 2 << 20, [UInt8]()) }
        try pool.createSnapshot("vm1", "s1")
        #expect(throws: StrataError.self) { try pool.write(try pool.handle("vm1@s1"), at: 0, [UInt8]()) }
        #expect(try pool.read(handle, at: 0, count: 8192) == [UInt8](repeating: 7, count: 8192))
        #expect(pool.checkDurable().clean)
    }

    /// Fuzz/corpus/volume-table/finding-huge-count: a volume-table root page with a valid
    /// checksum claiming 6,438,900 records (the most one root can hold). `PagedArray.load`
    /// allocated every record (875 MB in one allocation, which libFuzzer's malloc limit reports)
    /// before reading a single index page. Records are now allocated only as their pages verify,
    /// and a root that names one index page twice (multiplying what one page can claim) is
    /// refused naming the page.
    @Test func volumeTableRootsAreVerifiedBeforeTheirRecordsAreAllocated() throws {
        var root = [UInt8](repeating: 0, count: 4096)
        root.storeLE(UInt64(6_438_900), at: 32)
        PageHeader.seal(&root, kind: .arrayRoot, level: ArrayID.volumeTable.rawValue, count: 507, number: PageNumber(2), generation: Generation(1))
        let huge = try #require(throws: StrataError.self) {
            try MetadataDecoding.volumeTable(root: 2, pageLimit: 16) { _ in root }
        }
        #expect(huge.message.contains("outside the metadata region"))

        // One record, in one leaf under one index page, named twice by a root claiming two index pages.
        var index = [UInt8](repeating: 0, count: 4096)
        PageHeader.seal(&index, kind: .arrayIndex, level: ArrayID.volumeTable.rawValue, count: 508, number: PageNumber(3), generation: Generation(1))
        let perIndex = PagedArray<VolumeRecord>.perIndex * PagedArray<VolumeRecord>.perLeaf
        var twice = [UInt8](repeating: 0, count: 4096)
        twice.storeLE(UInt64(perIndex + 1), at: 32)
        twice.storeLE(UInt64(3), at: 40)
        twice.storeLE(UInt64(3), at: 48)
        PageHeader.seal(&twice, kind: .arrayRoot, level: ArrayID.volumeTable.rawValue, count: 2, number: PageNumber(2), generation: Generation(1))
        let pages = [2: twice, 3: index]
        let repeated = try #require(throws: StrataError.self) {
            try MetadataDecoding.volumeTable(root: 2, pageLimit: 16) { number in pages[Int(number)] ?? [] }
        }
        #expect(repeated.message.contains("names page 3 twice"))
    }
}
