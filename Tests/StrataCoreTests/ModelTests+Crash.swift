// Torn-write crashes inside the model test, across every operation it runs: the device dies a
// random number of writes and syncs into a flush that commits whatever the sequence did since
// the last durable point (writes, trims, snapshots, clones, rollbacks, resizes, renames, deletes,
// receives and aborts), and the crash image keeps, drops or tears per 512-byte sector each write
// not yet synced (SimDevice.crashImage(.random)). After reopening with no repair, `check` must
// be clean and the pool must be one of two states as a whole, never a mix:
// - the in-flight commit's: every volume, size, snapshot and byte exactly the model's; or
// - the flushed one's: the flushed volumes, sizes and snapshots exactly, each snapshot byte for
//   byte, and each volume sector holding its flushed bytes or bytes written into that volume
//   since (an in-place write reaches the chunk before any commit, as it would on a disk).
// The sequence then goes on from the recovered state, so writes after recovery and second
// crashes are part of it.

import Foundation
import StrataCore
import StrataTesting

extension ModelRun {
    /// Records the chunks each volume's content changed in during the last step, when that step
    /// wrote data (write, zero, trim, resize): the bytes a crash may leave in the flushed volume.
    func noteWritten(since before: [String: ModelImage]) {
        guard let last = self.log.last, ["write", "zero", "trim", "resize"].contains(where: last.hasPrefix) else { return }
        for (name, image) in self.model.volumes {
            guard let durable = self.durableName[name] else { continue }
            let old = before[name]?.chunks ?? [:]
            for (index, bytes) in image.chunks where old[index] != bytes {
                self.writtenSinceDurable[durable, default: [:]][index, default: []].append(bytes)
            }
            for index in old.keys where image.chunks[index] == nil {
                self.writtenSinceDurable[durable, default: [:]][index, default: []].append(
                    [UInt8](repeating: 0, count: Int(Self.chunk)))
            }
        }
    }

    /// A full receive into a fresh volume: finished (a volume with one snapshot), aborted, or
    /// left staged (an interrupted stream); the last two leave the model unchanged.
    func doReceive() throws {
        let name = self.freshName("r")
        guard self.model.volumes[name] == nil else { return }
        if self.pool.receiveStaging(name) != nil {
            self.log.append("abort earlier receive \(name)")
            try self.pool.abortReceive(name)
        }
        let size = UInt64(1 + self.random.next(below: 8)) * Self.chunk
        let target = StrataGUID(high: self.random.next(), low: self.random.next())
        self.log.append("receive \(name) \(size)")
        let staging = try self.pool.beginReceive(name, snapshot: "rs", base: .zero, target: target, size: size, force: false)
        var image = ModelImage(size: size)
        let (offset, count) = self.randomRange(size: size)
        let bytes = self.random.bytes(count)
        let written = Result { () throws(StrataError) in try self.pool.write(staging.handle, at: offset, bytes) }
        if case .failure(let error) = written {
            guard error.code == .noSpace else { throw error }
            self.log.append("receive aborted: pool full")
            try self.pool.abortReceive(name)
            return
        }
        Self.write(&image, at: offset, bytes)
        switch self.random.next(below: 3) {
        case 0:
            self.log.append("receive abort \(name)")
            try self.pool.abortReceive(name)
            self.counts["receive abort", default: 0] += 1
        case 1:
            self.log.append("receive left staged \(name)")
            self.counts["receive left staged", default: 0] += 1
        default:
            try self.pool.finishReceive(name, snapshot: "rs", target: target, createdAtNanos: 1, force: false)
            self.model.volumes[name] = image
            self.model.snapshots[name, default: [:]]["rs"] = image
            self.counts["receive", default: 0] += 1
        }
    }

    /// Crashes the device partway through a flush and checks the recovered pool is the flushed
    /// state or the in-flight commit's state, whole.
    func doTornCrash() throws {
        let budget = self.random.next(below: 48)
        self.log.append("torn crash after \(budget) device operations of a flush")
        self.counts["torn crash", default: 0] += 1
        if self.counts["torn crash", default: 0] > 1 { self.counts["torn crash after a torn crash", default: 0] += 1 }
        self.device.crash(afterOperations: budget)
        let flushed = Result { () throws(StrataError) in try self.pool.flush() }
        var generator = self.random
        self.device = self.device.crashImage(mode: .random, using: &generator)
        self.random = generator
        try self.verifyCheck("after a torn crash (\(flushed))")
        self.pool = try Pool(device: self.device)
        if let inFlight = self.mismatch({ try self.verifyAll() }) {
            guard case .failure(let error) = flushed else {
                throw self.fail("the flush succeeded but the pool is not the model after the crash: \(inFlight)")
            }
            if let flushedState = self.mismatch(self.verifyFlushedState) {
                throw self.fail(
                    "after a torn crash (flush: \(error.message)) the pool is neither the in-flight commit's state "
                        + "(\(inFlight)) nor the flushed one (\(flushedState))")
            }
            self.counts["torn crash kept the flushed state", default: 0] += 1
        } else {
            self.counts["torn crash landed the commit", default: 0] += 1
        }
        self.markDurable()
        self.afterTornCrash = true
    }

    /// The failure `check` reports, or nil when it passes.
    func mismatch(_ check: () throws -> Void) -> String? {
        do {
            try check()
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// The pool holds the flushed state: names, sizes and snapshots exact, volumes sector by
    /// sector flushed or written since. The model becomes what the volumes hold.
    func verifyFlushedState() throws {
        let saved = self.model
        self.model = self.durable
        do {
            try self.verifyAll(volumeContent: false)
            for (name, image) in self.durable.volumes {
                self.model.volumes[name] = try self.verifySectors(name, image, written: self.writtenSinceDurable[name] ?? [:])
            }
        } catch {
            self.model = saved
            throw error
        }
    }

    func verifySectors(_ name: String, _ image: ModelImage, written: [UInt64: [[UInt8]]]) throws -> ModelImage {
        var recovered = ModelImage(size: image.size)
        let handle = try self.pool.handle(name)
        guard try self.pool.size(of: handle) == image.size else {
            throw self.fail("\(name): size \(try self.pool.size(of: handle)) != flushed \(image.size)")
        }
        // Chunks neither flushed, written since, nor mapped read as zeros, as the flushed image says.
        var chunks = Set(image.chunks.keys).union(written.keys)
        for extent in try self.pool.mapping(handle, at: 0, length: image.size) where extent.mapped {
            chunks.formUnion(extent.offset / Self.chunk..<((extent.offset + extent.length + Self.chunk - 1) / Self.chunk))
        }
        for index in chunks.sorted() where index * Self.chunk < image.size {
            let offset = index * Self.chunk
            let count = Int(min(Self.chunk, image.size - offset))
            let actual = try self.pool.read(handle, at: offset, count: count)
            let versions = [Self.read(image, at: offset, count: count)] + (written[index] ?? []).map { Array($0[0..<count]) }
            for sector in stride(from: 0, to: count, by: 512) {
                let end = min(sector + 512, count)
                guard versions.contains(where: { $0[sector..<end] == actual[sector..<end] }) else {
                    throw self.fail("\(name) chunk \(index) sector \(sector / 512): neither flushed nor written since")
                }
            }
            Self.write(&recovered, at: offset, actual)
        }
        return recovered
    }
}
