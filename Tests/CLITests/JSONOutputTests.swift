// `--json` on every listing: the output parses with JSONSerialization, has the documented keys,
// and its values agree with what the test did and with the other listings.

import Foundation
import Testing

@Suite("CLI --json output")
struct JSONOutputTests {
    static let poolStatusKeys = [
        "capacityBytes", "dataUsedBytes", "dataFreeBytes", "metadataBytes", "metadataUsedBytes", "chunkSize", "volumes",
        "snapshots", "generation",
    ]
    static let volumeKeys = ["name", "sizeBytes", "allocatedBytes", "snapshots", "createdAt", "guid"]
    static let snapshotKeys = ["volume", "name", "sizeBytes", "createdAt", "exclusiveBytes", "guid"]
    static let diffKeys = ["offset", "length", "kind"]
    static let checkKeys = ["problems", "generation"]

    static func isTimestamp(_ value: Any?) -> Bool {
        guard let text = value as? String else { return false }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text) != nil
    }

    static func isGUID(_ value: Any?) -> Bool {
        guard let text = value as? String else { return false }
        return text.range(of: "^[0-9a-f]{32}$", options: .regularExpression) != nil
    }

    @Test("pool status --json of a new pool")
    func emptyPoolStatus() throws {
        let sandbox = try Sandbox.withPool()
        let status = try sandbox.poolStatus()
        expectKeys(status, Self.poolStatusKeys, "pool status")
        #expect(uint(status["chunkSize"]) == 65536)
        #expect(uint(status["dataUsedBytes"]) == 0)
        #expect(uint(status["volumes"]) == 0)
        #expect(uint(status["snapshots"]) == 0)
        #expect((uint(status["generation"]) ?? 0) >= 1)
        let capacity = try #require(uint(status["capacityBytes"]))
        #expect(capacity > 200 * UInt64(MiB) && capacity <= 256 * UInt64(MiB), "capacity \(capacity) of a 256M pool")
        #expect(uint(status["dataFreeBytes"]) == capacity)
        let metadata = try #require(uint(status["metadataBytes"]))
        let metadataUsed = try #require(uint(status["metadataUsedBytes"]))
        #expect(metadataUsed > 0 && metadataUsed < metadata)
        #expect(try sandbox.volumes().isEmpty)
        #expect(try sandbox.snapshots().isEmpty)
        let check = try #require(try sandbox.json(["check"]) as? [String: Any])
        expectKeys(check, Self.checkKeys, "check")
        #expect((check["problems"] as? [Any])?.isEmpty == true)
        #expect(uint(check["generation"]) == uint(status["generation"]))
    }

    @Test("every listing's --json agrees with what was created")
    func populatedPool() throws {
        let sandbox = try Sandbox.withPool()
        let image = try sandbox.writeFile("a.img", randomBytes(256 * KiB, seed: 21))
        try sandbox.ok(["import", image, "alpha", "--create"])
        try sandbox.ok(["volume", "create", "beta", "--size", "8M"])
        try sandbox.ok(["snapshot", "create", "alpha@one"])
        try sandbox.ok(["snapshot", "create", "alpha@two"])
        try sandbox.ok(["snapshot", "create", "beta@empty"])
        try sandbox.ok(["clone", "alpha@one", "gamma"])

        let status = try sandbox.poolStatus()
        expectKeys(status, Self.poolStatusKeys, "pool status")
        #expect(uint(status["volumes"]) == 3)
        #expect(uint(status["snapshots"]) == 3)
        #expect(uint(status["dataUsedBytes"]) == 256 * 1024, "the image's 4 chunks, shared by snapshot and clone")
        #expect(
            (uint(status["dataUsedBytes"]) ?? 0) + (uint(status["dataFreeBytes"]) ?? 0) == uint(status["capacityBytes"])
        )

        let volumes = try sandbox.volumes()
        #expect(volumes.compactMap { $0["name"] as? String } == ["alpha", "beta", "gamma"], "sorted by name")
        var guids: Set<String> = []
        for volume in volumes {
            expectKeys(volume, Self.volumeKeys, "volume \(volume["name"] ?? "?")")
            #expect(Self.isTimestamp(volume["createdAt"]), "createdAt \(volume["createdAt"] ?? "nil")")
            #expect(Self.isGUID(volume["guid"]), "guid \(volume["guid"] ?? "nil")")
            if let guid = volume["guid"] as? String { guids.insert(guid) }
        }
        #expect(guids.count == 3, "volume GUIDs are unique")
        let alpha = try #require(volumes.first { $0["name"] as? String == "alpha" })
        #expect(uint(alpha["sizeBytes"]) == 256 * 1024)
        #expect(uint(alpha["allocatedBytes"]) == 256 * 1024)
        #expect(uint(alpha["snapshots"]) == 2)
        let beta = try #require(volumes.first { $0["name"] as? String == "beta" })
        #expect(uint(beta["sizeBytes"]) == 8 * UInt64(MiB))
        #expect(uint(beta["allocatedBytes"]) == 0)
        #expect(uint(beta["snapshots"]) == 1)
        let gamma = try #require(volumes.first { $0["name"] as? String == "gamma" })
        #expect(uint(gamma["allocatedBytes"]) == 256 * 1024)
        #expect(uint(gamma["snapshots"]) == 0)
        #expect(gamma["origin"] as? String == "alpha@one", "a clone lists its origin")

        let snapshots = try sandbox.snapshots()
        #expect(snapshots.count == 3)
        for snapshot in snapshots {
            expectKeys(snapshot, Self.snapshotKeys, "snapshot \(snapshot["name"] ?? "?")")
            #expect(Self.isTimestamp(snapshot["createdAt"]))
            #expect(Self.isGUID(snapshot["guid"]))
            #expect(uint(snapshot["exclusiveBytes"]) == 0, "nothing was overwritten, so nothing is exclusive")
        }
        let alphaSnapshots = try sandbox.snapshots("alpha")
        #expect(alphaSnapshots.compactMap { $0["name"] as? String } == ["one", "two"], "oldest first")
        #expect(alphaSnapshots.allSatisfy { $0["volume"] as? String == "alpha" })
        #expect(alphaSnapshots.allSatisfy { uint($0["sizeBytes"]) == 256 * 1024 })
        #expect(try sandbox.snapshots("gamma").isEmpty)
        let betaSnapshots = try sandbox.snapshots("beta")
        #expect(betaSnapshots.compactMap { $0["name"] as? String } == ["empty"])

        let diff = try #require(try sandbox.json(["diff", "alpha@one", "alpha"]) as? [[String: Any]])
        #expect(diff.isEmpty, "nothing changed since alpha@one: \(diff)")
        let check = try #require(try sandbox.json(["check"]) as? [String: Any])
        expectKeys(check, Self.checkKeys, "check")
        #expect((check["problems"] as? [Any])?.isEmpty == true, "\(check)")
        #expect(uint(check["generation"]) == uint(status["generation"]))
    }

    @Test("diff --json extents carry offset, length and kind")
    func diffKeysPresent() throws {
        let sandbox = try Sandbox.withPool()
        try sandbox.ok(["volume", "create", "vm1", "--size", "1M"])
        try sandbox.ok(["snapshot", "create", "vm1@a"])
        let image = try sandbox.writeFile("w.img", randomBytes(4 * KiB, seed: 8))
        try sandbox.ok(["import", image, "vm1"])
        let diff = try #require(try sandbox.json(["diff", "vm1@a", "vm1"]) as? [[String: Any]])
        #expect(diff.count == 1, "\(diff)")
        for extent in diff {
            expectKeys(extent, Self.diffKeys, "diff extent")
            #expect(extent["kind"] as? String == "data")
        }
    }

    @Test("the text listings show the same objects")
    func textListings() throws {
        let sandbox = try Sandbox.prepared()
        let volumes = try sandbox.ok(["volume", "list"])
        #expect(volumes.contains("NAME") && volumes.contains("vm1"), "\(volumes)")
        let snapshots = try sandbox.ok(["snapshot", "list"])
        #expect(snapshots.contains("vm1@s1"), "\(snapshots)")
        let status = try sandbox.ok(["pool", "status"])
        #expect(status.contains("volumes:") && status.contains("generation:"), "\(status)")
        let check = try sandbox.ok(["check"])
        #expect(check.contains("clean"), "\(check)")
        let diff = try sandbox.ok(["diff", "vm1@s1", "vm1"])
        #expect(diff.contains("OFFSET"), "\(diff)")
    }

    @Test("read-only commands commit nothing")
    func readOnlyCommandsDoNotCommit() throws {
        let sandbox = try Sandbox.prepared()
        let generation = uint(try sandbox.poolStatus()["generation"])
        for args in [
            ["volume", "list"], ["snapshot", "list"], ["snapshot", "list", "vm1"], ["diff", "vm1@s1", "vm1"], ["check"],
            ["pool", "status"], ["export", "vm1@s1", sandbox.path("x.img")],
        ] {
            try sandbox.ok(args)
        }
        #expect(uint(try sandbox.poolStatus()["generation"]) == generation)
    }
}
