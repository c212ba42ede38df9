// Unit tests for the page codecs and small pieces: crc32c, page header, superblock, tree
// nodes, paged arrays, the allocation bitmap, names and sizes.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct CodecTests {
    @Test func crc32cMatchesTheStandardCheckValue() {
        // RFC 3720 B.4 and every crc32c implementation: "123456789" -> 0xE3069283.
        #expect(crc32c(Array("123456789".utf8)) == 0xE306_9283)
        #expect(crc32c([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        // Extending equals hashing the concatenation.
        let bytes = SeededRandom(seed: 1).bytesForTest(1000)
        #expect(crc32c(Array(bytes[500...]), seed: crc32c(Array(bytes[..<500]))) == crc32c(bytes))
    }

    @Test func pageHeaderRoundTripsAndRejectsDamage() throws {
        var page = [UInt8](repeating: 0, count: 4096)
        page[100] = 42
        PageHeader.seal(&page, kind: .treeLeaf, level: 0, count: 3, number: PageNumber(7), generation: Generation(9))
        let header = try PageHeader.verify(page, kind: .treeLeaf, number: PageNumber(7))
        #expect(header.count == 3)
        #expect(header.generation == Generation(9))
        // Wrong expected kind, wrong address, and any flipped byte are all corruption.
        #expect(throws: StrataError.self) { try PageHeader.verify(page, kind: .treeInterior, number: PageNumber(7)) }
        #expect(throws: StrataError.self) { try PageHeader.verify(page, kind: .treeLeaf, number: PageNumber(8)) }
        var random = SeededRandom(seed: 3)
        for _ in 0..<200 {
            var damaged = page
            let index = random.next(below: 4096)
            damaged[index] ^= UInt8(1 + random.next(below: 255))
            let result = Result { () throws(StrataError) in
                try PageHeader.verify(damaged, kind: .treeLeaf, number: PageNumber(7))
            }
            guard case .failure(let error) = result else {
                Issue.record("flipped byte \(index) not detected")
                continue
            }
            #expect(error.code == .corrupt)
            #expect(error.page == PageNumber(7))
        }
    }

    @Test func superblockRoundTrips() throws {
        let block = Superblock(
            generation: Generation(5), chunkSize: 65536, metadataPages: 2048, dataStart: 2048 * 4096, chunkCount: 1000,
            epoch: 3, nextVolumeID: 4, volumeTableRoot: PageNumber(10), metadataMapRoot: PageNumber(11),
            dataMapRoot: PageNumber(12), createdAtNanos: 123, uuid: (1, 2), dataChunksUsed: 5, metadataReservePages: 70)
        let bytes = block.encode()
        let decoded = try Superblock.decode(bytes, slot: PageNumber(1), deviceSize: 2048 * 4096 + 1000 * 65536)
        #expect(decoded == block)
        #expect(decoded.chunkCount == 1000)
        #expect(decoded.dataChunksUsed == 5)
        // The data region must fit on the device.
        #expect(throws: StrataError.self) {
            try Superblock.decode(bytes, slot: PageNumber(1), deviceSize: 2048 * 4096)
        }
        // Generation 5 belongs in slot 1, not slot 0.
        #expect(throws: StrataError.self) { try Superblock.decode(bytes, slot: PageNumber(0), deviceSize: .max) }
    }

    @Test(arguments: [UInt8(0), 1, 2])
    func treeNodeRoundTrips(level: UInt8) throws {
        let node = TreeNode(level: level)
        var random = SeededRandom(seed: UInt64(level))
        for _ in 0..<40 {
            let index = random.next(below: 256)
            node.slots[index] = UInt64(2 + random.next(below: 500))
            if level == 0 { node.times[index] = UInt32(random.next(below: 9)) }
        }
        let bytes = node.encode(page: PageNumber(33), generation: Generation(2))
        let decoded = try TreeNode.decode(
            bytes, page: PageNumber(33), level: level, pageLimit: 1000, chunkLimit: 1000, epochLimit: 10)
        #expect(decoded.slots == node.slots)
        #expect(decoded.times == node.times)
        // Decoded at the wrong level, it is corruption, not a crash.
        #expect(throws: StrataError.self) {
            try TreeNode.decode(bytes, page: PageNumber(33), level: level + 1, pageLimit: 1000, chunkLimit: 1000, epochLimit: 10)
        }
        // Out-of-range pointers are caught even under a valid checksum.
        let tooSmall: UInt64 = 10
        #expect(throws: StrataError.self) {
            try TreeNode.decode(
                bytes, page: PageNumber(33), level: level, pageLimit: tooSmall, chunkLimit: tooSmall, epochLimit: 10)
        }
    }

    @Test func pagedArrayRewritesOnlyChangedLeaves() throws {
        var array = PagedArray<UInt32>(id: .dataMap, count: 5000)
        var disk: [PageNumber: [UInt8]] = [:]
        var next: UInt64 = 2
        var freed: [PageNumber] = []
        func commit(_ generation: UInt64) throws -> Int {
            var written = 0
            try array.commit(
                generation: Generation(generation),
                allocate: { () throws(StrataError) -> PageNumber in
                    next += 1
                    return PageNumber(next)
                },
                free: { freed.append($0) },
                emit: { page, bytes in
                    disk[page] = bytes
                    written += 1
                })
            return written
        }
        array[10] = 1
        array[4999] = 7
        #expect(try commit(1) == 2 + 1 + 1)  // two leaves, one index page, the root
        let reloaded = try PagedArray<UInt32>.load(
            id: .dataMap, root: array.rootPage, pageLimit: 1000, readPage: { page throws(StrataError) in disk[page]! })
        #expect(reloaded.count == 5000)
        #expect(reloaded[10] == 1)
        #expect(reloaded[4999] == 7)
        #expect(reloaded[11] == 0)
        array[11] = 2
        #expect(try commit(2) == 3)  // one leaf, its index page, the root
        #expect(freed.count == 3)
        // A misdirected root (another array's) is refused.
        #expect(throws: StrataError.self) {
            try PagedArray<UInt32>.load(
                id: .metadataMap, root: array.rootPage, pageLimit: 1000, readPage: { page throws(StrataError) in disk[page]! })
        }
    }

    @Test func bitmapAllocatesEveryBitOnceThenFails() {
        var bitmap = Bitmap(count: 130)
        var seen = Set<Int>()
        while let bit = bitmap.allocate(floor: 2) { #expect(seen.insert(bit).inserted) }
        #expect(seen.count == 128)
        #expect(!seen.contains(0))
        #expect(!seen.contains(1))
        bitmap.remove(77)
        #expect(bitmap.allocate(floor: 2) == 77)
    }

    @Test(arguments: [
        ("4096", UInt64(4096)), ("64K", 65536), ("64k", 65536), ("1M", 1 << 20), ("10G", 10 << 30), ("2T", 2 << 40),
        ("1.5G", 1536 << 20), ("1GiB", 1 << 30), ("512B", 512),
    ])
    func sizesParse(text: String, bytes: UInt64) {
        #expect(SizeParser.parse(text) == bytes)
    }

    @Test(arguments: ["", "G", "12X", "-1", "1..5G", "99999999999999999999", "1 G G"])
    func badSizesAreRefused(text: String) {
        #expect(SizeParser.parse(text) == nil)
    }

    @Test func namesFollowTheRule() {
        #expect(Names.isValid("vm1"))
        #expect(Names.isValid("a.b_c-D9"))
        #expect(Names.isValid(String(repeating: "x", count: 64)))
        #expect(!Names.isValid(String(repeating: "x", count: 65)))
        #expect(!Names.isValid(""))
        #expect(!Names.isValid("a@b"))
        #expect(!Names.isValid("a/b"))
        #expect(!Names.isValid(".."))
        #expect(!Names.isValid("vm 1"))
        #expect(Names.split("vm1@snap") == ("vm1", "snap"))
        #expect(Names.split("vm1").snapshot == nil)
    }
}

extension SeededRandom {
    func bytesForTest(_ count: Int) -> [UInt8] {
        var copy = self
        return copy.bytes(count)
    }
}
