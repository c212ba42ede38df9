// `strata iscsi chap`: secrets are checked before anything is written, stored mode 0600, never
// listed, and refusals name the object and the fix.

import Foundation
import Testing

@Suite("CLI contract: iscsi chap")
struct ISCSICLITests {
    @Test func setListAndRemove() throws {
        let sandbox = try Sandbox.prepared()
        let set = try sandbox.ok(["iscsi", "chap", "set", "vm1", "--user", "alice", "--secret", "alice-secret-1"])
        #expect(set.contains("iqn.2026-11.org.strata:vm1"))
        try sandbox.ok([
            "iscsi", "chap", "set", "--user", "bob", "--secret", "bob-secret-123", "--mutual-user", "tgt",
            "--mutual-secret", "target-secret-9",
        ])
        let path = sandbox.pool + "/iscsi-chap.json"
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let listing = try sandbox.ok(["iscsi", "chap", "list"])
        #expect(listing.contains("alice") && listing.contains("bob") && listing.contains("tgt"))
        #expect(!listing.contains("secret"), "a secret was listed: \(listing)")
        let rows = try sandbox.json(["iscsi", "chap", "list"]) as? [[String: Any]]
        #expect(rows?.count == 2)
        try sandbox.ok(["iscsi", "chap", "remove", "vm1"])
        let again = try sandbox.strata(["iscsi", "chap", "remove", "vm1"])
        expectRefused(again, status: 1)
        #expect(again.stderr.contains("chap list"), "\(again)")
    }

    @Test(
        "set refuses bad secrets and unknown targets, writing nothing",
        arguments: [
            ["vm1", "--user", "alice", "--secret", "short"],
            ["vm1", "--user", "alice"],
            ["vm1", "--user", "alice", "--secret", "alice-secret-1", "--mutual-user", "tgt"],
            ["vm1", "--user", "alice", "--secret", "same-secret-12", "--mutual-user", "t", "--mutual-secret", "same-secret-12"],
            ["nosuch", "--user", "alice", "--secret", "alice-secret-1"],
            ["vm1@nosuch", "--user", "alice", "--secret", "alice-secret-1"],
        ])
    func refusals(_ arguments: [String]) throws {
        let sandbox = try Sandbox.prepared()
        let result = try sandbox.strata(["iscsi", "chap", "set"] + arguments)
        expectRefused(result)
        #expect(!FileManager.default.fileExists(atPath: sandbox.pool + "/iscsi-chap.json"), "\(result)")
    }

    @Test func setNeedsAPool() throws {
        let sandbox = try Sandbox()
        let result = try sandbox.strata(["iscsi", "chap", "set", "--user", "a", "--secret", "alice-secret-1"])
        expectRefused(result)
        #expect(result.stderr.contains("pool init"), "\(result)")
    }
}
