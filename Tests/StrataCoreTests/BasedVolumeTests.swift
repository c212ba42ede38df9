// Based volumes at the engine level, on a simulated pool over a real base file: reads fall
// through to the base, writes and trims keep exactly the bytes a raw copy of the base with the
// same operations would hold, snapshots and clones keep the base, flatten detaches without
// changing a byte, rebase accepts only an identical file, and a changed base fails every read
// through it with an error naming the file.

import Foundation
@testable import StrataCore
import StrataTesting
import Synchronization
import Testing

/// A pool on a simulated device that opens bases as `TestBaseImage`s.
private func basedPool(chunk: UInt64 = 4096, dataChunks: UInt64 = 4096) throws -> (SimDevice, Pool) {
    let device = SimDevice(size: 2048 * 4096 + dataChunks * chunk)
    try Pool.format(device: device, chunkSize: chunk, metadataPages: 2048)
    let pool = try Pool(device: device)
    pool.bases.setOpener { source throws(StrataError) in try TestBaseImage(path: source.path) }
    return (device, pool)
}

/// A temporary directory removed when the value dies.
private final class Scratch {
    let path: String
    init() {
        self.path = NSTemporaryDirectory() + "strata-based-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: self.path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: self.path) }

    /// Writes `bytes` to a file and returns its path.
    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = self.path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

/// Base contents: random data with runs of zero 4 KiB blocks (holes for `TestBaseImage`).
private func baseBytes(_ size: Int, seed: UInt64) -> [UInt8] {
    var random = SeededRandom(seed: seed)
    var bytes = random.bytes(size)
    for block in stride(from: 0, to: size, by: 4096) where random.next(below: 3) == 0 {
        for index in block..<min(block + 4096, size) { bytes[index] = 0 }
    }
    return bytes
}

@Suite struct BasedVolumeTests {
    @Test func aFreshBasedVolumeReadsItsBaseAndReportsItsHoles() throws {
        let scratch = Scratch()
        let bytes = baseBytes(200 * 1024 + 512, seed: 1)
        let path = try scratch.file("base.raw", bytes)
        let (device, pool) = try basedPool()
        try pool.createVolume("vm", size: nil, basePath: path)
        let handle = try pool.handle("vm")
        #expect(try pool.size(of: handle) == UInt64(bytes.count))
        #expect(try pool.read(handle, at: 0, count: bytes.count) == bytes)
        // Block status: data exactly where a 4 KiB block of the base is non-zero.
        let extents = try pool.mapping(handle, at: 0, length: UInt64(bytes.count))
        for block in stride(from: 0, to: bytes.count, by: 4096) {
            let hasData = bytes[block..<min(block + 4096, bytes.count)].contains { $0 != 0 }
            let extent = try #require(extents.first { $0.offset <= UInt64(block) && UInt64(block) < $0.offset + $0.length })
            #expect(extent.mapped == hasData, "block at \(block)")
        }
        #expect(try pool.listVolumes().first?.base == path)
        #expect(try pool.listVolumes().first?.baseProblem == nil)
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        // A larger volume reads zeros past the base.
        try pool.createVolume("big", size: 1 << 20, basePath: path)
        let big = try pool.read(try pool.handle("big"), at: 0, count: 1 << 20)
        #expect(Array(big[0..<bytes.count]) == bytes)
        #expect(big[bytes.count...].allSatisfy { $0 == 0 })
    }

    /// Random writes, zeroes, trims, snapshots, clones, rollbacks and a flatten, against a
    /// model: a raw copy of the base with the same operations applied.
    @Test(arguments: [3, 4, 5, 6] as [UInt64])
    func operationsMatchARawCopyOfTheBase(seed: UInt64) throws {
        let scratch = Scratch()
        let size = 256 * 1024
        let bytes = baseBytes(size, seed: seed)
        let path = try scratch.file("base.raw", bytes)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let (device, pool) = try basedPool()
        try pool.createVolume("vm", size: nil, basePath: path)
        var models: [String: [UInt8]] = ["vm": bytes]
        var random = SeededRandom(seed: seed)
        var snapshots = 0
        for step in 0..<300 {
            let volumes = models.keys.filter { !$0.contains("@") }.sorted()
            let volume = volumes[random.next(below: volumes.count)]
            let handle = try pool.handle(volume)
            let offset = random.next(below: size / 512) * 512
            let length = min((1 + random.next(below: 24)) * 512, size - offset)
            switch random.next(below: 9) {
            case 0, 1, 2:
                let data = random.bytes(length)
                try pool.write(handle, at: UInt64(offset), data)
                models[volume]!.replaceSubrange(offset..<(offset + length), with: data)
            case 3:
                try pool.trim(handle, at: UInt64(offset), length: UInt64(length))
                models[volume]!.replaceSubrange(offset..<(offset + length), with: [UInt8](repeating: 0, count: length))
            case 4:
                try pool.writeZeroes(handle, at: UInt64(offset), length: UInt64(length), allowTrim: false)
                models[volume]!.replaceSubrange(offset..<(offset + length), with: [UInt8](repeating: 0, count: length))
            case 5:
                snapshots += 1
                try pool.createSnapshot(volume, "s\(snapshots)")
                models["\(volume)@s\(snapshots)"] = models[volume]
            case 6:
                let mine = models.keys.filter { $0.hasPrefix(volume + "@") }.sorted()
                guard let snapshot = mine.first, volumes.count < 4 else { continue }
                let name = "c\(step)"
                try pool.clone(volume, Names.split(snapshot).snapshot!, to: name)
                models[name] = models[snapshot]
            case 7:
                let mine = models.keys.filter { $0.hasPrefix(volume + "@") }.sorted()
                guard let snapshot = mine.last else { continue }
                try pool.rollback(volume, Names.split(snapshot).snapshot!)
                models[volume] = models[snapshot]
            default:
                try pool.flush()
            }
        }
        // A flatten in the middle of it all changes no byte of anything.
        try pool.flatten("vm")
        #expect(try pool.base(of: "vm") == nil)
        for (name, model) in models {
            #expect(try pool.read(try pool.handle(name), at: 0, count: size) == model, "seed=\(seed) \(name)")
        }
        try pool.flush()
        #expect(Pool.check(device: device).clean)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, "the base file was written")
    }

    @Test func snapshotsAndClonesKeepTheBaseAndLayersListTheStack() throws {
        let scratch = Scratch()
        let bytes = baseBytes(64 * 1024, seed: 9)
        let path = try scratch.file("golden.raw", bytes)
        let (_, pool) = try basedPool()
        try pool.createVolume("vm", size: nil, basePath: path)
        try pool.write(try pool.handle("vm"), at: 0, [UInt8](repeating: 1, count: 512))
        try pool.createSnapshot("vm", "layer1")
        try pool.write(try pool.handle("vm"), at: 4096, [UInt8](repeating: 2, count: 512))
        try pool.createSnapshot("vm", "layer2")
        try pool.clone("vm", "layer1", to: "test")
        let clone = try pool.read(try pool.handle("test"), at: 0, count: bytes.count)
        var expected = bytes
        expected.replaceSubrange(0..<512, with: [UInt8](repeating: 1, count: 512))
        #expect(clone == expected)
        let layers = try pool.layers(of: "test")
        #expect(layers.map(\.name) == ["test", "vm@layer1", path])
        #expect(layers.map(\.kind) == ["volume", "snapshot", "base"])
        #expect(try pool.layers(of: "vm").map(\.name) == ["vm", "vm@layer2", "vm@layer1", path])
        // Flattening the clone leaves the snapshots on the base.
        try pool.flatten("test")
        #expect(try pool.base(of: "test") == nil)
        #expect(try pool.base(of: "vm@layer1")?.descriptor.path == path)
        #expect(try pool.read(try pool.handle("test"), at: 0, count: bytes.count) == expected)
    }

    @Test func rebaseAcceptsAnIdenticalCopyAndRefusesADifferentFile() throws {
        let scratch = Scratch()
        let bytes = baseBytes(64 * 1024, seed: 12)
        let path = try scratch.file("a.raw", bytes)
        let copy = try scratch.file("copy.raw", bytes)
        var changed = bytes
        changed[40_000] ^= 0xFF
        let other = try scratch.file("other.raw", changed)
        let (_, pool) = try basedPool()
        try pool.createVolume("vm", size: nil, basePath: path)
        // Where the volume no longer reads its base, the new file may differ.
        try pool.write(try pool.handle("vm"), at: 0, [UInt8](repeating: 7, count: 4096))
        let error = #expect(throws: StrataError.self) { try pool.rebase("vm", basePath: other) }
        #expect(error?.byteOffset == 40000, "\(String(describing: error))")
        try pool.write(try pool.handle("vm"), at: 36_864, [UInt8](repeating: 7, count: 4096))
        try pool.rebase("vm", basePath: other)
        #expect(try pool.base(of: "vm")?.descriptor.path == other)
        try pool.rebase("vm", basePath: copy)
        #expect(try pool.base(of: "vm")?.descriptor.path == copy)
    }

    @Test func aChangedOrMissingBaseFailsReadsThroughItNamingTheFile() throws {
        let scratch = Scratch()
        let bytes = baseBytes(64 * 1024, seed: 14)
        let path = try scratch.file("base.raw", bytes)
        let (_, pool) = try basedPool()
        try pool.createVolume("vm", size: nil, basePath: path)
        try pool.createVolume("plain", size: 1 << 20)
        try pool.write(try pool.handle("vm"), at: 0, [UInt8](repeating: 3, count: 4096))
        // Touch the file: same bytes, new modification time. The next check finds it.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 100)
        try handle.write(contentsOf: [bytes[100]])
        try handle.close()
        Thread.sleep(forTimeInterval: Limits.baseRecheckSeconds + 0.1)
        let error = #expect(throws: StrataError.self) { _ = try pool.read(try pool.handle("vm"), at: 8192, count: 4096) }
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains("rebase") == true)
        #expect(try pool.listVolumes().first { $0.name == "vm" }?.baseProblem?.contains("modified") == true)
        // The pool's own chunks of the volume, and every other volume, still serve.
        #expect(try pool.read(try pool.handle("vm"), at: 0, count: 4096) == [UInt8](repeating: 3, count: 4096))
        try pool.write(try pool.handle("plain"), at: 0, [UInt8](repeating: 5, count: 4096))
        try FileManager.default.removeItem(atPath: path)
        Thread.sleep(forTimeInterval: Limits.baseRecheckSeconds + 0.1)
        let missing = #expect(throws: StrataError.self) { _ = try pool.read(try pool.handle("vm"), at: 8192, count: 4096) }
        #expect(missing?.message.contains("missing") == true, "\(String(describing: missing))")
        // Deleting the volume never touches the (missing) base, and drops its descriptor.
        try pool.deleteVolume("vm")
        try pool.flush()
        try pool.collectBases()
        #expect(pool.bases.all.isEmpty)
    }

    @Test func aBasedVolumeCannotShrinkBelowItsBase() throws {
        let scratch = Scratch()
        let path = try scratch.file("base.raw", baseBytes(64 * 1024, seed: 2))
        let (_, pool) = try basedPool()
        try pool.createVolume("vm", size: 1 << 20, basePath: path)
        try pool.resizeVolume("vm", size: 128 * 1024, allowShrink: true)
        let error = #expect(throws: StrataError.self) { try pool.resizeVolume("vm", size: 32 * 1024, allowShrink: true) }
        #expect(error?.message.contains("flatten") == true)
    }
}

/// A `TestBaseImage` with what a real base may add: filling on read in `fillUnitBytes` units, as
/// a remote base does with its objects, or where its bytes lie in its file (`fileRanges`), as a
/// raw base says. It counts what reaches it (`inner.reads`).
private final class WrappedBase: BaseImage {
    let inner: TestBaseImage
    let fillUnitBytes: UInt64?
    /// The file's own descriptor for `fileRange`, or -1 when the base gives no ranges.
    private let fd: Int32
    /// Runs once, in the first read of a whole fill unit (a fill's), before it reads.
    let onUnitRead = Mutex<(@Sendable () -> Void)?>(nil)

    init(_ inner: TestBaseImage, fillUnitBytes: UInt64? = nil, fileRanges: Bool = false) {
        self.inner = inner
        self.fillUnitBytes = fillUnitBytes
        self.fd = fileRanges ? open(inner.path, O_RDONLY | O_CLOEXEC) : -1
    }
    deinit { if self.fd >= 0 { close(self.fd) } }
    var virtualSize: UInt64 { self.inner.virtualSize }
    var layers: [BaseLayer] { self.inner.layers }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
        if UInt64(buffer.count) == self.fillUnitBytes, let hook = self.onUnitRead.withLock({ $0.take() }) { hook() }
        try self.inner.read(at: offset, into: buffer)
    }
    func allocation(at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        try self.inner.allocation(at: offset, length: length)
    }
    func fileRange(at offset: UInt64, length: UInt64) -> (descriptor: Int32, offset: UInt64)? {
        self.fd >= 0 && offset + length <= self.virtualSize ? (self.fd, offset) : nil
    }
}

/// The base the opener made last.
private final class OpenedBase: Sendable {
    let base = Mutex<WrappedBase?>(nil)
}

/// Volume "vm" over a 64 KiB base of random bytes that fills on read in 16 KiB units.
private struct FillingVolume {
    let scratch = Scratch()
    let device: SimDevice
    let pool: Pool
    let base: WrappedBase
    let handle: VolumeHandle
    let bytes: [UInt8]

    init(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        self.bytes = random.bytes(64 * 1024)
        let path = try self.scratch.file("base.raw", self.bytes)
        (self.device, self.pool) = try basedPool()
        let opened = OpenedBase()
        self.pool.bases.setOpener { source throws(StrataError) in
            let base = WrappedBase(try TestBaseImage(path: source.path), fillUnitBytes: 16384)
            opened.base.withLock { $0 = base }
            return base
        }
        try self.pool.createVolume("vm", size: nil, basePath: path)
        self.base = try #require(opened.base.withLock { $0 })
        self.handle = try self.pool.handle("vm")
    }
}

extension BasedVolumeTests {
    /// A read through a fill-on-read base stores its whole unit into the volume's holes, never
    /// over a chunk the client wrote; the unit is not read from the base again, its neighbours
    /// still are, and a snapshot's reads fill nothing.
    @Test func aReadStoresItsUnitIntoTheHoles() throws {
        let volume = try FillingVolume(seed: 7)
        let (pool, base, handle, bytes) = (volume.pool, volume.base, volume.handle, volume.bytes)
        let written = [UInt8](repeating: 0xaa, count: 4096)
        try pool.write(handle, at: 20480, written)
        try pool.createSnapshot("vm", "before")

        // The snapshot reads through without filling: the same range costs base reads again.
        let snapshot = try pool.handle("vm@before")
        let snapshotReads = base.inner.reads.value
        _ = try pool.read(snapshot, at: 16384, count: 4096)
        _ = try pool.read(snapshot, at: 16384, count: 4096)
        #expect(base.inner.reads.value == snapshotReads + 2)

        _ = try pool.read(handle, at: 16384 + 100, count: 100)
        let afterFill = base.inner.reads.value
        var expected = Array(bytes[16384..<32768])
        expected.replaceSubrange(4096..<8192, with: written)
        #expect(try pool.read(handle, at: 16384, count: 16384) == expected)
        #expect(base.inner.reads.value == afterFill)
        // The unit before is still a hole of the volume: it reads the base.
        #expect(try pool.read(handle, at: 0, count: 4096) == Array(bytes[0..<4096]))
        #expect(base.inner.reads.value > afterFill)
        // The snapshot (taken after the write) still reads the same bytes, through the base.
        let beforeSnapshotRead = base.inner.reads.value
        #expect(try pool.read(snapshot, at: 16384, count: 16384) == expected)
        #expect(base.inner.reads.value > beforeSnapshotRead)
    }
}

extension BasedVolumeTests {
    /// A fill writes its copies before it maps them: a client write that lands on one of the
    /// unit's holes in between wins, the fill's copy of that chunk is freed, and the other
    /// chunks are filled.
    @Test func aWriteDuringAFillWinsAndItsCopyIsFreed() throws {
        let volume = try FillingVolume(seed: 11)
        let (device, pool, base, handle, bytes) = (volume.device, volume.pool, volume.base, volume.handle, volume.bytes)
        let written = [UInt8](repeating: 0x5c, count: 4096)
        let failure = Mutex<StrataError?>(nil)
        // The fill looked at the unit (all four chunks holes) and now reads it: the client
        // writes the unit's third chunk before the fill maps anything.
        base.onUnitRead.withLock {
            $0 = {
                do throws(StrataError) { try pool.write(handle, at: 16384 + 8192, written) } catch { failure.withLock { $0 = error } }
            }
        }
        _ = try pool.read(handle, at: 16384, count: 512)
        #expect(failure.withLock { $0 } == nil)
        #expect(base.onUnitRead.withLock { $0 } == nil, "the fill read its unit")
        var expected = Array(bytes[16384..<32768])
        expected.replaceSubrange(8192..<12288, with: written)
        let reads = base.inner.reads.value
        #expect(try pool.read(handle, at: 16384, count: 16384) == expected)
        #expect(base.inner.reads.value == reads, "the unit is all local")
        try pool.flush()
        // Four chunks: three filled and the client's; the fill's copy of the fourth is free again.
        #expect(pool.status().dataUsedBytes == 4 * 4096)
        #expect(Pool.check(device: device).clean)
    }

    /// bases.json written before remote bases existed has no `remote` field: it decodes as a
    /// file base, and a remote descriptor round-trips with its reference and no files to stat.
    @Test func baseTablesWithoutRemoteFieldsStillDecode() throws {
        let old = Data(
            """
            [{"createdAtNanos":1,"files":[{"modifiedNanos":2,"path":"/b.raw","size":4096}],"fingerprints":["00000000"],\
            "format":"raw","id":1,"layers":[{"format":"raw","path":"/b.raw","virtualSize":4096}],"path":"/b.raw","virtualSize":4096}]
            """.utf8)
        let decoded = try JSONDecoder().decode([BaseDescriptor].self, from: old)
        #expect(decoded.first?.remote == nil)
        #expect(decoded.first?.source == .file("/b.raw"))
        let reference = RemoteBaseReference(
            remote: "r1", volume: "vm1", snapshot: "s1", manifestKey: "manifests/vm1/s1", manifestSHA256: "ab")
        let remote = BaseDescriptor(
            id: 2, path: reference.label, format: "remote", virtualSize: 4096, files: [], layers: [], fingerprints: [],
            createdAtNanos: 1, remote: reference)
        let back = try JSONDecoder().decode(BaseDescriptor.self, from: JSONEncoder().encode(remote))
        #expect(back == remote)
        #expect(back.source == .remote(reference))
        #expect(back.change() == nil)
    }
}

extension BasedVolumeTests {
    /// The resume set of a hydration is the engine's own tree: a unit is pending while a chunk
    /// where the base holds data is a hole. Units a read filled, units written over, and units
    /// hydrated before a reopen (a daemon restart) are not pending; a unit is copied only into
    /// holes, so a chunk the volume wrote is never overwritten.
    @Test func hydrationPlanIsDerivedFromTheTreeAndSurvivesAReopen() throws {
        let scratch = Scratch()
        var random = SeededRandom(seed: 11)
        // Eight 16 KiB units: unit 2 and unit 5 are all zeros (holes of the base).
        var bytes = random.bytes(8 * 16384)
        for unit in [2, 5] { for index in (unit * 16384)..<((unit + 1) * 16384) { bytes[index] = 0 } }
        let path = try scratch.file("base.raw", bytes)
        // A pool with a directory, so its base table (bases.json) outlives a reopen.
        let device = SimDevice(size: 2048 * 4096 + 4096 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 2048)
        let pool = try Pool(device: device, readOnly: false, lock: nil, directory: scratch.path)
        pool.bases.setOpener { source throws(StrataError) in WrappedBase(try TestBaseImage(path: source.path), fillUnitBytes: 16384) }
        try pool.createVolume("vm", size: nil, basePath: path)
        var plan = try #require(try pool.hydrationPlan("vm"))
        #expect(plan.unitBytes == 16384)
        #expect(plan.units == [0, 1, 3, 4, 6, 7])
        #expect(plan.pending == plan.units)

        // A read fills unit 1; a write covers all of unit 3's data; a partial write into unit 4
        // leaves it pending (its other chunks still read the base).
        _ = try pool.read(try pool.handle("vm"), at: 16384 + 10, count: 10)
        let written = [UInt8](repeating: 0x5a, count: 16384)
        try pool.write(try pool.handle("vm"), at: 3 * 16384, written)
        try pool.write(try pool.handle("vm"), at: 4 * 16384 + 4096, [UInt8](repeating: 0x77, count: 4096))
        plan = try #require(try pool.hydrationPlan("vm"))
        #expect(plan.pending == [0, 4, 6, 7])
        #expect(plan.local == 2)

        // Hydrate two units, commit, reopen (as a restarted daemon does): they stay local.
        try pool.markHydrating("vm")
        #expect(try pool.hydrateUnit("vm", unit: 0) == 16384)
        #expect(try pool.hydrateUnit("vm", unit: 4) == 12288)
        try pool.flush()
        try pool.close()
        let reopened = try Pool(device: device, readOnly: false, lock: nil, directory: scratch.path)
        reopened.bases.setOpener { source throws(StrataError) in WrappedBase(try TestBaseImage(path: source.path), fillUnitBytes: 16384) }
        #expect(reopened.volumesFlattening() == ["vm"])
        plan = try #require(try reopened.hydrationPlan("vm"))
        #expect(plan.pending == [6, 7])
        #expect(throws: StrataError.self) { try reopened.finishHydration("vm") }
        for unit in plan.pending { try reopened.hydrateUnit("vm", unit: unit) }
        try reopened.finishHydration("vm")
        #expect(try reopened.hydrationPlan("vm") == nil)
        #expect(reopened.volumesFlattening().isEmpty)
        var expected = bytes
        expected.replaceSubrange((3 * 16384)..<(4 * 16384), with: written)
        expected.replaceSubrange((4 * 16384 + 4096)..<(4 * 16384 + 8192), with: [UInt8](repeating: 0x77, count: 4096))
        #expect(try reopened.read(try reopened.handle("vm"), at: 0, count: bytes.count) == expected)
    }

    @Test func pendingMeansDataMeetsAHole() {
        func extent(_ offset: UInt64, _ length: UInt64, _ mapped: Bool) -> MappingExtent {
            MappingExtent(offset: offset, length: length, mapped: mapped)
        }
        let data = [extent(0, 100, false), extent(100, 50, true), extent(150, 50, false)]
        // The data range is fully written: not pending.
        #expect(!HydrationPlan.isPending(data: data, holes: [extent(0, 90, false), extent(90, 70, true), extent(160, 40, false)]))
        // One byte of a hole meets the data.
        #expect(HydrationPlan.isPending(data: data, holes: [extent(0, 149, true), extent(149, 51, false)]))
        // No data at all.
        #expect(!HydrationPlan.isPending(data: [extent(0, 200, false)], holes: [extent(0, 200, false)]))
    }
}

extension BasedVolumeTests {
    /// A read that leaves base-file bytes unread returns them as ranges of the read, each with a
    /// descriptor of its own; those ranges read from the file, with the rest of the buffer, give
    /// exactly what an ordinary read gives, and the volume's own chunks are never among them.
    @Test func aReadLeavesTheBaseFilesBytesInTheFile() throws {
        let scratch = Scratch()
        var random = SeededRandom(seed: 11)
        let bytes = random.bytes(256 * 1024)
        let path = try scratch.file("base.raw", bytes)
        let (_, pool) = try basedPool()
        pool.bases.setOpener { source throws(StrataError) in
            WrappedBase(try TestBaseImage(path: source.path), fileRanges: true)
        }
        try pool.createVolume("vm", size: nil, basePath: path)
        let handle = try pool.handle("vm")
        for offset in [4096, 65536, 200_000] { try pool.write(handle, at: UInt64(offset), [UInt8](repeating: 0x5a, count: 4096)) }
        let expected = try pool.read(handle, at: 1000, count: 250_000)

        var buffer = [UInt8](repeating: 0xee, count: 250_000)
        let found = try buffer.withUnsafeMutableBytes { target in
            try pool.readLeavingHolesAndBaseFiles(handle, at: 1000, into: target)
        }
        #expect(found.holes.isEmpty)
        #expect(found.files.count == 4, "four runs of base chunks around three written ones")
        for file in found.files {
            #expect(file.fileOffset == 1000 + UInt64(file.range.lowerBound))
            #expect(fcntl(file.descriptor, F_GETFD) >= 0)
            // The volume's own chunks (4 KiB each here) are read into the buffer, never left.
            for written in [4096, 65536, 200_000] {
                #expect(!file.range.overlaps((written - 1000)..<(written - 1000 + 4096)))
            }
            try buffer.withUnsafeMutableBytes { target in
                try file.readAndClose(into: UnsafeMutableRawBufferPointer(rebasing: target[file.range]), what: "test")
            }
            #expect(fcntl(file.descriptor, F_GETFD) == -1, "readAndClose closes the descriptor")
        }
        #expect(buffer == expected)
    }
}
