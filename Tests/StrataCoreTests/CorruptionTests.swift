// Corrupted metadata is data, not a crash: flip random bytes in random pages the last commit
// uses; opening, reading and checking must never trap, and `check` must name the page.
//
// Issue 13: the page was once matched as a substring ("page 1" matched "page 12"), and only
// the first 4 MiB of each volume were read back, so damage deep in the 400 MiB volume's tree
// was never read through. The page is now matched as a whole number and every byte of every
// volume is read back. A debug build reads about 1 GiB of 4 KiB chunks a second, so the 300
// trials use volumes of 4 and 16 MiB (every leaf of them written), and the three-level tree of
// a 400 MiB volume has its own test that damages each of its interior pages and reads it whole.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct CorruptionTests {
    /// Bytes per read when reading a whole volume back.
    static let readPieceBytes = 4 << 20

    /// True when `text` names page `page` as a whole number ("page 1" is not in "page 12").
    static func mentions(_ text: String, page: UInt64) -> Bool {
        text.range(of: "\\bpage \(page)\\b", options: .regularExpression) != nil
    }

    /// Reads every byte of every volume and diffs every snapshot against its volume; each
    /// piece either works or throws. Returns the bytes it asked for, to prove it covered them.
    static func readEverything(_ pool: Pool) -> UInt64 {
        var covered: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: Self.readPieceBytes)
        for volume in (try? pool.listVolumes()) ?? [] {
            guard let handle = try? pool.handle(volume.name) else { continue }
            var offset: UInt64 = 0
            while offset < volume.sizeBytes {
                let count = Int(min(volume.sizeBytes - offset, UInt64(Self.readPieceBytes)))
                buffer.withUnsafeMutableBytes { raw in
                    _ = Result { () throws(StrataError) in
                        try pool.read(handle, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]))
                    }
                }
                offset += UInt64(count)
            }
            covered += offset
        }
        for snapshot in (try? pool.listSnapshots()) ?? [] {
            _ = try? pool.diff(from: "\(snapshot.volume)@\(snapshot.name)", to: snapshot.volume)
        }
        return covered
    }

    /// A pool with volumes, snapshots and a clone, committed; and every page it uses.
    func populatedPool() throws -> (SimDevice, [UInt64]) {
        let device = SimDevice(size: 512 * 4096 + 2048 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 512)
        let pool = try Pool(device: device)
        var random = SeededRandom(seed: 99)
        try pool.createVolume("vm1", size: 4 << 20)
        try pool.createVolume("big", size: 16 << 20)
        for round in 0..<6 {
            for name in ["vm1", "big"] {
                let handle = try pool.handle(name)
                for _ in 0..<20 {
                    let size = try pool.size(of: handle)
                    let offset = UInt64(random.next(below: Int(size / 4096))) * 4096
                    try pool.write(handle, at: offset, random.bytes(4096))
                }
            }
            try pool.createSnapshot("vm1", "s\(round)")
        }
        try pool.clone("vm1", "s2", to: "c1")
        try pool.write(try pool.handle("c1"), at: 8192, random.bytes(4096))
        try pool.flush()
        let used = pool.meta.withReadLock { () -> [UInt64] in
            var pages = (0..<pool.metaRefs.count).filter { pool.metaRefs[$0] > 0 }.map { UInt64($0) }
            for array in [pool.volumes.pages, pool.metaRefs.pages, pool.dataRefs.pages] {
                pages += array.map(\.rawValue)
            }
            return pages + [pool.committed.rawValue % 2]
        }
        return (device, used)
    }

    @Test func flippedBytesAreReportedNeverTrapped() throws {
        let (device, used) = try self.populatedPool()
        #expect(Pool.check(device: device).clean)
        var random = SeededRandom(seed: 2024)
        for trial in 0..<300 {
            let image = device.copy()
            let page = used[random.next(below: used.count)]
            let bytes = try image.read(count: 4096, at: page * 4096)
            var damaged = bytes
            for _ in 0..<(1 + random.next(below: 4)) {
                damaged[random.next(below: 4096)] ^= UInt8(1 + random.next(below: 255))
            }
            image.poke(damaged, at: page * 4096)
            let report = Pool.check(device: image)
            let isSuperblock = page < 2
            if isSuperblock {
                // The other slot holds the previous commit; falling back to it is a valid outcome.
                continue
            }
            #expect(!report.clean, "trial \(trial): damage to page \(page) not reported")
            #expect(
                report.problems.contains { $0.page == page || Self.mentions($0.description, page: page) },
                "trial \(trial): report does not name page \(page): \(report.problems.prefix(3))")
            // Opening and reading everything either works or throws; it never traps.
            guard let pool = try? Pool(device: image) else { continue }
            let sizes = ((try? pool.listVolumes()) ?? []).reduce(UInt64(0)) { $0 + $1.sizeBytes }
            #expect(Self.readEverything(pool) == sizes, "trial \(trial): not every byte was read")
        }
    }

    /// Issue 13 item 5: a mutation that frees a tree (delete, snapshot delete, rollback,
    /// shrink, a forced receive) used to free as it walked, so a damaged leaf met half way left
    /// the open transaction freeing the chunks of the leaves already walked while the volume
    /// still mapped them; the next commit made that durable and the chunks were reused. Each
    /// mutation now reads every node it will free first and fails having changed nothing.
    @Test(arguments: ["delete volume", "delete snapshot", "rollback", "shrink"])
    func aMutationThatMeetsADamagedLeafChangesNothing(operation: String) throws {
        // 4 KiB chunks: 2048 chunks of 8 MiB are 8 leaves; every chunk written.
        let (device, pool) = try SimDevice.formattedPool(metadataPages: 512, dataBytes: 24 << 20)
        try pool.createVolume("vm", size: 8 << 20)
        let handle = try pool.handle("vm")
        var random = SeededRandom(seed: 5)
        let contents = random.bytes(8 << 20)
        try pool.write(handle, at: 0, contents)
        // A shrink frees only what the volume owns alone, so it gets no snapshot.
        if operation != "shrink" { try pool.createSnapshot("vm", "old") }
        if operation == "delete snapshot" || operation == "rollback" {
            // The volume moves on, so the snapshot's leaves (or the volume's) are its own.
            try pool.write(handle, at: 0, random.bytes(8 << 20))
        }
        try pool.flush()
        let victim = operation == "delete snapshot" ? "old" : "vm"
        let record = try #require(pool.meta.withReadLock {
            victim == "old" ? pool.snapshotIDs[handle.id].flatMap { $0["old"] }.flatMap { pool.record(id: $0) } : pool.record(id: handle.id)
        })
        let leaves = try pool.meta.withReadLock { () throws(StrataError) -> [UInt64] in
            try pool.node(record.root.rawValue, level: record.depth - 1).slots.filter { $0 != 0 }
        }
        try #require(record.depth == 2 && leaves.count == 8, "expected 8 leaves under one root: \(leaves)")
        // Damage the last leaf, so the walk frees the others first if it frees as it goes.
        let page = leaves[7]
        var bytes = try device.read(count: 4096, at: page * 4096)
        bytes[100] ^= 0xA5
        device.poke(bytes, at: page * 4096)
        let reopened = try Pool(device: device)
        let before = try reopened.read(try reopened.handle(victim == "old" ? "vm@old" : "vm"), at: 0, count: 7 << 20)
        let outcome = Result { () throws(StrataError) in
            switch operation {
            case "delete volume": try reopened.deleteVolume("vm", recursive: true)
            case "delete snapshot": try reopened.deleteSnapshot("vm", "old")
            case "rollback": try reopened.rollback("vm", "old")
            default: try reopened.resizeVolume("vm", size: 4096, allowShrink: true)
            }
        }
        guard case .failure(let error) = outcome else {
            Issue.record("\(operation) over damaged page \(page) succeeded")
            return
        }
        #expect(error.code == .corrupt, "\(operation): \(error)")
        #expect(Self.mentions(error.message, page: page), "\(operation) does not name page \(page): \(error.message)")
        let context = operation == "shrink" ? "resize volume" : operation
        #expect(error.message.hasPrefix(context), "\(operation): no context: \(error.message)")
        // Commit whatever the failed mutation left, then allocate every free chunk: a chunk
        // wrongly freed would now hold other data.
        try reopened.flush()
        try reopened.createVolume("filler", size: 12 << 20)
        let filler = try reopened.handle("filler")
        for offset in stride(from: UInt64(0), to: 12 << 20, by: 1 << 20) {
            let written = Result { () throws(StrataError) in
                try reopened.write(filler, at: offset, [UInt8](repeating: 0xEE, count: 1 << 20))
            }
            if case .failure(let error) = written {
                #expect(error.code == .noSpace, "filling the pool: \(error)")
                break
            }
        }
        try reopened.flush()
        let after = try reopened.read(try reopened.handle(victim == "old" ? "vm@old" : "vm"), at: 0, count: 7 << 20)
        #expect(after == before, "\(operation): the undamaged leaves' data changed after a failed \(operation)")
        let report = Pool.check(device: device)
        #expect(report.problems.contains { $0.page == page }, "check does not name page \(page)")
    }

    @Test func damagedInteriorPagesOfADeepTreeAreReportedNeverTrapped() throws {
        // 400 MiB of 4 KiB chunks: 102,400 chunks, a tree of three levels.
        let (device, pool) = try SimDevice.formattedPool(metadataPages: 512, dataBytes: 8 << 20)
        try pool.createVolume("deep", size: 400 << 20)
        let handle = try pool.handle("deep")
        var random = SeededRandom(seed: 400)
        for _ in 0..<24 {
            try pool.write(handle, at: UInt64(random.next(below: (400 << 20) / 4096)) * 4096, random.bytes(4096))
        }
        try pool.flush()
        let record = try #require(pool.meta.withReadLock { pool.record(id: handle.id) })
        try #require(record.depth == 3, "the volume's tree has \(record.depth) levels")
        let root = record.root.rawValue
        let children = try pool.meta.withReadLock { () throws(StrataError) in try pool.node(root, level: 2).slots }
        let interior = [root] + children.filter { $0 != 0 }
        try #require(interior.count >= 3, "too few interior pages: \(interior)")
        for page in interior {
            let image = device.copy()
            var bytes = try image.read(count: 4096, at: page * 4096)
            bytes[40 + random.next(below: 2048)] ^= 0x5A
            image.poke(bytes, at: page * 4096)
            let report = Pool.check(device: image)
            #expect(report.problems.contains { $0.page == page || Self.mentions($0.description, page: page) },
                "interior page \(page): not named: \(report.problems.prefix(3))")
            let damaged = try Pool(device: image)
            #expect(Self.readEverything(damaged) == 400 << 20, "interior page \(page): not every byte was read")
        }
    }

    @Test func pagesAreMatchedAsWholeNumbers() {
        #expect(Self.mentions("page 12, volume vm1: bad checksum", page: 12))
        #expect(Self.mentions("metadata page 1: bad checksum", page: 1))
        #expect(Self.mentions("page 7", page: 7))
        #expect(!Self.mentions("page 12, volume vm1: bad checksum", page: 1))
        #expect(!Self.mentions("metadata page 112: bad checksum", page: 12))
    }

    @Test func bothSuperblocksDamagedIsAClearError() throws {
        let (device, _) = try self.populatedPool()
        let image = device.copy()
        image.poke([UInt8](repeating: 0xAB, count: 8192), at: 0)
        #expect(throws: StrataError.self) { try Pool(device: image) }
        let report = Pool.check(device: image)
        #expect(!report.clean)
        #expect(report.problems.first?.message.contains("no valid superblock") == true)
    }
}
