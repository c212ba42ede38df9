// The CLI contract of send, receive and replicate: help names every option, a bad option or a
// missing argument is a usage error that changes nothing, a stream to a terminal or from
// nowhere is refused, and a corrupted stream file is refused naming the byte offset with the
// target pool unchanged. Streams go through files here (the harness gives no pipes).

import Foundation
import Testing

@Suite("CLI contract: send, receive, replicate")
struct StreamCLITests {
    static let helpCases: [HelpCase] = [
        HelpCase(path: ["send"], mentions: ["--pool", "--from", "--output", "--format", "--resume", "--json", "VOLUME@SNAPSHOT"]),
        HelpCase(path: ["receive"], mentions: ["--pool", "--input", "--force", "--abort", "--token", "--json"]),
        HelpCase(path: ["replicate"], mentions: ["start", "stop", "status", "promote"]),
        HelpCase(path: ["replicate", "start"], mentions: ["--to", "--secret-file", "--every", "--keep"]),
        HelpCase(path: ["replicate", "status"], mentions: ["--json"]),
        HelpCase(path: ["replicate", "promote"], mentions: ["<volume>"]),
        HelpCase(path: ["serve"], mentions: ["--replication", "--replication-secret-file"]),
    ]

    @Test("--help exits 0 and documents the options", arguments: Self.helpCases)
    func help(_ command: HelpCase) throws {
        let result = try run(command.path + ["--help"])
        expectSuccess(result)
        for word in command.mentions {
            #expect(result.stdout.contains(word), "help of `\(command.testDescription)` lacks \(word): \(result)")
        }
    }

    static let usageErrors: [Invocation] = [
        Invocation(args: ["send", "vm1@s1", "-o", "OUT", "--no-such-option"]),
        Invocation(args: ["send", "vm1", "-o", "OUT"]),
        Invocation(args: ["send", "vm1@s1", "-o", "OUT", "--format", "tar"]),
        Invocation(args: ["send"]),
        Invocation(args: ["receive"]),
        Invocation(args: ["receive", "vm9", "--no-such-option"]),
        Invocation(args: ["replicate", "start", "vm1", "--to", "nowhere", "--secret-file", "x"]),
        Invocation(args: ["replicate", "start", "vm1", "--to", "127.0.0.1:1", "--secret-file", "x", "--every", "soon"]),
        Invocation(args: ["replicate", "start", "vm1"]),
    ]

    @Test("a bad option or a missing argument is a usage error (64) that changes nothing", arguments: Self.usageErrors)
    func usageError(_ invocation: Invocation) throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        let args = invocation.args.map { $0 == "OUT" ? sandbox.path("out.stream") : $0 }
        let result = try sandbox.strata(args)
        expectRefused(result, status: usageErrorStatus)
        #expect(try sandbox.state() == before)
        #expect(!FileManager.default.fileExists(atPath: sandbox.path("out.stream")))
    }

    @Test("send to a file and receive it into a new volume; the copy reads the same")
    func roundTrip() throws {
        let sandbox = try Sandbox.prepared()
        let stream = sandbox.path("s1.stream")
        expectSuccess(try sandbox.strata(["send", "vm1@s1", "-o", stream, "--json"]))
        let received = try sandbox.strata(["receive", "copy", "-i", stream, "--json"])
        expectSuccess(received)
        #expect(received.stdout.contains("\"snapshot\" : \"copy@s1\""), "\(received)")
        expectSuccess(try sandbox.strata(["export", "vm1@s1", sandbox.path("a.raw")]))
        expectSuccess(try sandbox.strata(["export", "copy@s1", sandbox.path("b.raw")]))
        #expect(try Data(contentsOf: URL(fileURLWithPath: sandbox.path("a.raw")))
            == Data(contentsOf: URL(fileURLWithPath: sandbox.path("b.raw"))))
    }

    @Test("a corrupted or missing stream is refused naming the offset; the pool is unchanged")
    func corruptedInput() throws {
        let sandbox = try Sandbox.prepared()
        let stream = sandbox.path("s1.stream")
        expectSuccess(try sandbox.strata(["send", "vm1@s1", "-o", stream]))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: stream))
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: sandbox.path("bad.stream")))
        let before = try sandbox.state()
        let result = try sandbox.strata(["receive", "copy", "-i", sandbox.path("bad.stream")])
        expectRefused(result, status: 1)
        #expect(result.stderr.contains("byte offset"), "\(result)")
        #expect(result.stderr.contains("resume token"), "\(result)")
        // The refused receive committed only its hidden staging: the listings are as before.
        #expect(try sandbox.state().volumes == before.volumes)
        #expect(try sandbox.state().snapshots == before.snapshots)
        expectSuccess(try sandbox.strata(["receive", "--abort", "copy"]))
        #expect(try sandbox.state().volumes == before.volumes)
        let missing = try sandbox.strata(["receive", "copy", "-i", sandbox.path("nothing.stream")])
        expectRefused(missing, status: 1)
        #expect(missing.stderr.contains("nothing.stream"), "\(missing)")
        let notStream = try sandbox.strata(["receive", "copy", "-i", sandbox.path("image.img")])
        expectRefused(notStream, status: 1)
        #expect(notStream.stderr.contains("byte offset 0"), "\(notStream)")
    }

    @Test("replicate start and status need a running daemon, and say so")
    func replicateNeedsDaemon() throws {
        let sandbox = try Sandbox.prepared()
        let result = try sandbox.strata(["replicate", "status"])
        expectRefused(result, status: 1)
        #expect(result.stderr.contains("strata serve"), "\(result)")
    }
}
