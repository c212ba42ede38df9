// Daemon-to-daemon replication in one process: a replica server and a replication job on two
// simulated pools over loopback TCP, on the real transport (SwiftNIO), each side with its own
// thread pool as two daemons have. SimulatedReplicationTests runs the same code on the simulated
// network with faults. A wrong secret is refused (and counted as an error, nothing
// replicated); the right one replicates full then incremental cycles, keeping --keep snapshots
// on both sides, into a read-only replica that `promote` makes writable. Polls with a deadline;
// no timing is asserted.

import Foundation
import Logging
import NIOPosix
@testable import StrataCore
@testable import StrataReplication
import StrataTesting
import Testing

@Suite struct ReplicationTests {
    @Test func jobsNoDaemonCanRunAreRefused() throws {
        let good = ReplicationJob(volume: "vm", host: "h", port: 10810, everySeconds: 30, keep: 3, secretFile: "/s")
        try good.validate()
        var bounded = good
        bounded.rateBytesPerSecond = 50 << 20
        try bounded.validate()
        let bad: [(ReplicationJob, String)] = [
            (ReplicationJob(volume: "vm", host: "h", port: 10810, everySeconds: 0, keep: 3, secretFile: "/s"), "between cycles"),
            (ReplicationJob(volume: "vm", host: "h", port: 10810, everySeconds: .infinity, keep: 3, secretFile: "/s"), "between cycles"),
            (ReplicationJob(volume: "vm", host: "h", port: 10810, everySeconds: 30, keep: 0, secretFile: "/s"), "keep at least 1"),
            (ReplicationJob(volume: "vm", host: "h", port: 0, everySeconds: 30, keep: 3, secretFile: "/s"), "not a TCP port"),
            (ReplicationJob(volume: "vm", host: "h", port: 10810, everySeconds: 30, keep: 3, secretFile: "/s", rateBytesPerSecond: 0), "rate bound"),
        ]
        for (job, message) in bad {
            let error = try #require(throws: StrataError.self) { try job.validate() }
            #expect(error.message.contains("replicate vm") && error.message.contains(message), "\(error.message)")
        }
        // A job saved before the rate bound existed loads without one.
        let saved = #"[{"volume":"vm","host":"h","port":10810,"everySeconds":30,"keep":3,"secretFile":"/s"}]"#
        let jobs = try JSONDecoder().decode([ReplicationJob].self, from: Data(saved.utf8))
        #expect(jobs == [good])
    }

    /// The deadline is a liveness bound, not a timing: the replicator and the replica server run
    /// as tasks on the cooperative pool, which the suite's long synchronous tests (the model and
    /// crash runs) can hold for minutes on a 2-core machine, so it is generous.
    func waitUntil(_ what: String, seconds: Double = 600, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while try !condition() {
            try #require(Date() < deadline, "gave up waiting for \(what)")
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Runs the replica server and the replicator while `body` runs, then closes both and waits
    /// for their tasks, as the daemon's services do.
    func whileRunning(
        _ server: ReplicationServer, _ replicator: Replicator, _ body: () async throws -> Void
    ) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await server.run() }
            group.addTask { await replicator.run() }
            defer {
                server.close()
                replicator.close()
            }
            try await body()
        }
    }

    @Test func wrongSecretIsRefusedAndTheRightOneReplicates() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-repl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("the-shared-secret".utf8).write(to: URL(fileURLWithPath: directory + "/secret"))
        try Data("not-the-secret".utf8).write(to: URL(fileURLWithPath: directory + "/wrong"))
        let logger = Logger(label: "replication-test")
        let (_, source) = try makePool()
        let (replicaDevice, replica) = try makePool()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sourceThreads = NIOThreadPool(numberOfThreads: 4)
        let replicaThreads = NIOThreadPool(numberOfThreads: 4)
        sourceThreads.start()
        replicaThreads.start()
        let transport = NIOTransport(group: group)
        let server = try await ReplicationServer.bind(
            TransportAddress(host: "127.0.0.1", port: 0), secretFile: directory + "/secret", pool: replica,
            transport: transport, workers: replicaThreads, logger: logger)
        try source.createVolume("vm", size: 2 << 20)
        let handle = try source.handle("vm")
        var random = SeededRandom(seed: 3)
        try source.write(handle, at: 0, random.bytes(512 << 10))
        let replicator = Replicator(
            pool: source, directory: directory, transport: transport, workers: sourceThreads, logger: logger)
        try await self.whileRunning(server, replicator) {
            try await self.replicate(
                source: source, replica: replica, server: server, replicator: replicator, threads: sourceThreads,
                directory: directory)
        }
        try await sourceThreads.shutdownGracefully()
        try await replicaThreads.shutdownGracefully()
        try await group.shutdownGracefully()
        #expect(replicator.status().isEmpty, "closing the replicator stops every job")
        // The replica is read-only until promoted.
        let replicaHandle = try replica.handle("vm")
        #expect(replicaHandle.readOnly)
        #expect(throws: StrataError.self) { try replica.write(replicaHandle, at: 0, [1, 2, 3]) }
        try replica.setReplica("vm", false)
        try replica.write(try replica.handle("vm"), at: 0, [UInt8](repeating: 9, count: 512))
        try replica.flush()
        #expect(Pool.check(device: replicaDevice).clean)
    }

    func replicate(
        source: Pool, replica: Pool, server: ReplicationServer, replicator: Replicator, threads: NIOThreadPool,
        directory: String
    ) async throws {
        let handle = try source.handle("vm")
        var random = SeededRandom(seed: 4)
        let job = ReplicationJob(
            volume: "vm", host: "127.0.0.1", port: server.port, everySeconds: 0.2, keep: 2,
            secretFile: directory + "/wrong")
        // `start` and `stop` wait for a job they replace or stop: on a pool thread, never the cooperative pool.
        try await threads.runIfActive { try replicator.start(job) }
        // The refusal names the wrong secret. A replica that refuses closes the connection, and
        // if the source's next bytes reach it first, its kernel resets the connection and the
        // source sees only that; the retry a second later then reads the refusal.
        try await self.waitUntil("a refusal naming the wrong secret", seconds: 30) {
            replicator.status().first?.lastError?.contains("wrong secret") == true
        }
        #expect(try replica.listVolumes().isEmpty)

        var right = job
        right.secretFile = directory + "/secret"
        // Bounded: the streams go through the paced drain and still arrive whole.
        right.rateBytesPerSecond = 256 << 20
        let rightJob = right
        try await threads.runIfActive { try replicator.start(rightJob) }
        try await self.waitUntil("two cycles") { (replicator.status().first?.cycles ?? 0) >= 2 }
        try source.write(handle, at: 1 << 20, random.bytes(64 << 10))
        let cycles = replicator.status().first?.cycles ?? 0
        try await self.waitUntil("two more cycles") { (replicator.status().first?.cycles ?? 0) >= cycles + 2 }
        try await threads.runIfActive { replicator.stop("vm") }

        let held = try replica.listSnapshots(of: "vm")
        #expect(held.count <= 2)
        let ours = try source.listSnapshots(of: "vm")
        #expect(ours.count <= 2)
        let newest = try #require(held.last)
        #expect(ours.contains { $0.name == newest.name && $0.guid == newest.guid })
        let expected = try source.read(try source.handle("vm@\(newest.name)"), at: 0, count: 2 << 20)
        #expect(try replica.read(try replica.handle("vm@\(newest.name)"), at: 0, count: 2 << 20) == expected)
        #expect(try source.read(handle, at: 0, count: 2 << 20) == expected)
    }
}
