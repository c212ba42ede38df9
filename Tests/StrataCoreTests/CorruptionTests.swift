// Corrupted metadata is data, not a crash: flip random bytes in random pages the last commit
// uses; opening, reading and checking must never trap, and `check` must name the page.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct CorruptionTests {
    /// A pool with volumes, snapshots and a clone, committed; and every page it uses.
    func populatedPool() throws -> (SimDevice, [UInt64]) {
        let device = SimDevice(size: 512 * 4096 + 2048 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 512)
        let pool = try Pool(device: device)
        var random = SeededRandom(seed: 99)
        try pool.createVolume("vm1", size: 4 << 20)
        try pool.createVolume("big", size: 400 << 20)
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
                report.problems.contains { $0.page == page || $0.description.contains("page \(page)") },
                "trial \(trial): report does not name page \(page): \(report.problems.prefix(3))")
            // Opening and reading everything either works or throws; it never traps.
            guard let pool = try? Pool(device: image) else { continue }
            for volume in (try? pool.listVolumes()) ?? [] {
                guard let handle = try? pool.handle(volume.name) else { continue }
                _ = try? pool.read(handle, at: 0, count: Int(min(volume.sizeBytes, 4 << 20)))
            }
            for snapshot in (try? pool.listSnapshots()) ?? [] {
                _ = try? pool.diff(from: "\(snapshot.volume)@\(snapshot.name)", to: snapshot.volume)
            }
        }
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
