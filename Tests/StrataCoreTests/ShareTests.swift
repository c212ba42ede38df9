// In-pool copies (`Pool.copy`, `Pool.shareChunks`), the engine under EXTENDED COPY. The model
// test runs the model sequences of ModelTests with copies mixed in (aligned ones share chunks,
// unaligned ones move bytes; sources are volumes and snapshots, targets other volumes or the
// source itself, overlapping), each followed now and then by a write into the source or the
// target range, so the copy-on-write of a shared chunk is exercised from both sides, then by
// snapshots, deletes, rollbacks and crashes. After every step the pool is committed and
// `Pool.check` must be clean: a shared chunk whose entry still looked exclusive on either side
// is exactly what check reports ("mapping marked exclusive but its chunk is shared").

import Foundation
import StrataCore
import StrataTesting
import Testing

extension ModelRun {
    /// Copies a random range from a volume or snapshot to a volume, in engine and model.
    func doCopy() throws {
        let fromSnapshot = self.random.next(below: 3) == 0 ? self.pickSnapshot() : nil
        guard let targetName = self.pickVolume(), let targetImage = self.model.volumes[targetName] else { return }
        let sourceName: String
        let sourceImage: ModelImage
        if let (volume, snapshot) = fromSnapshot {
            sourceName = "\(volume)@\(snapshot)"
            sourceImage = self.model.snapshots[volume]![snapshot]!
        } else {
            sourceName = self.random.next(below: 4) == 0 ? targetName : (self.pickVolume() ?? targetName)
            sourceImage = self.model.volumes[sourceName]!
        }
        let aligned = self.random.next(below: 4) != 0
        let limit = min(sourceImage.size, targetImage.size)
        let length: UInt64 =
            aligned
            ? UInt64(1 + self.random.next(below: 8)) * Self.chunk
            : UInt64(1 + self.random.next(below: 40)) * 512
        guard length <= limit else { return }
        let unit: UInt64 = aligned ? Self.chunk : 512
        let sourceOffset = UInt64(self.random.next(below: Int((sourceImage.size - length) / unit) + 1)) * unit
        let targetOffset = UInt64(self.random.next(below: Int((targetImage.size - length) / unit) + 1)) * unit
        let source = try self.pool.handle(sourceName)
        let target = try self.pool.handle(targetName)
        self.log.append("copy \(sourceName) \(sourceOffset) -> \(targetName) \(targetOffset) +\(length)")
        let bytes = Self.read(sourceImage, at: sourceOffset, count: Int(length))
        let result = Result { () throws(StrataError) -> CopyReport in
            try self.pool.copy(from: source, at: sourceOffset, to: target, at: targetOffset, length: length)
        }
        if case .success(let report) = result {
            if report.sharedBytes > 0 { self.counts["shared", default: 0] += 1 }
            if report.copiedBytes > 0 { self.counts["copied", default: 0] += 1 }
            if report.sharedBytes > 0 && fromSnapshot != nil { self.counts["shared from snapshot", default: 0] += 1 }
            if report.sharedBytes > 0 && sourceName == targetName { self.counts["shared within a volume", default: 0] += 1 }
        }
        try self.settle(result.map { _ in () }, name: targetName, handle: target, offset: targetOffset, bytes: bytes)
        guard case .success = result, self.random.next(below: 2) == 0 else { return }
        // Write into one side of the copy at once: the shared chunk must be copied, not written in place.
        let writeSource = fromSnapshot == nil && self.random.next(below: 2) == 0
        let name = writeSource ? sourceName : targetName
        let offset = (writeSource ? sourceOffset : targetOffset) + UInt64(self.random.next(below: Int(length / 512))) * 512
        let count = Int(min(UInt64(1 + self.random.next(below: 16)) * 512, (writeSource ? sourceOffset : targetOffset) + length - offset))
        let data = self.random.bytes(count)
        self.log.append("write after copy \(name) \(offset)+\(count)")
        self.counts[writeSource ? "source written after copy" : "target written after copy", default: 0] += 1
        let handle = try self.pool.handle(name)
        let written = Result { () throws(StrataError) in try self.pool.write(handle, at: offset, data) }
        try self.settle(written, name: name, handle: handle, offset: offset, bytes: data)
    }
}

@Suite struct ShareTests {
    @Test func copiesMatchTheModelWithCheckCleanAfterEveryStep() throws {
        let seeds = SimSeeds.list(count: 300, salt: 0x5EED_0015)
        var totals: [String: Int] = [:]
        defer {
            print("share model totals:", totals.sorted { $0.key < $1.key })
            if seeds.count > 1 {
                for outcome in [
                    "shared", "copied", "shared from snapshot", "shared within a volume", "source written after copy",
                    "target written after copy", "crash", "pool full",
                ] {
                    #expect(totals[outcome, default: 0] > 0, "no sequence reached '\(outcome)'")
                }
            }
        }
        for seed in seeds {
            let run = try ModelRun(seed: seed)
            do {
                for index in 0..<48 {
                    if run.random.next(below: 3) == 0 {
                        run.step = index
                        try run.doCopy()
                    } else {
                        try run.step(index)
                    }
                    try run.pool.flush()
                    run.durable = run.model
                    try run.verifyCheck("after step \(index)")
                    try run.verifyAll()
                }
                totals.merge(run.counts, uniquingKeysWith: +)
            } catch let failure as ModelFailure {
                Issue.record(Comment(rawValue: failure.description))
                return
            } catch {
                Issue.record(Comment(rawValue: run.fail("unexpected error: \(error)").description))
                return
            }
        }
    }

    /// A pool of 4 KiB chunks with two 1 MiB volumes, `a` full of data.
    static func twoVolumes() throws -> (SimDevice, Pool, VolumeHandle, VolumeHandle, [UInt8]) {
        let device = SimDevice(size: 2048 * 4096 + 1024 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 2048)
        let pool = try Pool(device: device)
        try pool.createVolume("a", size: 1 << 20)
        try pool.createVolume("b", size: 1 << 20)
        let a = try pool.handle("a")
        var random = SeededRandom(seed: 15)
        let data = random.bytes(1 << 20)
        try pool.write(a, at: 0, data)
        try pool.flush()
        return (device, pool, a, try pool.handle("b"), data)
    }

    @Test func alignedCopyAllocatesNothingAndWritesStaySeparate() throws {
        let (device, pool, a, b, data) = try Self.twoVolumes()
        let before = pool.status().dataUsedBytes
        let report = try pool.copy(from: a, at: 0, to: b, at: 0, length: 1 << 20)
        #expect(report == CopyReport(sharedBytes: 1 << 20, copiedBytes: 0))
        #expect(pool.status().dataUsedBytes == before)
        #expect(try pool.read(b, at: 0, count: 1 << 20) == data)
        // The source was written after the copy: the target keeps the old bytes, and the reverse.
        try pool.write(a, at: 4096, [UInt8](repeating: 0xaa, count: 512))
        try pool.write(b, at: 8192, [UInt8](repeating: 0xbb, count: 512))
        #expect(try pool.read(b, at: 4096, count: 512) == Array(data[4096..<4608]))
        #expect(try pool.read(a, at: 8192, count: 512) == Array(data[8192..<8704]))
        #expect(pool.status().dataUsedBytes == before + 2 * 4096)
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        // Deleting the source leaves the target whole.
        try pool.deleteVolume("a")
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        var expected = data
        expected.replaceSubrange(8192..<8704, with: [UInt8](repeating: 0xbb, count: 512))
        #expect(try pool.read(b, at: 0, count: 1 << 20) == expected)
    }

    @Test func unalignedEdgesAreCopiedAndTheMiddleShared() throws {
        let (_, pool, a, b, data) = try Self.twoVolumes()
        let report = try pool.copy(from: a, at: 1024, to: b, at: 5120, length: 3 * 4096 + 512)
        #expect(report == CopyReport(sharedBytes: 2 * 4096, copiedBytes: 4096 + 512))
        #expect(try pool.read(b, at: 5120, count: 3 * 4096 + 512) == Array(data[1024..<(1024 + 3 * 4096 + 512)]))
        // Different places inside a chunk cannot share: everything is copied.
        let moved = try pool.copy(from: a, at: 512, to: b, at: 65536, length: 8192)
        #expect(moved == CopyReport(sharedBytes: 0, copiedBytes: 8192))
        #expect(try pool.read(b, at: 65536, count: 8192) == Array(data[512..<(512 + 8192)]))
    }

    @Test func refusals() throws {
        let (_, pool, a, b, _) = try Self.twoVolumes()
        try pool.createSnapshot("a", "s")
        let snapshot = try pool.handle("a@s")
        func code(_ body: () throws(StrataError) -> Void) -> StrataError.Code? {
            do throws(StrataError) { try body() } catch { return error.code }
            return nil
        }
        #expect(code { () throws(StrataError) in try pool.copy(from: a, at: 0, to: snapshot, at: 0, length: 4096) } == .readOnly)
        #expect(code { () throws(StrataError) in try pool.copy(from: a, at: 0, to: b, at: (1 << 20) - 512, length: 1024) } == .invalidArgument)
        #expect(code { () throws(StrataError) in try pool.copy(from: a, at: (1 << 20) - 512, to: b, at: 0, length: 1024) } == .invalidArgument)
        #expect(code { () throws(StrataError) in try pool.shareChunks(from: a, at: 512, to: b, at: 512, length: 4096) } == .invalidArgument)
        // From the snapshot: allowed, and the snapshot's data arrives.
        #expect(code { () throws(StrataError) in try pool.shareChunks(from: snapshot, at: 0, to: b, at: 0, length: 4096) } == nil)
    }
}
