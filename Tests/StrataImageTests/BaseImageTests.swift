// Every supported kind of base image, built by QEMU's own tools, read through the decoder and
// compared with what QEMU says it holds: the whole disk byte for byte against
// `qemu-img convert -O raw`, random unaligned sub-reads, and the allocation map against
// `qemu-img map` (data versus zero or hole, adjacent extents merged).

import Foundation
import StrataCore
import StrataImage
import StrataTesting
import Testing

@Suite struct BaseImageTests {
    /// An image built in a scratch directory; `top` is the file handed to `BaseImages.open`.
    struct Fixture {
        let scratch: ScratchDirectory
        let top: String
    }

    /// The kinds of image the decoder must read as QEMU does.
    enum Kind: String, CaseIterable, CustomStringConvertible {
        case rawSparse, qcow2Cluster4K, qcow2Cluster64K, qcow2Cluster2M, qcow2Version2, compressed, zeroClusters
        case threeLevelChain, rawBackingUnderQcow2

        var description: String { self.rawValue }
    }

    static func build(_ kind: Kind) throws -> Fixture {
        let scratch = try ScratchDirectory()
        let top = scratch.file("top.img")
        let writes = [
            "write -P 0x11 0 100k", "write -P 0x22 1M 4k", "write -P 0x33 3146240 70144", "write -P 0x44 5M 512",
        ]
        switch kind {
        case .rawSparse:
            try Self.sparseRaw(top, size: 6 << 20)
        case .qcow2Cluster4K, .qcow2Cluster64K, .qcow2Cluster2M:
            let cluster = kind == .qcow2Cluster4K ? "4k" : kind == .qcow2Cluster64K ? "64k" : "2M"
            try Qemu.create(top, size: "8390144", options: ["-o", "cluster_size=\(cluster)"])
            try Qemu.io(top, writes + ["write -P 0x55 8388608 1536"])
        case .qcow2Version2:
            try Qemu.create(top, size: "6M", options: ["-o", "compat=0.10,cluster_size=16k"])
            try Qemu.io(top, writes)
        case .compressed:
            let source = scratch.file("source.raw")
            try Self.mixedContents(source, size: 4 << 20)
            try Qemu.run("qemu-img", ["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", source, top])
        case .zeroClusters:
            try Qemu.create(top, size: "4M", options: ["-o", "cluster_size=64k"])
            try Qemu.io(top, ["write -P 0xab 0 1M", "write -z 0 64k", "write -z 2M 128k", "write -z 192k 64k"])
        case .threeLevelChain:
            try Self.threeLevelChain(scratch)
        case .rawBackingUnderQcow2:
            try Self.sparseRaw(scratch.file("base.raw"), size: 4 << 20)
            try Qemu.create("top.img", size: "6M", options: ["-b", "base.raw", "-F", "raw"], in: scratch.path)
            try Qemu.io(top, ["write -P 0x66 512k 64k", "write -z 1M 64k", "write -P 0x77 4M 8k"])
        }
        return Fixture(scratch: scratch, top: top)
    }

    /// A sparse raw file: data at a few places, holes elsewhere, the last bytes a hole.
    static func sparseRaw(_ path: String, size: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw ToolFailure(description: "cannot create \(path)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        for (offset, byte, count) in [(0, 0x9A, 8192), (1 << 20, 0x9B, 65536), (3 << 20 + 4096, 0x9C, 12288)] {
            try handle.seek(toOffset: UInt64(offset))
            handle.write(Data((0..<count).map { UInt8(truncatingIfNeeded: byte &+ $0 / 7) }))
        }
        try handle.truncate(atOffset: UInt64(size))
    }

    /// Compressible text, incompressible noise and zeros, cluster by cluster.
    static func mixedContents(_ path: String, size: Int) throws {
        var random = SeededRandom(seed: 10)
        var bytes = [UInt8](repeating: 0, count: size)
        for cluster in 0..<(size >> 16) where cluster % 4 != 3 {
            for index in (cluster << 16)..<((cluster + 1) << 16) {
                bytes[index] =
                    cluster % 4 == 1
                    ? UInt8(truncatingIfNeeded: random.next()) : UInt8(truncatingIfNeeded: 0x41 + (index / 13) % 26)
            }
        }
        try Patch.write(bytes, to: path)
    }

    /// top.img (6M) -> b/mid.qcow2 (12M) -> a/base.qcow2 (8M), each naming the next relatively.
    static func threeLevelChain(_ scratch: ScratchDirectory) throws {
        for directory in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: scratch.file(directory), withIntermediateDirectories: true)
        }
        let base = scratch.file("a/base.qcow2")
        let mid = scratch.file("b/mid.qcow2")
        try Qemu.create(base, size: "8M", options: ["-o", "cluster_size=64k"])
        try Qemu.io(base, ["write -P 0x01 0 4M", "write -P 0x02 7M 1M"])
        try Qemu.create(
            "mid.qcow2", size: "12M", options: ["-b", "../a/base.qcow2", "-F", "qcow2"], in: scratch.file("b"))
        try Qemu.io(mid, ["write -P 0x03 1M 64k", "write -z 2M 128k", "write -P 0x04 9M 4k"])
        try Qemu.create(
            "top.img", size: "6M", options: ["-b", "b/mid.qcow2", "-F", "qcow2", "-o", "cluster_size=4k"],
            in: scratch.path)
        try Qemu.io(scratch.file("top.img"), ["write -P 0x05 3M 8k", "write -z 0 4k"])
    }

    @Test(arguments: Kind.allCases)
    func readsAsQemuDoes(kind: Kind) throws {
        let fixture = try Self.build(kind)
        let expected = try Qemu.rawContents(fixture.top, scratch: fixture.scratch)
        let image = try BaseImages.open(path: fixture.top)
        #expect(image.virtualSize == UInt64(expected.count))
        let actual = try readAll(image)
        #expect(firstDifference(actual, expected[...]) == nil, "\(kind): full read differs")
        var random = SeededRandom(seed: UInt64(kind.rawValue.utf8.count))
        var servedWithoutWaiting = 0
        for _ in 0..<200 {
            let offset = Int(random.next() % UInt64(expected.count + 4096))
            let count = Int(random.next() % 300_000)
            var bytes = [UInt8](repeating: 0xEE, count: count)
            try bytes.withUnsafeMutableBytes { try image.read(at: UInt64(offset), into: $0) }
            let inside = expected[min(offset, expected.count)..<min(offset + count, expected.count)]
            let want = Array(inside) + [UInt8](repeating: 0, count: count - inside.count)
            #expect(firstDifference(bytes, want[...]) == nil, "\(kind): read at \(offset) of \(count) bytes differs")
            // What that read brought into memory can now be read without waiting, alike.
            var again = [UInt8](repeating: 0xEE, count: count)
            if again.withUnsafeMutableBytes({ image.readIfCached(at: UInt64(offset), into: $0) }) {
                servedWithoutWaiting += 1
                #expect(firstDifference(again, want[...]) == nil, "\(kind): no-wait read at \(offset) of \(count) bytes differs")
            }
        }
        #expect(servedWithoutWaiting > 0, "\(kind): no read was served from memory")
    }

    @Test(arguments: Kind.allCases)
    func allocationAgreesWithQemuMap(kind: Kind) throws {
        let fixture = try Self.build(kind)
        let image = try BaseImages.open(path: fixture.top)
        let expected = try Qemu.dataRanges(fixture.top)
        #expect(!expected.isEmpty, "\(kind): the fixture holds no data, so the comparison proves nothing")
        #expect(try mappedRanges(image) == expected)
        let tail = try image.allocation(at: image.virtualSize - 512, length: 1 << 20)
        #expect(tail.first?.offset == image.virtualSize - 512)
        #expect(tail.last.map { $0.offset + $0.length } == image.virtualSize - 512 + (1 << 20))
        #expect(tail.last.map { !$0.mapped && $0.offset <= image.virtualSize } == true, "past the end reads as a hole")
    }

    @Test func chainLayersAreListedTopDownWithAbsolutePaths() throws {
        let fixture = try Self.build(.threeLevelChain)
        let image = try BaseImages.open(path: fixture.top)
        #expect(
            image.layers.map(\.path) == [
                fixture.top, fixture.scratch.file("b/mid.qcow2"), fixture.scratch.file("b/../a/base.qcow2"),
            ])
        #expect(image.layers.map(\.format) == ["qcow2", "qcow2", "qcow2"])
        #expect(image.layers.map(\.virtualSize) == [6 << 20, 12 << 20, 8 << 20])
    }

    @Test func rawLayerIsListed() throws {
        let fixture = try Self.build(.rawBackingUnderQcow2)
        let image = try BaseImages.open(path: fixture.top)
        #expect(
            image.layers == [
                BaseLayer(path: fixture.top, format: "qcow2", virtualSize: 6 << 20),
                BaseLayer(path: fixture.scratch.file("base.raw"), format: "raw", virtualSize: 4 << 20),
            ])
    }

    @Test func manyThreadsReadTheSameImage() async throws {
        let fixture = try Self.build(.compressed)
        let expected = try Qemu.rawContents(fixture.top, scratch: fixture.scratch)
        let image = try BaseImages.open(path: fixture.top)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var random = SeededRandom(seed: UInt64(worker))
                    var same = true
                    for _ in 0..<100 {
                        let offset = Int(random.next() % UInt64(expected.count))
                        let count = min(Int(random.next() % 200_000), expected.count - offset)
                        var bytes = [UInt8](repeating: 0, count: count)
                        try bytes.withUnsafeMutableBytes { try image.read(at: UInt64(offset), into: $0) }
                        same = same && firstDifference(bytes, expected[offset..<offset + count]) == nil
                    }
                    return same
                }
            }
            for try await same in group { #expect(same) }
        }
    }

    @Test func aMissingFileIsRefused() {
        #expect(throws: StrataError.self) { _ = try BaseImages.open(path: "/nonexistent/base.img") }
    }
}
