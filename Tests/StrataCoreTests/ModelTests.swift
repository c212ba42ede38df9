// Model-based randomized test of the engine (TigerBeetle's and sled's habit): thousands of
// seeded sequences of write, trim, zero, read, snapshot, clone, delete, resize, rename,
// rollback, flush and crash-and-reopen on small volumes, each step compared with a plain
// in-memory model of every volume and snapshot. Volumes are tiny and the pool is small, so
// chunks collide, trees share nodes, and the pool fills up. A failure prints the seed and
// the command that replays it.

import Foundation
import StrataCore
import StrataTesting
import Testing

/// The model of one volume or snapshot: size and the non-zero chunks' bytes.
struct ModelImage: Equatable {
    var size: UInt64
    var chunks: [UInt64: [UInt8]] = [:]
}

/// The model of a whole pool: volumes by name, each with its snapshots.
struct ModelPool: Equatable {
    var volumes: [String: ModelImage] = [:]
    var snapshots: [String: [String: ModelImage]] = [:]
}

struct ModelFailure: Error, CustomStringConvertible {
    let description: String
}

final class ModelRun {
    static let chunk: UInt64 = 4096
    let seed: UInt64
    var random: SeededRandom
    var device: SimDevice
    var pool: Pool
    var model = ModelPool()
    var durable = ModelPool()
    var step = 0
    var log: [String] = []
    /// Since the last durable point: each volume's name then (by its name now), and the chunk
    /// contents written since into it (ModelTests+Crash.swift).
    var durableName: [String: String] = [:]
    var writtenSinceDurable: [String: [UInt64: [[UInt8]]]] = [:]
    var afterTornCrash = false
    /// How often each interesting outcome happened, so the suite can prove it reached them.
    var counts: [String: Int] = [:]

    init(seed: UInt64) throws {
        self.seed = seed
        self.random = SeededRandom(seed: seed)
        // 512 metadata pages and 48 data chunks of 4 KiB: small enough to fill.
        self.device = SimDevice(size: 512 * 4096 + 48 * Self.chunk)
        // Half the seeds punch holes (fresh chunks read as zeros), half keep old bytes.
        self.device.discardZeroes = seed % 2 == 0
        try Pool.format(device: self.device, chunkSize: Self.chunk, metadataPages: 512)
        self.pool = try Pool(device: self.device)
    }

    /// The model's state is durable now: the pool committed it.
    func markDurable() {
        self.durable = self.model
        self.durableName = Dictionary(uniqueKeysWithValues: self.model.volumes.keys.map { ($0, $0) })
        self.writtenSinceDurable.removeAll()
    }

    func fail(_ message: String) -> ModelFailure {
        ModelFailure(
            description:
                "seed=\(self.seed) step=\(self.step): \(message)\nlast steps: \(self.log.suffix(ProcessInfo.processInfo.environment["STRATA_TRACE"] == nil ? 8 : 10_000).joined(separator: "; "))\nreplay: STRATA_SEED=\(self.seed) swift test --filter ModelTests"
        )
    }

    // MARK: Model helpers

    static func read(_ image: ModelImage, at offset: UInt64, count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var position = offset
        while position < offset + UInt64(count) {
            let index = position / Self.chunk
            let inside = Int(position % Self.chunk)
            let length = min(Int(Self.chunk) - inside, Int(offset + UInt64(count) - position))
            if let bytes = image.chunks[index] {
                let start = Int(position - offset)
                result.replaceSubrange(start..<(start + length), with: bytes[inside..<(inside + length)])
            }
            position += UInt64(length)
        }
        return result
    }

    static func write(_ image: inout ModelImage, at offset: UInt64, _ bytes: [UInt8]) {
        var position = offset
        while position < offset + UInt64(bytes.count) {
            let index = position / Self.chunk
            let inside = Int(position % Self.chunk)
            let length = min(Int(Self.chunk) - inside, Int(offset + UInt64(bytes.count) - position))
            var chunk = image.chunks[index] ?? [UInt8](repeating: 0, count: Int(Self.chunk))
            let start = Int(position - offset)
            chunk.replaceSubrange(inside..<(inside + length), with: bytes[start..<(start + length)])
            image.chunks[index] = chunk.allSatisfy { $0 == 0 } ? nil : chunk
            position += UInt64(length)
        }
    }

    static func resize(_ image: inout ModelImage, to size: UInt64) {
        if size < image.size {
            let keep = (size + Self.chunk - 1) / Self.chunk
            image.chunks = image.chunks.filter { $0.key < keep }
            if size % Self.chunk != 0, var last = image.chunks[keep - 1] {
                let inside = Int(size % Self.chunk)
                for index in inside..<Int(Self.chunk) { last[index] = 0 }
                image.chunks[keep - 1] = last.allSatisfy { $0 == 0 } ? nil : last
            }
        }
        image.size = size
    }

    // MARK: Steps

    func randomSize() -> UInt64 {
        // Mostly small; sometimes big and sparse, which makes trees 2 and 3 levels deep.
        switch self.random.next(below: 10) {
        case 0: return 300 << 20
        case 1, 2: return 2 << 20
        default: return UInt64(1 + self.random.next(below: 64)) * 4096 + UInt64(self.random.next(below: 8)) * 512
        }
    }

    func randomRange(size: UInt64) -> (UInt64, Int) {
        let sectors = size / 512
        // Cluster offsets in a few windows so writes collide.
        let window = UInt64(self.random.next(below: 4)) * (sectors / 4)
        let start = min(window + UInt64(self.random.next(below: 24)), sectors - 1)
        let longest = self.random.next(below: 8) == 0 ? 96 : 20
        let length = min(UInt64(1 + self.random.next(below: longest)), sectors - start)
        return (start * 512, Int(length * 512))
    }

    func pickVolume() -> String? {
        self.model.volumes.keys.sorted().randomElement(using: &self.random)
    }

    func pickSnapshot() -> (String, String)? {
        let all = self.model.snapshots.flatMap { volume, snapshots in snapshots.keys.map { (volume, $0) } }
        return all.sorted { $0.0 + "@" + $0.1 < $1.0 + "@" + $1.1 }.randomElement(using: &self.random)
    }

    func freshName(_ prefix: String) -> String { "\(prefix)\(self.random.next(below: 6))" }

    /// Runs one random step against engine and model.
    func step(_ index: Int) throws {
        self.step = index
        let generation = self.pool.committedGeneration
        let before = self.model.volumes
        try self.randomStep()
        self.noteWritten(since: before)
        // A write that finds the pool full commits to reuse freed chunks. Make that commit's
        // point the model's durable state (crashes in the middle of one write are the crash
        // simulation's job).
        let committing = ["flush", "crash", "torn crash"].contains { self.log.last?.hasPrefix($0) == true }
        if self.pool.committedGeneration != generation && !committing {
            self.counts["commit on full", default: 0] += 1
            try self.pool.flush()
            self.markDurable()
        }
    }

    func randomStep() throws {
        let choice = self.random.next(below: 100)
        switch choice {
        case 0..<30: try self.doWrite()
        case 30..<36: try self.doZero(trim: true)
        case 36..<39: try self.doZero(trim: false)
        case 39..<48: try self.doRead()
        case 48..<56: try self.doSnapshot()
        case 56..<61: try self.doDeleteSnapshot()
        case 61..<65: try self.doClone()
        case 65..<71: try self.doCreate()
        case 71..<74: try self.doDeleteVolume()
        case 74..<78: try self.doResize()
        case 78..<80: try self.doRename()
        case 80..<84: try self.doRollback()
        case 84..<92: try self.doFlush()
        default:
            switch self.random.next(below: 3) {
            case 0: try self.doCrash()
            case 1: try self.doTornCrash()
            default: try self.doReceive()
            }
        }
    }

    func expectError(_ code: StrataError.Code, _ what: String, _ body: () throws(StrataError) -> Void) throws {
        do throws(StrataError) {
            try body()
        } catch {
            guard error.code == code else { throw self.fail("\(what): expected \(code), got \(error.code): \(error.message)") }
            return
        }
        throw self.fail("\(what): expected \(code), succeeded")
    }

    func doCreate() throws {
        let name = self.freshName("v")
        let size = self.randomSize()
        self.log.append("create \(name) \(size)")
        if self.model.volumes[name] != nil {
            try self.expectError(.alreadyExists, "create existing \(name)") { () throws(StrataError) in
                try self.pool.createVolume(name, size: size)
            }
            return
        }
        try self.pool.createVolume(name, size: size)
        self.model.volumes[name] = ModelImage(size: size)
    }

    func doWrite() throws {
        guard let name = self.pickVolume(), let image = self.model.volumes[name] else {
            try self.doCreate()
            return
        }
        let handle = try self.pool.handle(name)
        if self.random.next(below: 20) == 0 {
            try self.writePastEnd(handle, size: image.size)
            return
        }
        let (offset, count) = self.randomRange(size: image.size)
        // Sometimes zeros, sometimes a repeated byte (so copy-on-write of equal data is tested).
        let bytes: [UInt8] =
            self.random.next(below: 8) == 0
            ? [UInt8](repeating: UInt8(self.random.next(below: 256)), count: count) : self.random.bytes(count)
        self.log.append("write \(name) \(offset)+\(count)")
        let fua = self.random.next(below: 30) == 0
        if fua { self.log.append("(fua)") }
        let result = Result { () throws(StrataError) in try self.pool.write(handle, at: offset, bytes, fua: fua) }
        try self.settle(result, name: name, handle: handle, offset: offset, bytes: bytes)
        // A FUA write commits the whole pool, as a flush does.
        if fua, case .success = result { self.markDurable() }
    }

    func writePastEnd(_ handle: VolumeHandle, size: UInt64) throws {
        // Past the end: refused, nothing changes.
        self.log.append("write past end \(handle.name)")
        let pool = self.pool
        try self.expectError(.invalidArgument, "write past end of \(handle.name)") { () throws(StrataError) in
            try pool.write(handle, at: size - 512, [UInt8](repeating: 1, count: 1024))
        }
    }

    /// Applies a write's outcome to the model: success writes the bytes; pool full leaves each
    /// chunk of the range with either its old or its new bytes; anything else fails the run.
    func settle(
        _ result: Result<Void, StrataError>, name: String, handle: VolumeHandle, offset: UInt64, bytes: [UInt8]
    ) throws {
        switch result {
        case .success:
            if self.afterTornCrash { self.counts["write after a torn crash", default: 0] += 1 }
            var image = self.model.volumes[name]!
            Self.write(&image, at: offset, bytes)
            self.model.volumes[name] = image
        case .failure(let error) where error.code == .noSpace:
            self.counts["pool full", default: 0] += 1
            try self.reconcile(name: name, handle: handle, offset: offset, bytes: bytes)
        case .failure(let error):
            throw error
        }
    }

    func reconcile(name: String, handle: VolumeHandle, offset: UInt64, bytes: [UInt8]) throws {
        var position = offset
        let end = offset + UInt64(bytes.count)
        while position < end {
            let length = min(Self.chunk - position % Self.chunk, end - position)
            let actual = try self.pool.read(handle, at: position, count: Int(length))
            let old = Self.read(self.model.volumes[name]!, at: position, count: Int(length))
            let new = Array(bytes[Int(position - offset)..<Int(position - offset + length)])
            guard actual == old || actual == new else {
                throw self.fail("after pool-full write to \(name) at \(position): neither old nor new bytes")
            }
            var image = self.model.volumes[name]!
            Self.write(&image, at: position, actual)
            self.model.volumes[name] = image
            position += length
        }
    }

    func doZero(trim: Bool) throws {
        guard let name = self.pickVolume(), let image = self.model.volumes[name] else { return }
        let handle = try self.pool.handle(name)
        var (offset, count) = self.randomRange(size: image.size)
        if self.random.next(below: 2) == 0 {
            // Chunk-aligned so whole chunks are unmapped.
            offset = offset / Self.chunk * Self.chunk
            count = min(Int(Self.chunk) * (1 + self.random.next(below: 3)), Int(image.size - offset))
        }
        self.log.append("\(trim ? "trim" : "zero") \(name) \(offset)+\(count)")
        let result = Result { () throws(StrataError) in
            try self.pool.writeZeroes(handle, at: offset, length: UInt64(count), allowTrim: trim)
        }
        try self.settle(result, name: name, handle: handle, offset: offset, bytes: [UInt8](repeating: 0, count: count))
    }

    func doRead() throws {
        if self.random.next(below: 3) == 0, let (volume, snapshot) = self.pickSnapshot() {
            let image = self.model.snapshots[volume]![snapshot]!
            let handle = try self.pool.handle("\(volume)@\(snapshot)")
            let (offset, count) = self.randomRange(size: image.size)
            self.log.append("read \(volume)@\(snapshot) \(offset)+\(count)")
            guard try self.pool.read(handle, at: offset, count: count) == Self.read(image, at: offset, count: count) else {
                throw self.fail("read \(volume)@\(snapshot) at \(offset)+\(count) differs from the model")
            }
            try self.expectError(.readOnly, "write to snapshot") { () throws(StrataError) in
                try self.pool.write(handle, at: 0, [UInt8](repeating: 1, count: 512))
            }
            return
        }
        guard let name = self.pickVolume(), let image = self.model.volumes[name] else { return }
        let handle = try self.pool.handle(name)
        let (offset, count) = self.randomRange(size: image.size)
        self.log.append("read \(name) \(offset)+\(count)")
        guard try self.pool.read(handle, at: offset, count: count) == Self.read(image, at: offset, count: count) else {
            throw self.fail("read \(name) at \(offset)+\(count) differs from the model")
        }
    }

    func doSnapshot() throws {
        guard let name = self.pickVolume() else { return }
        let snapshot = self.freshName("s")
        self.log.append("snapshot \(name)@\(snapshot)")
        if self.model.snapshots[name]?[snapshot] != nil {
            try self.expectError(.alreadyExists, "duplicate snapshot") { () throws(StrataError) in
                try self.pool.createSnapshot(name, snapshot)
            }
            return
        }
        try self.pool.createSnapshot(name, snapshot)
        self.model.snapshots[name, default: [:]][snapshot] = self.model.volumes[name]!
    }

    func doDeleteSnapshot() throws {
        guard let (volume, snapshot) = self.pickSnapshot() else { return }
        self.log.append("delete snapshot \(volume)@\(snapshot)")
        try self.pool.deleteSnapshot(volume, snapshot)
        self.model.snapshots[volume]![snapshot] = nil
    }

    func doClone() throws {
        guard let (volume, snapshot) = self.pickSnapshot() else { return }
        let name = self.freshName("c")
        self.log.append("clone \(volume)@\(snapshot) \(name)")
        if self.model.volumes[name] != nil {
            try self.expectError(.alreadyExists, "clone onto existing") { () throws(StrataError) in
                try self.pool.clone(volume, snapshot, to: name)
            }
            return
        }
        try self.pool.clone(volume, snapshot, to: name)
        self.counts["clone", default: 0] += 1
        self.model.volumes[name] = self.model.snapshots[volume]![snapshot]!
    }

    func doDeleteVolume() throws {
        guard let name = self.pickVolume() else { return }
        let hasSnapshots = !(self.model.snapshots[name] ?? [:]).isEmpty
        let recursive = self.random.next(below: 2) == 0
        self.log.append("delete \(name) recursive=\(recursive)")
        if hasSnapshots && !recursive {
            try self.expectError(.busy, "delete volume with snapshots") { () throws(StrataError) in
                try self.pool.deleteVolume(name)
            }
            return
        }
        try self.pool.deleteVolume(name, recursive: recursive)
        self.model.volumes[name] = nil
        self.durableName[name] = nil
        self.model.snapshots[name] = nil
    }

    func doResize() throws {
        guard let name = self.pickVolume(), let image = self.model.volumes[name] else { return }
        let size = self.randomSize()
        self.log.append("resize \(name) \(image.size)->\(size)")
        if size < image.size && self.random.next(below: 4) == 0 {
            try self.expectError(.invalidArgument, "shrink without permission") { () throws(StrataError) in
                try self.pool.resizeVolume(name, size: size)
            }
            return
        }
        let result = Result { () throws(StrataError) in try self.pool.resizeVolume(name, size: size, allowShrink: true) }
        if case .failure(let error) = result {
            // Zeroing the new last chunk may need a chunk a full pool does not have.
            guard error.code == .noSpace else { throw error }
            self.log.append("resize refused: \(error.message)")
            return
        }
        var resized = image
        Self.resize(&resized, to: size)
        self.model.volumes[name] = resized
    }

    func doRename() throws {
        guard let name = self.pickVolume() else { return }
        let target = self.freshName("v")
        self.log.append("rename \(name) \(target)")
        if self.model.volumes[target] != nil {
            try self.expectError(.alreadyExists, "rename onto existing") { () throws(StrataError) in
                try self.pool.renameVolume(name, to: target)
            }
            return
        }
        try self.pool.renameVolume(name, to: target)
        self.model.volumes[target] = self.model.volumes.removeValue(forKey: name)
        self.model.snapshots[target] = self.model.snapshots.removeValue(forKey: name)
        self.durableName[target] = self.durableName.removeValue(forKey: name)
    }

    func doRollback() throws {
        guard let (volume, snapshot) = self.pickSnapshot() else { return }
        self.log.append("rollback \(volume)@\(snapshot)")
        try self.pool.rollback(volume, snapshot)
        self.counts["rollback", default: 0] += 1
        self.model.volumes[volume] = self.model.snapshots[volume]![snapshot]!
    }

    func doFlush() throws {
        self.log.append("flush")
        try self.pool.flush()
        self.markDurable()
    }

    func doCrash() throws {
        self.log.append("crash")
        self.counts["crash", default: 0] += 1
        var generator = self.random
        self.device = self.device.crashImage(mode: .dropUnsynced, using: &generator)
        self.random = generator
        try self.verifyCheck("after crash")
        self.pool = try Pool(device: self.device)
        self.model = self.durable
        self.markDurable()
        try self.verifyAll()
    }

    // MARK: Verification

    func verifyCheck(_ when: String) throws {
        let report = Pool.check(device: self.device)
        guard report.clean else {
            throw self.fail("check \(when): \(report.problems.prefix(5).map(\.description).joined(separator: "; "))")
        }
    }

    func verify(_ target: String, _ image: ModelImage) throws {
        let handle = try self.pool.handle(target)
        guard try self.pool.size(of: handle) == image.size else {
            throw self.fail("\(target): size \(try self.pool.size(of: handle)) != model \(image.size)")
        }
        var chunks = Set(image.chunks.keys)
        for extent in try self.pool.mapping(handle, at: 0, length: image.size) where extent.mapped {
            var offset = extent.offset / Self.chunk
            while offset * Self.chunk < extent.offset + extent.length {
                chunks.insert(offset)
                offset += 1
            }
        }
        for index in chunks.sorted() {
            let offset = index * Self.chunk
            let count = Int(min(Self.chunk, image.size - offset))
            guard try self.pool.read(handle, at: offset, count: count) == Self.read(image, at: offset, count: count) else {
                throw self.fail("\(target): chunk \(index) differs from the model")
            }
        }
    }

    /// Compares the pool with the model: volume names, snapshots, and every byte (volumes' only
    /// with `volumeContent`).
    func verifyAll(volumeContent: Bool = true) throws {
        let volumes = try self.pool.listVolumes()
        guard volumes.map(\.name) == self.model.volumes.keys.sorted() else {
            throw self.fail("volumes \(volumes.map(\.name)) != model \(self.model.volumes.keys.sorted())")
        }
        let snapshots = try self.pool.listSnapshots().map { "\($0.volume)@\($0.name)" }.sorted()
        let expected = self.model.snapshots.flatMap { volume, names in names.keys.map { "\(volume)@\($0)" } }.sorted()
        guard snapshots == expected else { throw self.fail("snapshots \(snapshots) != model \(expected)") }
        for (name, image) in self.model.volumes where volumeContent { try self.verify(name, image) }
        for (volume, snapshots) in self.model.snapshots {
            for (snapshot, image) in snapshots { try self.verify("\(volume)@\(snapshot)", image) }
        }
    }
}

@Suite struct ModelTests {
    @Test func randomSequencesMatchTheModel() throws {
        let seeds = SimSeeds.list(count: 2000, salt: 0x5EED_0001)
        var totals: [String: Int] = [:]
        defer {
            // The run must have reached every outcome it exists to test (unless replaying one seed).
            print("model totals:", totals.sorted { $0.key < $1.key })
            if seeds.count > 1 {
                for outcome in [
                "pool full", "commit on full", "crash", "clone", "rollback", "torn crash kept the flushed state",
                "torn crash landed the commit", "torn crash after a torn crash", "write after a torn crash",
                "receive", "receive abort", "receive left staged",
            ] {
                    #expect(totals[outcome, default: 0] > 0, "no sequence reached '\(outcome)'")
                }
            }
        }
        for seed in seeds {
            let run = try ModelRun(seed: seed)
            do {
                for index in 0..<64 {
                    try run.step(index)
                    if index % 10 == 9 { try run.verifyAll() }
                }
                try run.verifyAll()
                try run.pool.flush()
                try run.verifyCheck("at the end")
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
}
