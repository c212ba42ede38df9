// Damaged pools through the CLI: `strata check` must find damage and name the page, and every
// other command must refuse to work on damage with a clear message — never trap, never hang
// [thin-provisioning-tools: corrupted-input CLI tests; STYLE §4 "corruption is data"].
//
// Metadata pages are 4096 bytes in `<pool>/pool.strata`. Every page starts with the magic
// 0x41525453 ("STRA", bytes 53 54 52 41) and has its kind at byte 8 (1 superblock,
// 3 tree leaf); pages 0 and 1 are the two superblock slots.

import Foundation
import Testing

enum PageKindByte {
    static let superblock: UInt8 = 1
    static let treeLeaf: UInt8 = 3
}

/// The pages of the metadata region whose header says "tree leaf".
func treeLeafPages(poolFile: String, metadataBytes: Int) throws -> [Int] {
    let region = try readBytes(poolFile, at: 0, count: metadataBytes)
    let magic: [UInt8] = [0x53, 0x54, 0x52, 0x41]
    return (2..<(region.count / pagesize)).filter { page in
        let start = page * pagesize
        return Array(region[start..<(start + 4)]) == magic && region[start + 8] == PageKindByte.treeLeaf
    }
}

/// Matches "page N" not followed by another digit.
func mentionsPage(_ text: String, _ page: Int) -> Bool {
    text.range(of: "page \(page)([^0-9]|$)", options: .regularExpression) != nil
}

@Suite("CLI on corrupted pools")
struct CorruptionTests {
    @Test("a flipped byte in a used tree leaf: check exits 1 naming the page; export fails cleanly")
    func damagedTreeLeaf() throws {
        let sandbox = try Sandbox.withPool()
        let first = randomBytes(MiB, seed: 31)
        let second = randomBytes(512 * KiB, seed: 32)
        try sandbox.importImage(first, into: "vm1", create: true)
        try sandbox.importImage(second, into: "vm2", create: true)
        try sandbox.expectClean()
        let metadataBytes = try #require(uint(try sandbox.poolStatus()["metadataBytes"]))
        let candidates = try treeLeafPages(poolFile: sandbox.poolFile, metadataBytes: Int(metadataBytes))
        try #require(!candidates.isEmpty, "no tree leaf page found in the metadata region")

        // Damage each leaf in turn until `check` reports it: only pages the last commit
        // references are used; a stale copy would be (rightly) ignored.
        var generator = SeededGenerator(seed: 33)
        var damaged: (page: Int, volume: String, report: CLIResult)?
        for page in candidates {
            let offset = page * pagesize
            let original = try readBytes(sandbox.poolFile, at: offset, count: pagesize)
            var bytes = original
            for _ in 0..<8 {
                let position = Int.random(in: 32..<pagesize, using: &generator)
                bytes[position] ^= UInt8.random(in: 1...255, using: &generator)
            }
            try writeBytes(sandbox.poolFile, at: offset, bytes)
            let report = try sandbox.strata(["check", "--json"])
            let json = (try? JSONSerialization.jsonObject(with: Data(report.stdout.utf8))) as? [String: Any]
            let problems = json?["problems"] as? [[String: Any]] ?? []
            if let problem = problems.first(where: { uint($0["page"]) == UInt64(page) }),
                let volume = problem["volume"] as? String
            {
                damaged = (page, volume, report)
                break
            }
            try writeBytes(sandbox.poolFile, at: offset, original)
        }
        let (page, volume, jsonReport) = try #require(
            damaged, "damaging leaves \(candidates) was never reported by check")
        #expect(!jsonReport.signaled && jsonReport.status == 1, "\(jsonReport)")
        #expect(["vm1", "vm2"].contains(volume))

        let text = try sandbox.strata(["check"])
        #expect(!text.signaled, "\(text)")
        #expect(text.status == 1, "check must exit 1 on damage: \(text)")
        #expect(mentionsPage(text.stdout, page), "check output does not name page \(page): \(text)")
        #expect(text.stdout.contains(volume), "check output does not name volume \(volume): \(text)")

        let out = sandbox.path("damaged.img")
        let export = try sandbox.strata(["export", volume, out])
        expectRefused(export, status: 1)
        #expect(mentionsPage(export.stderr, page), "export does not name page \(page): \(export)")
        #expect(export.stderr.contains("strata check"), "export gives no hint: \(export)")
        do {
            #expect(export.stderr.contains(volume), "export does not name \(volume): \(export)")
        }
        do {
            #expect(!FileManager.default.fileExists(atPath: out), "a failed export left \(out) behind")
        }

        // The other volume's tree is intact and still reads back whole.
        let (other, otherImage) = volume == "vm1" ? ("vm2", second) : ("vm1", first)
        expectImage(try sandbox.export(other), equals: otherImage, size: otherImage.count, "the undamaged \(other)")
    }

    @Test("with both superblocks zeroed every command fails with a clear message and no crash")
    func bothSuperblocksZeroed() throws {
        let sandbox = try Sandbox.prepared()
        try writeBytes(sandbox.poolFile, at: 0, [UInt8](repeating: 0, count: 2 * pagesize))
        let commands: [[String]] = [
            ["pool", "status"], ["pool", "status", "--json"], ["volume", "list"], ["volume", "list", "--json"],
            ["volume", "create", "vm9", "--size", "1M"], ["volume", "resize", "vm1", "--size", "2M"],
            ["volume", "rename", "vm1", "vm9"], ["volume", "delete", "vm1", "-r"], ["snapshot", "create", "vm1@s9"],
            ["snapshot", "list"], ["snapshot", "delete", "vm1@s1"], ["snapshot", "rollback", "vm1@s1"],
            ["clone", "vm1@s1", "vm9"], ["import", "IMAGE", "vm1"], ["export", "vm1", "OUT"],
            ["diff", "vm1@s1", "vm1"],
        ]
        for args in commands {
            let result = try sandbox.strata(sandbox.substitute(args))
            expectRefused(result, status: 1)
            #expect(result.stderr.contains("superblock"), "\(result)")
            #expect(result.stderr.contains("pool"), "\(result)")
            do {
                #expect(result.stderr.contains(sandbox.pool), "does not name the pool directory: \(result)")
            }
        }
        for args in [["check"], ["check", "--json"]] {
            let result = try sandbox.strata(args)
            #expect(!result.signaled && result.status == 1, "\(result)")
            #expect(result.output.contains("superblock"), "\(result)")
        }
        // Nothing tried to "repair" the pool behind the user's back.
        #expect(try readBytes(sandbox.poolFile, at: 0, count: 2 * pagesize).allSatisfy { $0 == 0 })
        #expect(!FileManager.default.fileExists(atPath: sandbox.path("out.img")))
    }

    @Test("a damaged newest superblock falls back to the previous commit, which is whole")
    func newestSuperblockDamaged() throws {
        let sandbox = try Sandbox.prepared()
        let previous = try sandbox.state()
        let previousGeneration = try #require(uint(try sandbox.poolStatus()["generation"]))
        try sandbox.ok(["volume", "create", "late", "--size", "1M"])
        let generation = try #require(uint(try sandbox.poolStatus()["generation"]))
        try #require(generation == previousGeneration + 1, "one command, one commit")

        let slot = Int(generation % 2)
        var page = try readBytes(sandbox.poolFile, at: slot * pagesize, count: pagesize)
        page[100] ^= 0xFF
        try writeBytes(sandbox.poolFile, at: slot * pagesize, page)

        #expect(uint(try sandbox.poolStatus()["generation"]) == previousGeneration)
        let now = try sandbox.state()
        #expect(now.volumes == previous.volumes, "the pool is not the previous commit's")
        #expect(now.snapshots == previous.snapshots)
        try sandbox.expectClean()
        expectImage(
            try sandbox.export("vm1@s1"), equals: try sandbox.readFile(sandbox.path("image.img")), size: MiB,
            "vm1@s1 after the fallback")
        // The next commit goes on from there.
        try sandbox.ok(["volume", "create", "late", "--size", "1M"])
        #expect(try sandbox.volume("late") != nil)
        try sandbox.expectClean()
    }

    @Test("a pool file that is not a pool (random bytes) is refused without a crash")
    func notAPool() throws {
        let sandbox = try Sandbox()
        try FileManager.default.createDirectory(atPath: sandbox.pool, withIntermediateDirectories: true)
        try sandbox.writeFile("pool/pool.strata", randomBytes(64 * KiB, seed: 34))
        for args in [["pool", "status"], ["volume", "list"], ["volume", "create", "vm1", "--size", "1M"], ["check"]] {
            let result = try sandbox.strata(args)
            #expect(!result.signaled, "\(result)")
            #expect(result.status == 1, "\(result)")
            #expect(result.output.contains("superblock"), "\(result)")
        }
    }

    @Test("a truncated pool file is refused without a crash")
    func truncatedPool() throws {
        let sandbox = try Sandbox.prepared()
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: sandbox.poolFile))
        try handle.truncate(atOffset: UInt64(16 * MiB))
        try handle.close()
        for args in [["pool", "status"], ["volume", "list"], ["export", "vm1", "OUT"], ["check"]] {
            let result = try sandbox.strata(sandbox.substitute(args))
            #expect(!result.signaled, "\(result)")
            #expect(result.status == 1, "\(result)")
            #expect(!result.output.isEmpty, "\(result)")
        }
    }
}
