// The usage contract of every subcommand: `--help` works and names the command and its
// options, `--version` prints the version, and a bad option, a missing argument or a
// malformed VOLUME@SNAPSHOT is a usage error (exit 64, message on stderr) that changes nothing.

import Foundation
import Testing

/// One subcommand and an option its help must document.
struct HelpCase: Sendable, CustomTestStringConvertible {
    let path: [String]
    let mentions: [String]
    var testDescription: String { self.path.joined(separator: " ") }
}

/// A complete, otherwise valid invocation, for adding one bad option to.
struct Invocation: Sendable, CustomTestStringConvertible {
    let args: [String]
    var testDescription: String { self.args.joined(separator: " ") }
}

@Suite("CLI usage: help, version, bad options, missing arguments")
struct UsageTests {
    static let helpCases: [HelpCase] = [
        HelpCase(path: ["pool"], mentions: ["init", "status"]),
        HelpCase(path: ["pool", "init"], mentions: ["--pool", "--size", "--chunk-size"]),
        HelpCase(path: ["pool", "status"], mentions: ["--pool", "--json"]),
        HelpCase(path: ["volume"], mentions: ["create", "list", "resize", "rename", "delete"]),
        HelpCase(path: ["volume", "create"], mentions: ["--pool", "--size", "<name>"]),
        HelpCase(path: ["volume", "list"], mentions: ["--pool", "--json"]),
        HelpCase(path: ["volume", "resize"], mentions: ["--pool", "--size", "--allow-shrink"]),
        HelpCase(path: ["volume", "rename"], mentions: ["--pool", "<old>", "<new>"]),
        HelpCase(path: ["volume", "delete"], mentions: ["--pool", "-r", "--recursive"]),
        HelpCase(path: ["snapshot"], mentions: ["create", "list", "delete", "rollback"]),
        HelpCase(path: ["snapshot", "create"], mentions: ["--pool", "VOLUME@SNAPSHOT"]),
        HelpCase(path: ["snapshot", "list"], mentions: ["--pool", "--json", "<volume>"]),
        HelpCase(path: ["snapshot", "delete"], mentions: ["--pool", "VOLUME@SNAPSHOT"]),
        HelpCase(path: ["snapshot", "rollback"], mentions: ["--pool", "VOLUME@SNAPSHOT"]),
        HelpCase(path: ["clone"], mentions: ["--pool", "VOLUME@SNAPSHOT"]),
        HelpCase(path: ["import"], mentions: ["--pool", "--create", "<file>", "<volume>"]),
        HelpCase(path: ["export"], mentions: ["--pool", "VOLUME@SNAPSHOT", "<file>"]),
        HelpCase(path: ["diff"], mentions: ["--pool", "--json", "VOLUME@FROM"]),
        HelpCase(path: ["check"], mentions: ["--pool", "--json"]),
        HelpCase(path: ["serve"], mentions: ["--pool", "--nbd", "--log-level", "10809", "--iscsi", "3260", "iqn.2026-11.org.strata:VOLUME"]),
        HelpCase(path: ["iscsi", "chap", "set"], mentions: ["--pool", "--user", "--secret", "--secret-file", "--mutual-user", "--mutual-secret"]),
        HelpCase(path: ["iscsi", "chap", "remove"], mentions: ["--pool", "VOLUME@SNAPSHOT"]),
        HelpCase(path: ["iscsi", "chap", "list"], mentions: ["--pool", "--json"]),
        HelpCase(path: ["connections"], mentions: ["--pool", "--json"]),
        HelpCase(path: ["pool", "init"], mentions: ["--metadata-size"]),
        HelpCase(path: ["volume", "delete"], mentions: ["--force"]),
        HelpCase(path: ["snapshot", "delete"], mentions: ["--force"]),
        HelpCase(path: ["volume"], mentions: ["layers", "flatten", "rebase"]),
        HelpCase(path: ["volume", "create"], mentions: ["--base", "qcow2"]),
        HelpCase(path: ["volume", "layers"], mentions: ["--pool", "--json", "<name>"]),
        HelpCase(path: ["volume", "flatten"], mentions: ["--pool", "<name>", "resumes", "--rate"]),
        HelpCase(path: ["volume", "rebase"], mentions: ["--pool", "--base", "<name>"]),
        HelpCase(path: ["layer"], mentions: ["push", "list"]),
        HelpCase(path: ["layer", "push"], mentions: ["--pool", "<volume>", "<name>", "layerN"]),
        HelpCase(path: ["layer", "list"], mentions: ["--pool", "--json", "<volume>"]),
        HelpCase(path: ["overlay"], mentions: ["--pool", "<file>", "--name", "--nbd", "--iscsi", "qcow2"]),
        HelpCase(path: ["serve"], mentions: ["--overlay", "--overlay-name"]),
        HelpCase(path: ["serve"], mentions: ["--tls", "--tls-certificates", "--tls-verify-peer", "--tls-psk", "nbds://"]),
        HelpCase(path: ["serve"], mentions: ["--iscsi-physical-block-size", "512", "4096"]),
    ]

    @Test("--help exits 0 and describes the command", arguments: Self.helpCases)
    func help(_ command: HelpCase) throws {
        let result = try run(command.path + ["--help"])
        expectSuccess(result)
        #expect(result.stdout.contains("USAGE: strata \(command.path.joined(separator: " "))"), "\(result)")
        for word in command.mentions {
            #expect(
                result.stdout.contains(word), "help of `\(command.testDescription)` does not mention \(word): \(result)"
            )
        }
        #expect(result.stderr.isEmpty, "\(result)")
    }

    @Test("`strata --help` lists every subcommand and the pool option's fallbacks")
    func topLevelHelp() throws {
        let result = try run(["--help"])
        expectSuccess(result)
        for command in [
            "serve", "pool", "volume", "snapshot", "clone", "import", "export", "diff", "check", "connections", "iscsi",
            "layer", "overlay",
        ] {
            #expect(result.stdout.contains(command), "top-level help lacks \(command): \(result)")
        }
        #expect(result.stdout.contains("STRATA_POOL"), "\(result)")
        #expect(result.stdout.contains("VOLUME@SNAPSHOT"), "\(result)")
    }

    @Test(
        "serve refuses a bad address, log level, commit interval or TLS mode before touching any pool",
        arguments: [
            ["--nbd", "bogus"], ["--nbd", "127.0.0.1:99999"], ["--iscsi", "bogus"], ["--iscsi", "127.0.0.1:0"],
            ["--iscsi", "127.0.0.1:3260", "--iscsi", "127.0.0.1:3260"], ["--iscsi", "off", "--iscsi", "127.0.0.1:3261"],
            ["--log-level", "loud"], ["--commit-interval", "0"], ["--overlay-name", "vm"],
            ["--overlay", "disk.qcow2", "--overlay-name", "bad/name"], ["--tls", "maybe"],
            ["--iscsi-physical-block-size", "1024"],
        ])
    func serveRefusesBadOptions(_ arguments: [String]) throws {
        let sandbox = try Sandbox()
        let result = try run(["serve", "--pool", sandbox.pool] + arguments, cwd: sandbox.root)
        #expect(!result.signaled, "\(result)")
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.contains("Usage: strata serve"), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: sandbox.pool), "serve created a pool before refusing")
    }

    @Test(
        "serve refuses an iSCSI physical block size other than 512 or 4096, naming the option and both values",
        arguments: ["1024", "8192", "0", "4k", ""])
    func serveRefusesBadPhysicalBlockSize(_ value: String) throws {
        let sandbox = try Sandbox()
        let result = try run(["serve", "--pool", sandbox.pool, "--iscsi-physical-block-size", value], cwd: sandbox.root)
        #expect(!result.signaled, "\(result)")
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.contains("--iscsi-physical-block-size '\(value)'"), "\(result)")
        #expect(result.stderr.contains("use 512 or 4096"), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: sandbox.pool), "serve created a pool before refusing")
    }

    @Test("`strata` with no subcommand prints usage and does not touch any pool")
    func noSubcommand() throws {
        let sandbox = try Sandbox()
        let result = try run([], cwd: sandbox.root)
        #expect(!result.signaled, "\(result)")
        #expect(result.output.contains("USAGE: strata"), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: sandbox.path("strata-data")))
    }

    @Test("--version prints the version and exits 0")
    func version() throws {
        let result = try run(["--version"])
        expectSuccess(result)
        let version = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression) != nil, "\(result)")
    }

    static let validInvocations: [Invocation] = [
        Invocation(args: ["pool", "init", "--size", "256M"]),
        Invocation(args: ["pool", "status"]),
        Invocation(args: ["pool", "status", "--json"]),
        Invocation(args: ["volume", "create", "fresh", "--size", "1M"]),
        Invocation(args: ["volume", "list"]),
        Invocation(args: ["volume", "resize", "vm1", "--size", "2M"]),
        Invocation(args: ["volume", "resize", "vm1", "--size", "512K", "--allow-shrink"]),
        Invocation(args: ["volume", "rename", "vm1", "renamed"]),
        Invocation(args: ["volume", "delete", "vm1", "-r"]),
        Invocation(args: ["snapshot", "create", "vm1@new"]),
        Invocation(args: ["snapshot", "list", "vm1"]),
        Invocation(args: ["snapshot", "delete", "vm1@s1"]),
        Invocation(args: ["snapshot", "rollback", "vm1@s1"]),
        Invocation(args: ["clone", "vm1@s1", "copy"]),
        Invocation(args: ["import", "IMAGE", "vm1"]),
        Invocation(args: ["import", "IMAGE", "imported", "--create"]),
        Invocation(args: ["export", "vm1@s1", "OUT"]),
        Invocation(args: ["diff", "vm1@s1", "vm1", "--json"]),
        Invocation(args: ["check", "--json"]),
    ]

    @Test("a bad option is a usage error (64) on stderr and changes nothing", arguments: Self.validInvocations)
    func badOption(_ invocation: Invocation) throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        let result = try sandbox.strata(sandbox.substitute(invocation.args) + ["--no-such-option"])
        expectRefused(result, status: usageErrorStatus)
        #expect(result.stderr.contains("--no-such-option"), "\(result)")
        #expect(result.stdout.isEmpty, "\(result)")
        #expect(try sandbox.state() == before, "`\(invocation.testDescription) --no-such-option` changed the pool")
        #expect(!FileManager.default.fileExists(atPath: sandbox.path("out.img")))
    }

    @Test(
        "the same invocations, without the bad option, succeed (the fixture is valid)", arguments: Self.validInvocations
    )
    func validInvocation(_ invocation: Invocation) throws {
        let sandbox = try Sandbox.prepared()
        let args = sandbox.substitute(invocation.args)
        let result = try sandbox.strata(args)
        if invocation.args.starts(with: ["pool", "init"]) {
            // The fixture already has a pool: a second init must be refused (see ValidationTests).
            expectRefused(result)
        } else {
            expectSuccess(result)
        }
    }

    static let usageErrors: [Invocation] = [
        Invocation(args: ["volume", "list", "--no-such-option"]),
        Invocation(args: ["volume", "create", "vm9", "--size", "12X"]),
        Invocation(args: ["snapshot", "create", "vm1"]),
        Invocation(args: ["pool", "init", "--size", "256M", "--chunk-size", "big"]),
    ]

    @Test("a usage error shows the usage of the subcommand at fault", arguments: Self.usageErrors)
    func usageOfTheSubcommand(_ invocation: Invocation) throws {
        let sandbox = try Sandbox()
        let result = try sandbox.strata(invocation.args)
        expectRefused(result, status: usageErrorStatus)
        let path = invocation.args.prefix { !$0.hasPrefix("-") && $0 != "vm9" && $0 != "vm1" }.joined(separator: " ")
        let verify = {
            #expect(result.stderr.contains("Usage: strata \(path)"), "usage is not that of `strata \(path)`: \(result)")
        }
        verify()
    }

    @Test("an unknown subcommand is a usage error")
    func unknownSubcommand() throws {
        let result = try run(["frobnicate"])
        expectRefused(result, status: usageErrorStatus)
        #expect(result.stderr.contains("frobnicate"), "\(result)")
    }

    static let missingArguments: [Invocation] = [
        Invocation(args: ["volume", "create", "--size", "1M"]),
        Invocation(args: ["volume", "create", "vm9"]),
        Invocation(args: ["volume", "resize", "vm1"]),
        Invocation(args: ["volume", "rename", "vm1"]),
        Invocation(args: ["volume", "delete"]),
        Invocation(args: ["snapshot", "create"]),
        Invocation(args: ["snapshot", "delete"]),
        Invocation(args: ["snapshot", "rollback"]),
        Invocation(args: ["clone", "vm1@s1"]),
        Invocation(args: ["import", "IMAGE"]),
        Invocation(args: ["export", "vm1"]),
        Invocation(args: ["diff", "vm1@s1"]),
        Invocation(args: ["pool", "init", "--size"]),
        Invocation(args: ["volume", "layers"]),
        Invocation(args: ["volume", "flatten"]),
        Invocation(args: ["volume", "rebase", "vm1"]),
        Invocation(args: ["layer", "push"]),
        Invocation(args: ["layer", "list"]),
        Invocation(args: ["overlay"]),
    ]

    @Test("a missing argument is a usage error naming what is missing", arguments: Self.missingArguments)
    func missingArgument(_ invocation: Invocation) throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        let result = try sandbox.strata(sandbox.substitute(invocation.args))
        expectRefused(result, status: usageErrorStatus)
        #expect(result.stderr.lowercased().contains("missing"), "\(result)")
        #expect(try sandbox.state() == before)
    }

    static let malformedTargets: [Invocation] = [
        Invocation(args: ["snapshot", "create", "vm1"]),
        Invocation(args: ["snapshot", "create", "vm1@"]),
        Invocation(args: ["snapshot", "create", "@s2"]),
        Invocation(args: ["snapshot", "delete", "vm1"]),
        Invocation(args: ["snapshot", "rollback", "vm1"]),
        Invocation(args: ["clone", "vm1", "copy"]),
        Invocation(args: ["diff", "vm1", "vm1"]),
    ]

    @Test(
        "a snapshot argument without VOLUME@SNAPSHOT is refused with the expected form",
        arguments: Self.malformedTargets)
    func malformedSnapshotTarget(_ invocation: Invocation) throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        let result = try sandbox.strata(invocation.args)
        expectRefused(result, status: usageErrorStatus)
        #expect(result.stderr.contains("VOLUME@SNAPSHOT"), "\(result)")
        #expect(try sandbox.state() == before)
    }
}
