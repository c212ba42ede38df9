// What the commands do, seen only through the CLI: bytes in with `import`, bytes out with
// `export`, and the space accounting of `pool status`, `volume list` and `snapshot list`.
// Every test ends with `strata check` reporting a clean pool. Images come from a seeded
// generator, so a failure reproduces exactly.

import Foundation
import Testing

@Suite("CLI behaviour: import/export, snapshots, rollback, clones, resize, delete, diff")
struct BehaviourTests {
    @Test("import --create of a 3 MiB image with holes, then export, gives the image back, and holes stay thin")
    func importExportRoundTrip() throws {
        let sandbox = try Sandbox.withPool()
        var image = randomBytes(3 * MiB + 300, seed: 1)  // not a whole sector: the volume rounds up
        punchHole(&image, 0..<(64 * KiB))  // one whole chunk
        punchHole(&image, MiB..<(MiB + 256 * KiB))  // four whole chunks
        punchHole(&image, (2 * MiB + 1000)..<(2 * MiB + 5000))  // inside a chunk
        punchHole(&image, (3 * MiB - 4096)..<(3 * MiB))  // the end of the last whole chunk
        let path = try sandbox.writeFile("image.img", image)
        let result = try sandbox.strata(["import", path, "disk", "--create"])
        expectSuccess(result)
        #expect(result.stdout.contains("disk"), "\(result)")

        let size = alignedUp512(image.count)
        let volume = try #require(try sandbox.volume("disk"))
        #expect(uint(volume["sizeBytes"]) == UInt64(size))
        let allocated = nonZeroChunkBytes(image)
        #expect(allocated == UInt64(49 - 5) * 64 * 1024, "the fixture itself: 49 chunks, 5 all zero")
        #expect(uint(volume["allocatedBytes"]) == allocated, "all-zero chunks must stay unallocated")
        #expect(try sandbox.dataUsedBytes() == allocated)

        let exported = try sandbox.export("disk")
        expectImage(exported, equals: image, size: size, "export of disk")
        try sandbox.expectClean()
    }

    @Test("import --create of an empty file makes a one-sector volume that exports as zeros")
    func importEmptyFile() throws {
        let sandbox = try Sandbox.withPool()
        try sandbox.importImage([], into: "tiny", create: true)
        let volume = try #require(try sandbox.volume("tiny"))
        #expect(uint(volume["sizeBytes"]) == 512)
        #expect(uint(volume["allocatedBytes"]) == 0)
        expectImage(try sandbox.export("tiny"), equals: [], size: 512, "export of tiny")
    }

    @Test("import into an existing volume writes only the image's range, and export replaces an existing file")
    func importIntoExistingVolume() throws {
        let sandbox = try Sandbox.withPool()
        let base = randomBytes(MiB, seed: 2)
        try sandbox.importImage(base, into: "vm", create: true)
        let patch = randomBytes(100 * KiB, seed: 3)
        try sandbox.importImage(patch, into: "vm")
        var expected = base
        expected.replaceSubrange(0..<patch.count, with: patch)
        // A stale, longer file at the export path must be replaced, not merged.
        let out = try sandbox.writeFile("out.img", [UInt8](repeating: 0xEE, count: 3 * MiB))
        try sandbox.ok(["export", "vm", out])
        expectImage(try sandbox.readFile(out), equals: expected, size: MiB, "export over an existing file")
        try sandbox.expectClean()
    }

    @Test("a snapshot keeps the old bytes after an overwrite; deleting it frees exactly its exclusive bytes")
    func snapshotThenOverwrite() throws {
        let sandbox = try Sandbox.withPool()
        let original = randomBytes(MiB, seed: 4)
        try sandbox.importImage(original, into: "vm", create: true)
        try sandbox.ok(["snapshot", "create", "vm@before"])
        #expect(uint(try sandbox.snapshots("vm").first?["exclusiveBytes"]) == 0, "nothing overwritten yet")

        var changed = randomBytes(MiB, seed: 5)
        punchHole(&changed, 0..<(128 * KiB))  // importing zeros into a volume trims those chunks
        try sandbox.importImage(changed, into: "vm")

        expectImage(try sandbox.export("vm@before"), equals: original, size: MiB, "export of the snapshot")
        expectImage(try sandbox.export("vm"), equals: changed, size: MiB, "export of the live volume")
        let live = try #require(try sandbox.volume("vm"))
        #expect(uint(live["allocatedBytes"]) == UInt64(MiB - 128 * KiB))

        let snapshot = try #require(try sandbox.snapshots("vm").first { $0["name"] as? String == "before" })
        let exclusive = try #require(uint(snapshot["exclusiveBytes"]))
        #expect(exclusive > 0)
        #expect(exclusive == UInt64(MiB), "every chunk of the snapshot was overwritten or trimmed in the volume")

        let usedBefore = try sandbox.dataUsedBytes()
        #expect(usedBefore == UInt64(2 * MiB - 128 * KiB))
        try sandbox.ok(["snapshot", "delete", "vm@before"])
        let usedAfter = try sandbox.dataUsedBytes()
        #expect(usedAfter < usedBefore, "deleting the snapshot freed nothing")
        #expect(usedBefore - usedAfter == exclusive, "deleting frees exactly the snapshot's exclusive bytes")
        #expect(try sandbox.snapshots("vm").isEmpty)
        expectImage(try sandbox.export("vm"), equals: changed, size: MiB, "the volume after the snapshot is gone")
        try sandbox.expectClean()
    }

    @Test("rollback restores a snapshot's content and size, and keeps the snapshot")
    func rollback() throws {
        let sandbox = try Sandbox.withPool()
        let original = randomBytes(MiB, seed: 6)
        try sandbox.importImage(original, into: "vm", create: true)
        try sandbox.ok(["snapshot", "create", "vm@good"])
        try sandbox.ok(["volume", "resize", "vm", "--size", "2M"])
        try sandbox.importImage(randomBytes(2 * MiB, seed: 7), into: "vm")
        let result = try sandbox.strata(["snapshot", "rollback", "vm@good"])
        expectSuccess(result)
        #expect(result.stdout.contains("vm@good"), "\(result)")
        expectImage(try sandbox.export("vm"), equals: original, size: MiB, "the volume after rollback")
        #expect(uint(try sandbox.volume("vm")?["sizeBytes"]) == UInt64(MiB), "rollback restores the size")
        #expect(try sandbox.snapshots("vm").compactMap { $0["name"] as? String } == ["good"])
        // Only the snapshot's chunks remain: what the volume wrote after it is freed.
        #expect(try sandbox.dataUsedBytes() == UInt64(MiB))
        // The rolled-back volume is writable and diverges from the snapshot again.
        try sandbox.importImage(randomBytes(64 * KiB, seed: 8), into: "vm")
        expectImage(try sandbox.export("vm@good"), equals: original, size: MiB, "the snapshot after new writes")
        try sandbox.expectClean()
    }

    @Test("a clone shares every chunk (pool usage does not grow) and outlives its origin")
    func cloneSharesData() throws {
        let sandbox = try Sandbox.withPool()
        let original = randomBytes(MiB, seed: 9)
        try sandbox.importImage(original, into: "vm", create: true)
        try sandbox.ok(["snapshot", "create", "vm@base"])
        let usedBefore = try sandbox.dataUsedBytes()
        let result = try sandbox.strata(["clone", "vm@base", "c1"])
        expectSuccess(result)
        try sandbox.ok(["clone", "vm@base", "c2"])
        #expect(try sandbox.dataUsedBytes() == usedBefore, "cloning copied data")
        let clone = try #require(try sandbox.volume("c1"))
        #expect(uint(clone["sizeBytes"]) == UInt64(MiB))
        #expect(uint(clone["allocatedBytes"]) == UInt64(MiB))
        expectImage(try sandbox.export("c1"), equals: original, size: MiB, "export of the clone")

        // Writing to one clone copies only what it writes, and touches nothing else.
        let patch = randomBytes(64 * KiB, seed: 10)
        try sandbox.importImage(patch, into: "c2")
        #expect(try sandbox.dataUsedBytes() == usedBefore + UInt64(64 * KiB))
        var patched = original
        patched.replaceSubrange(0..<patch.count, with: patch)
        expectImage(try sandbox.export("c2"), equals: patched, size: MiB, "the written clone")
        expectImage(try sandbox.export("vm@base"), equals: original, size: MiB, "the origin snapshot")
        expectImage(try sandbox.export("vm"), equals: original, size: MiB, "the origin volume")

        // The clone keeps its data when the origin volume and its snapshots are deleted.
        try sandbox.ok(["volume", "delete", "vm", "-r"])
        expectImage(try sandbox.export("c1"), equals: original, size: MiB, "the clone after its origin is gone")
        #expect(try sandbox.dataUsedBytes() == usedBefore + UInt64(64 * KiB))
        try sandbox.expectClean()
    }

    @Test("shrinking needs --allow-shrink; after growing again the cut-off tail reads as zeros")
    func resize() throws {
        let sandbox = try Sandbox.withPool()
        let original = randomBytes(MiB, seed: 12)
        try sandbox.importImage(original, into: "vm", create: true)
        let shrunk = 300 * KiB  // not a whole chunk: the last kept chunk is cut inside

        let refused = try sandbox.strata(["volume", "resize", "vm", "--size", "300K"])
        expectRefused(refused, status: 1)
        #expect(refused.stderr.contains("vm"), "\(refused)")
        #expect(refused.stderr.contains("--allow-shrink"), "\(refused)")
        #expect(uint(try sandbox.volume("vm")?["sizeBytes"]) == UInt64(MiB))
        expectImage(try sandbox.export("vm"), equals: original, size: MiB, "the volume after a refused shrink")

        expectSuccess(try sandbox.strata(["volume", "resize", "vm", "--size", "300K", "--allow-shrink"]))
        let small = try #require(try sandbox.volume("vm"))
        #expect(uint(small["sizeBytes"]) == UInt64(shrunk))
        #expect(uint(small["allocatedBytes"]) == 5 * 64 * 1024, "chunks past the new end are freed")
        #expect(try sandbox.dataUsedBytes() == 5 * 64 * 1024)
        expectImage(
            try sandbox.export("vm"), equals: Array(original[0..<shrunk]), size: shrunk, "the volume after shrinking")

        // Growing needs no flag, and nothing of the old tail comes back.
        expectSuccess(try sandbox.strata(["volume", "resize", "vm", "--size", "1M"]))
        expectImage(try sandbox.export("vm"), equals: Array(original[0..<shrunk]), size: MiB, "after growing back")
        expectSuccess(try sandbox.strata(["volume", "resize", "vm", "--size", "8M"]))
        expectImage(try sandbox.export("vm"), equals: Array(original[0..<shrunk]), size: 8 * MiB, "after growing to 8M")
        // Growing past what one leaf maps (256 chunks: 16 MiB) deepens the tree; write at the far end.
        expectSuccess(try sandbox.strata(["volume", "resize", "vm", "--size", "17M"]))
        let tail = randomBytes(4 * KiB, seed: 13)
        var grown = Array(original[0..<shrunk]) + [UInt8](repeating: 0, count: 17 * MiB - shrunk)
        grown.replaceSubrange((17 * MiB - tail.count)..<(17 * MiB), with: tail)
        try sandbox.importImage(grown, into: "vm")
        expectImage(try sandbox.export("vm"), equals: grown, size: 17 * MiB, "after writing at the new end")
        #expect(try sandbox.dataUsedBytes() == 6 * 64 * 1024)
        try sandbox.expectClean()
    }

    @Test("a shrink keeps a snapshot's full content")
    func shrinkKeepsSnapshot() throws {
        let sandbox = try Sandbox.withPool()
        let original = randomBytes(MiB, seed: 14)
        try sandbox.importImage(original, into: "vm", create: true)
        try sandbox.ok(["snapshot", "create", "vm@full"])
        try sandbox.ok(["volume", "resize", "vm", "--size", "100K", "--allow-shrink"])
        try sandbox.ok(["volume", "resize", "vm", "--size", "1M"])
        expectImage(try sandbox.export("vm"), equals: Array(original[0..<(100 * KiB)]), size: MiB, "the regrown volume")
        expectImage(try sandbox.export("vm@full"), equals: original, size: MiB, "the snapshot")
        try sandbox.expectClean()
    }

    @Test("deleting a volume with snapshots needs -r; with it, everything is freed")
    func deleteWithSnapshots() throws {
        let sandbox = try Sandbox.withPool()
        try sandbox.importImage(randomBytes(512 * KiB, seed: 15), into: "vm", create: true)
        try sandbox.ok(["snapshot", "create", "vm@s1"])
        try sandbox.importImage(randomBytes(128 * KiB, seed: 16), into: "vm")
        try sandbox.ok(["snapshot", "create", "vm@s2"])
        try sandbox.ok(["volume", "create", "plain", "--size", "1M"])
        let before = try sandbox.state()

        let refused = try sandbox.strata(["volume", "delete", "vm"])
        expectRefused(refused, status: 1)
        #expect(refused.stderr.contains("vm"), "\(refused)")
        #expect(refused.stderr.contains("s1") && refused.stderr.contains("s2"), "names the snapshots: \(refused)")
        #expect(refused.stderr.contains("--recursive"), "gives the fix: \(refused)")
        #expect(try sandbox.state() == before, "a refused delete changed the pool")

        expectSuccess(try sandbox.strata(["volume", "delete", "plain"]))
        expectSuccess(try sandbox.strata(["volume", "delete", "vm", "-r"]))
        #expect(try sandbox.volumes().isEmpty)
        #expect(try sandbox.snapshots().isEmpty)
        #expect(try sandbox.dataUsedBytes() == 0, "every chunk is free again")
        let status = try sandbox.poolStatus()
        #expect(uint(status["volumes"]) == 0 && uint(status["snapshots"]) == 0)
        // The names are free for reuse, and a new volume starts empty.
        try sandbox.ok(["volume", "create", "vm", "--size", "512K"])
        #expect(try sandbox.snapshots("vm").isEmpty)
        expectImage(try sandbox.export("vm"), equals: [], size: 512 * KiB, "a new volume under a reused name")
        try sandbox.expectClean()
    }

    @Test("--recursive is the long form of -r")
    func deleteRecursiveLongForm() throws {
        let sandbox = try Sandbox.prepared()
        expectSuccess(try sandbox.strata(["volume", "delete", "vm1", "--recursive"]))
        #expect(try sandbox.volume("vm1") == nil)
        #expect(try sandbox.snapshots().isEmpty)
        try sandbox.expectClean()
    }

    @Test("rename carries the snapshots along and frees the old name")
    func renameKeepsSnapshots() throws {
        let sandbox = try Sandbox.prepared()
        let image = try sandbox.readFile(sandbox.path("image.img"))
        expectSuccess(try sandbox.strata(["volume", "rename", "vm1", "web-01.disk_0"]))
        #expect(try sandbox.volume("vm1") == nil)
        #expect(try sandbox.snapshots("web-01.disk_0").compactMap { $0["name"] as? String } == ["s1"])
        expectImage(try sandbox.export("web-01.disk_0@s1"), equals: image, size: MiB, "the snapshot after rename")
        let gone = try sandbox.strata(["export", "vm1@s1", sandbox.path("x.img")])
        expectRefused(gone, status: 1)
        #expect(gone.stderr.contains("vm1"), "\(gone)")
        try sandbox.ok(["volume", "create", "vm1", "--size", "1M"])
        try sandbox.expectClean()
    }

    @Test("snapshots are read-only: importing into one is refused with the clone hint")
    func snapshotIsReadOnly() throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        let result = try sandbox.strata(["import", sandbox.path("image.img"), "vm1@s1"])
        expectRefused(result, status: 1)
        #expect(result.stderr.contains("vm1@s1"), "\(result)")
        #expect(result.stderr.contains("strata clone"), "\(result)")
        #expect(try sandbox.state() == before)
    }

    @Test("diff after writing one 64 KiB chunk at 1 MiB reports exactly that extent")
    func diffOneChunk() throws {
        let sandbox = try Sandbox.withPool()
        try sandbox.ok(["volume", "create", "vm", "--size", "4M"])
        try sandbox.ok(["snapshot", "create", "vm@a"])
        // Zeros up to 1 MiB (unmapped chunks stay unmapped), then one chunk of data.
        let image = [UInt8](repeating: 0, count: MiB) + randomBytes(64 * KiB, seed: 17)
        try sandbox.importImage(image, into: "vm")

        let expected: [(UInt64, UInt64, String)] = [(1_048_576, 65_536, "data")]
        func extents(_ from: String, _ to: String) throws -> [(UInt64, UInt64, String)] {
            let json = try #require(try sandbox.json(["diff", from, to]) as? [[String: Any]])
            return json.map { (uint($0["offset"]) ?? .max, uint($0["length"]) ?? .max, $0["kind"] as? String ?? "?") }
        }
        let live = try extents("vm@a", "vm")
        #expect(live.elementsEqual(expected, by: ==), "diff vm@a vm: \(live)")
        let text = try sandbox.ok(["diff", "vm@a", "vm"])
        #expect(text.contains("1048576") && text.contains("65536") && text.contains("data"), "\(text)")

        try sandbox.ok(["snapshot", "create", "vm@b"])
        let snapshots = try extents("vm@a", "vm@b")
        #expect(snapshots.elementsEqual(expected, by: ==), "diff vm@a vm@b: \(snapshots)")
        #expect(try extents("vm@b", "vm").isEmpty, "nothing changed since vm@b")

        // Zeroing the chunk again (import trims all-zero chunks) is a `zero` extent.
        try sandbox.importImage([UInt8](repeating: 0, count: MiB + 64 * KiB), into: "vm")
        let trimmed = try extents("vm@b", "vm")
        #expect(trimmed.elementsEqual([(1_048_576, 65_536, "zero")], by: ==), "diff vm@b vm: \(trimmed)")
        #expect(try extents("vm@a", "vm").isEmpty, "the volume reads as it did at vm@a")
        try sandbox.expectClean()
    }

    @Test("diff spans adjacent changed chunks as one extent, and the last chunk is clipped to the size")
    func diffMergesAndClips() throws {
        let sandbox = try Sandbox.withPool()
        try sandbox.ok(["volume", "create", "vm", "--size", "1000K"])  // 15 chunks and 40 KiB
        try sandbox.ok(["snapshot", "create", "vm@a"])
        var image = [UInt8](repeating: 0, count: 1000 * KiB)
        image.replaceSubrange((128 * KiB)..<(320 * KiB), with: randomBytes(192 * KiB, seed: 18))  // chunks 2, 3, 4
        // The short last chunk (960 KiB ..< 1000 KiB).
        image.replaceSubrange((990 * KiB)..<(1000 * KiB), with: randomBytes(10 * KiB, seed: 19))
        try sandbox.importImage(image, into: "vm")
        let json = try #require(try sandbox.json(["diff", "vm@a", "vm"]) as? [[String: Any]])
        let extents = json.map { [uint($0["offset"]) ?? .max, uint($0["length"]) ?? .max] }
        #expect(extents == [[131_072, 196_608], [983_040, 40_960]], "\(json)")
        #expect(json.allSatisfy { $0["kind"] as? String == "data" }, "\(json)")
        try sandbox.expectClean()
    }
}
