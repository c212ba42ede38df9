// The pool lock as a user meets it: while another process holds the pool (a daemon, or here
// the test process itself through `PoolLock`, the public API a daemon uses), every command
// that opens the pool fails at once, names the holder's PID and says what to do; once the
// holder lets go, the same command works.

import Foundation
import StrataCore
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

@Suite("CLI pool lock")
struct PoolLockTests {
    static let writers: [[String]] = [
        ["volume", "create", "vm9", "--size", "1M"],
        ["volume", "resize", "vm1", "--size", "2M"],
        ["volume", "rename", "vm1", "vm9"],
        ["volume", "delete", "vm2"],
        ["snapshot", "create", "vm1@s9"],
        ["snapshot", "delete", "vm1@s1"],
        ["snapshot", "rollback", "vm1@s1"],
        ["clone", "vm1@s1", "vm9"],
        ["import", "IMAGE", "vm1"],
    ]

    static let readers: [[String]] = [
        ["pool", "status"], ["volume", "list"], ["snapshot", "list"], ["export", "vm1", "OUT"],
        ["diff", "vm1@s1", "vm1"],
        ["check"],
    ]

    @Test("a held pool lock refuses every command, naming this process, and nothing changes")
    func heldExclusively() throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        let pid = getpid()
        do {
            let lock = try PoolLock.acquire(directory: sandbox.pool, exclusive: true)
            for args in Self.writers + Self.readers {
                let result = try sandbox.strata(sandbox.substitute(args))
                expectRefused(result, status: 1)
                #expect(result.stderr.contains("locked by process \(pid)"), "\(result)")
                #expect(result.stderr.contains(sandbox.pool), "names the pool: \(result)")
                #expect(result.stderr.contains("stop that process"), "gives the fix: \(result)")
            }
            #expect(!FileManager.default.fileExists(atPath: sandbox.path("out.img")))
            withExtendedLifetime(lock) {}
        }
        // Released: the pool is as it was, and a writer now succeeds.
        #expect(try sandbox.state() == before)
        expectSuccess(try sandbox.strata(["volume", "create", "vm9", "--size", "1M"]))
        #expect(try sandbox.volume("vm9") != nil)
    }

    @Test("a shared (read-only) holder lets readers in but keeps writers out")
    func heldShared() throws {
        let sandbox = try Sandbox.prepared()
        let before = try sandbox.baseline()
        do {
            let lock = try PoolLock.acquire(directory: sandbox.pool, exclusive: false)
            expectSuccess(try sandbox.strata(["volume", "list"]))
            expectSuccess(try sandbox.strata(["export", "vm1@s1", sandbox.path("out.img")]))
            let result = try sandbox.strata(["volume", "create", "vm9", "--size", "1M"])
            expectRefused(result, status: 1)
            #expect(result.stderr.contains("locked by process"), "\(result)")
            withExtendedLifetime(lock) {}
        }
        #expect(try sandbox.state() == before)
    }

    @Test("a writer blocked by a shared holder is not told the PID of a process that has exited")
    func sharedHolderIsNotAStalePID() throws {
        let sandbox = try Sandbox.withPool()
        // The last writer (a `strata` process, gone by now) left its PID in the lock file.
        try sandbox.ok(["volume", "create", "vm1", "--size", "1M"])
        let stale = try String(contentsOfFile: sandbox.pool + "/lock", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(Int32(stale) != nil && Int32(stale) != getpid(), "lock file holds \(stale)")
        let lock = try PoolLock.acquire(directory: sandbox.pool, exclusive: false)
        let result = try sandbox.strata(["volume", "create", "vm2", "--size", "1M"])
        withExtendedLifetime(lock) {}
        expectRefused(result, status: 1)
        do {
            #expect(!result.stderr.contains("locked by process \(stale)"), "names exited process \(stale): \(result)")
        }
    }
}
