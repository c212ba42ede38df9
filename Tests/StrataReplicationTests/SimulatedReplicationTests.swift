// Daemon-to-daemon replication over StrataTesting's simulated network: no sockets, faults drawn
// from a seed. Each test prints its seed and replays with STRATA_SEED=<seed>; a failure prints
// the seed and the network's fault trace. The tests assert that the faults they are about really
// happened (the counters), so none passes by never reaching its hard case. Polls with liveness
// deadlines; no timing is asserted.

import Foundation
import Logging
import NIOPosix
@testable import StrataCore
@testable import StrataReplication
import StrataTesting
import Synchronization
import Testing

/// A source pool with a replication job and a replica pool with a replication server, on one
/// simulated network, each with its own thread pool (as two daemons have).
final class SimReplication: Sendable {
    let seed: UInt64
    let network: SimNetwork
    let directory: String
    let logs: LogCapture
    let source: Pool
    let replica: Pool
    let replicaDevice: SimDevice
    let server: ReplicationServer
    let replicator: Replicator
    let sourceThreads: NIOThreadPool
    let replicaThreads: NIOThreadPool

    init(seed: UInt64, faults: SimFaults, timeout: Duration = .seconds(2)) async throws {
        self.seed = seed
        print("SimulatedReplicationTests: seed=\(seed) (replay: STRATA_SEED=\(seed) swift test --filter SimulatedReplicationTests)")
        let network = SimNetwork(seed: seed, faults: faults, timeout: timeout)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-simrepl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Data("the-shared-secret".utf8).write(to: URL(fileURLWithPath: directory + "/secret"))
        try Data("not-the-secret".utf8).write(to: URL(fileURLWithPath: directory + "/wrong"))
        let (_, source) = try makePool()
        let (replicaDevice, replica) = try makePool()
        let sourceThreads = NIOThreadPool(numberOfThreads: 4)
        let replicaThreads = NIOThreadPool(numberOfThreads: 4)
        sourceThreads.start()
        replicaThreads.start()
        let logs = LogCapture()
        self.network = network
        self.directory = directory
        self.source = source
        self.replica = replica
        self.replicaDevice = replicaDevice
        self.sourceThreads = sourceThreads
        self.replicaThreads = replicaThreads
        self.logs = logs
        self.server = try await ReplicationServer.bind(
            TransportAddress(host: "replica", port: 0), secretFile: directory + "/secret", pool: replica,
            transport: network.transport(host: "replica"), workers: replicaThreads, logger: logs.logger)
        self.replicator = Replicator(
            pool: source, directory: directory, transport: network.transport(host: "source"),
            workers: sourceThreads, logger: logs.logger)
    }

    func job(_ volume: String, secret: String = "secret", every: Double = 0.1, keep: Int = 2) -> ReplicationJob {
        ReplicationJob(
            volume: volume, host: "replica", port: self.server.port, everySeconds: every, keep: keep,
            secretFile: self.directory + "/" + secret)
    }

    /// Starts `job` on a pool thread (`start` waits for a job it replaces; never on the cooperative pool).
    func start(_ job: ReplicationJob) async throws {
        try await self.sourceThreads.runIfActive { try self.replicator.start(job) }
    }

    func stop(_ volume: String) async throws {
        try await self.sourceThreads.runIfActive { self.replicator.stop(volume) }
    }

    func status(_ volume: String) -> ReplicationStatus? { self.replicator.status().first { $0.volume == volume } }

    /// What to print beside a failed expectation.
    var replay: String {
        "seed=\(self.seed); replay: STRATA_SEED=\(self.seed) swift test --filter SimulatedReplicationTests; network: \(self.network.counters); trace: \(self.network.trace.suffix(20)); log: \(self.logs.messages.withLock { $0.suffix(10) })"
    }

    /// Runs the server and the replicator while `body` runs, then closes both and waits for them.
    func run(_ body: () async throws -> Void) async throws {
        let outcome: Result<Void, any Error>
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await self.server.run() }
                group.addTask { await self.replicator.run() }
                defer {
                    self.server.close()
                    self.replicator.close()
                }
                try await body()
            }
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        try await self.sourceThreads.shutdownGracefully()
        try await self.replicaThreads.shutdownGracefully()
        try outcome.get()
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    func waitUntil(_ what: String, seconds: Double = 600, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while try !condition() {
            try #require(Date() < deadline, "gave up waiting for \(what); \(self.replay)")
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Writes `count` seeded random bytes at `offset` of `volume`.
    func write(_ volume: String, at offset: UInt64, count: Int, salt: UInt64) throws {
        var random = SeededRandom(seed: self.seed ^ salt)
        try self.source.write(try self.source.handle(volume), at: offset, random.bytes(count))
    }

    /// The replica holds the source's newest replicated snapshot of `volume`, byte for byte.
    func expectReplicated(_ volume: String, size: Int) throws {
        let held = try self.replica.listSnapshots(of: volume)
        let newest = try #require(held.last, "the replica holds no snapshot of \(volume); \(self.replay)")
        let ours = try self.source.listSnapshots(of: volume)
        #expect(ours.contains { $0.name == newest.name && $0.guid == newest.guid }, "\(self.replay)")
        let expected = try self.source.read(try self.source.handle("\(volume)@\(newest.name)"), at: 0, count: size)
        let actual = try self.replica.read(try self.replica.handle("\(volume)@\(newest.name)"), at: 0, count: size)
        #expect(actual == expected, "\(volume)@\(newest.name) differs on the replica; \(self.replay)")
    }
}

/// Keeps every log message, so a test can see what the replica did (a resumed receive).
final class LogCapture: Sendable {
    let messages = Mutex<[String]>([])

    var logger: Logger {
        Logger(label: "sim-replication") { _ in CaptureHandler(capture: self) }
    }

    func contains(_ predicate: (String) -> Bool) -> Bool { self.messages.withLock { $0.contains(where: predicate) } }

    struct CaptureHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            self.capture.messages.withLock { $0.append(event.message.description) }
        }
    }
}

@Suite struct SimulatedReplicationTests {
    static let volumeSize = 2 << 20

    @Test(arguments: SimSeeds.list(count: 2, salt: 0x5EED_0001))
    func replicatesThroughDelaysSlowReadersAndReorderedConnects(seed: UInt64) async throws {
        var faults = SimFaults()
        faults.delayMax = .milliseconds(2)
        faults.connectDelayMax = .milliseconds(5)
        faults.windowBytes = 16 << 10
        faults.readPauseMax = .microseconds(500)
        let sim = try await SimReplication(seed: seed, faults: faults)
        try sim.source.createVolume("vm", size: UInt64(Self.volumeSize))
        try sim.write("vm", at: 0, count: 512 << 10, salt: 1)
        try await sim.run {
            try await sim.start(sim.job("vm"))
            try await sim.waitUntil("two cycles") { (sim.status("vm")?.cycles ?? 0) >= 2 }
            try sim.write("vm", at: 1 << 20, count: 64 << 10, salt: 2)
            let cycles = sim.status("vm")?.cycles ?? 0
            try await sim.waitUntil("two more cycles") { (sim.status("vm")?.cycles ?? 0) >= cycles + 2 }
            try await sim.stop("vm")
        }
        try sim.expectReplicated("vm", size: Self.volumeSize)
        #expect(try sim.replica.listSnapshots(of: "vm").count <= 2, "--keep 2 on the replica; \(sim.replay)")
        #expect(try sim.source.listSnapshots(of: "vm").count <= 2, "--keep 2 on the source; \(sim.replay)")
        #expect(try sim.replica.handle("vm").readOnly, "a replica is read-only until promoted")
        #expect(Pool.check(device: sim.replicaDevice).clean, "\(sim.replay)")
    }

    @Test(arguments: SimSeeds.list(count: 2, salt: 0x5EED_0002))
    func resetsAndTruncationsAreRetriedUntilTheReplicaHoldsTheVolume(seed: UInt64) async throws {
        var faults = SimFaults()
        // About one fault per full stream of this volume (a few hundred writes): the job must
        // retry, and each retry resumes, so it gets through.
        faults.resetsPerMillion = 1_000
        faults.truncationsPerMillion = 1_000
        faults.windowBytes = 64 << 10
        let sim = try await SimReplication(seed: seed, faults: faults)
        try sim.source.createVolume("vm", size: UInt64(Self.volumeSize))
        try sim.write("vm", at: 0, count: 1 << 20, salt: 3)
        try await sim.run {
            try await sim.start(sim.job("vm"))
            try await sim.waitUntil("a cycle after a fault") {
                let faulted = sim.network.counters.resets + sim.network.counters.truncations > 0
                return faulted && (sim.status("vm")?.cycles ?? 0) >= 1
            }
            try await sim.stop("vm")
        }
        let counters = sim.network.counters
        #expect(counters.resets + counters.truncations > 0, "no fault was injected; \(sim.replay)")
        try sim.expectReplicated("vm", size: Self.volumeSize)
        #expect(Pool.check(device: sim.replicaDevice).clean, "\(sim.replay)")
    }

    @Test(arguments: SimSeeds.list(count: 2, salt: 0x5EED_0003))
    func aPartitionLongerThanTheTimeoutFailsTheJobAndTheReceiveResumesFromItsToken(seed: UInt64) async throws {
        var faults = SimFaults()
        var random = SeededRandom(seed: seed)
        // Mid-stream: the stream carries 1 MiB of data in 64 KiB records.
        faults.partitionAfterBytes = (192 << 10) + random.next(below: 512 << 10)
        faults.windowBytes = 32 << 10
        let sim = try await SimReplication(seed: seed, faults: faults, timeout: .seconds(1))
        try sim.source.createVolume("vm", size: UInt64(Self.volumeSize))
        // Sixteen separate extents, so the stream is many records and some arrive whole before the partition.
        for extent in 0..<16 { try sim.write("vm", at: UInt64(extent) << 17, count: 64 << 10, salt: 4 + UInt64(extent)) }
        try await sim.run {
            try await sim.start(sim.job("vm"))
            try await sim.waitUntil("the partition") { sim.network.isPartitioned }
            try await sim.waitUntil("the job to fail on the partition") { (sim.status("vm")?.errors ?? 0) > 0 }
            let failure = sim.status("vm")?.lastError ?? ""
            #expect(failure.contains("timed out") && failure.contains("partitioned"), "unclear error: \(failure); \(sim.replay)")
            #expect(sim.status("vm")?.cycles == 0, "a cycle completed through a partition; \(sim.replay)")
            // The replica's receive timed out too and kept what it applied.
            try await sim.waitUntil("the replica's staged receive") {
                let token = try? StreamReceiver.token(pool: sim.replica, volume: "vm")
                return token.flatMap { try? ResumeToken(parsing: $0, operation: "test").offset }.map { $0 > 0 } ?? false
            }
            sim.network.heal()
            try await sim.waitUntil("a cycle after the partition") { (sim.status("vm")?.cycles ?? 0) >= 1 }
            try await sim.stop("vm")
        }
        #expect(sim.network.counters.partitions == 1, "\(sim.replay)")
        #expect(sim.network.counters.timeouts > 0, "\(sim.replay)")
        let resumed = sim.logs.contains { $0.contains("replication: received vm@") && !$0.hasSuffix("resumed at byte 0)") }
        #expect(resumed, "the receive after the partition did not resume from the staged token; \(sim.replay)")
        try sim.expectReplicated("vm", size: Self.volumeSize)
        #expect(Pool.check(device: sim.replicaDevice).clean, "\(sim.replay)")
    }

    @Test(arguments: SimSeeds.list(count: 1, salt: 0x5EED_0004))
    func aWrongSecretIsRefusedAndReplicatesNothing(seed: UInt64) async throws {
        var faults = SimFaults()
        faults.delayMax = .milliseconds(1)
        let sim = try await SimReplication(seed: seed, faults: faults)
        try sim.source.createVolume("vm", size: UInt64(Self.volumeSize))
        try sim.write("vm", at: 0, count: 64 << 10, salt: 5)
        try await sim.run {
            try await sim.start(sim.job("vm", secret: "wrong"))
            try await sim.waitUntil("two refused attempts") { (sim.status("vm")?.errors ?? 0) >= 2 }
            try await sim.stop("vm")
        }
        #expect(sim.status("vm") == nil)
        #expect(sim.logs.contains { $0.contains("wrong secret") }, "the replica did not log the refusal; \(sim.replay)")
        #expect(try sim.replica.listVolumes().isEmpty, "a wrong secret replicated; \(sim.replay)")
    }

    @Test(arguments: SimSeeds.list(count: 2, salt: 0x5EED_0005))
    func concurrentJobsReplicateEachVolume(seed: UInt64) async throws {
        var faults = SimFaults()
        faults.delayMax = .milliseconds(1)
        faults.connectDelayMax = .milliseconds(10)
        faults.windowBytes = 32 << 10
        let sim = try await SimReplication(seed: seed, faults: faults)
        let volumes = ["vm1", "vm2", "vm3"]
        for (index, volume) in volumes.enumerated() {
            try sim.source.createVolume(volume, size: UInt64(Self.volumeSize))
            try sim.write(volume, at: UInt64(index) << 16, count: 256 << 10, salt: 10 + UInt64(index))
        }
        try await sim.run {
            for volume in volumes { try await sim.start(sim.job(volume)) }
            try await sim.waitUntil("two cycles of every job") {
                volumes.allSatisfy { (sim.status($0)?.cycles ?? 0) >= 2 }
            }
            for volume in volumes { try await sim.stop(volume) }
        }
        for volume in volumes { try sim.expectReplicated(volume, size: Self.volumeSize) }
        #expect(Pool.check(device: sim.replicaDevice).clean, "\(sim.replay)")
    }
}
