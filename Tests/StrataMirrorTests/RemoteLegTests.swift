// A leg on another daemon (`mirror add --to HOST:PORT`) over the simulated network: the mirror's
// coordinator on one host, a replication server holding the leg's copy on the other, both pools
// on simulated devices. The tests drive the coordinator's worker themselves (`runUntilIdle`), and
// run every blocking call on a thread pool (a leg call waits for the network's tasks).
//
// - connected: every acknowledged write is on the copy; the copy is a replica-flagged volume
//   (exported read-only) on the leg daemon.
// - a partition: a write returns within the leg's timeout, the leg goes degraded, and after the
//   partition heals, attach resyncs exactly the chunks changed meanwhile.
// - detach --as --writable and attach: the copy is renamed and writable, its own writes are
//   discarded at attach, and it comes back under the volume's name, flagged again.
// - refusals (wrong secret, a volume of that name on the leg daemon, a leg pool too small, a
//   second leg to the same daemon): each names the fix and changes nothing on either side.

import Foundation
import Logging
import NIOPosix
import StrataCore
@testable import StrataMirror
@testable import StrataReplication
import StrataTesting
import Testing

final class RemoteLegHarness: Sendable {
    static let chunk = 4096
    static let size: UInt64 = 256 * 4096
    let seed: UInt64
    let network: SimNetwork
    let directory: String
    let pool: Pool
    let legPool: Pool
    /// Where the test's blocking calls run (writers waiting on the leg, the worker).
    let threads: NIOThreadPool
    /// The leg daemon's engine work: another host's, so a writer waiting here never holds a
    /// thread the leg's answer needs.
    let legThreads: NIOThreadPool
    let server: ReplicationServer
    let links: MirrorLinks
    let mirrors: MirrorCoordinator

    init(seed: UInt64, legDataBytes: UInt64 = 4 << 20, mirrorSessionsMax: Int = Limits.mirrorSessionsMax) async throws {
        self.seed = seed
        print("RemoteLegTests: seed=\(seed)")
        let network = SimNetwork(seed: seed, timeout: .seconds(2))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-remoteleg-\(UUID().uuidString)").path
        for sub in ["primary", "legd"] {
            try FileManager.default.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
        }
        try Data("the-shared-secret".utf8).write(to: URL(fileURLWithPath: directory + "/secret"))
        try Data("not-the-secret".utf8).write(to: URL(fileURLWithPath: directory + "/wrong"))
        let (_, pool) = try SimDevice.formattedPool(metadataPages: 512, dataBytes: 4 << 20)
        let (_, legPool) = try SimDevice.formattedPool(metadataPages: 256, dataBytes: legDataBytes)
        try pool.createVolume("vm1", size: Self.size)
        let threads = NIOThreadPool(numberOfThreads: 40)
        threads.start()
        let legThreads = NIOThreadPool(numberOfThreads: 4)
        legThreads.start()
        var logger = Logger(label: "remote-leg-test")
        logger.logLevel = .error
        self.network = network
        self.directory = directory
        self.pool = pool
        self.legPool = legPool
        self.threads = threads
        self.legThreads = legThreads
        self.server = try await ReplicationServer.bind(
            TransportAddress(host: "legd", port: 0), secretFile: directory + "/secret", pool: legPool,
            transport: network.transport(host: "legd"), workers: legThreads, logger: logger,
            directory: directory + "/legd", mirrorSessionsMax: mirrorSessionsMax)
        self.links = MirrorLinks(transport: network.transport(host: "primary"))
        self.mirrors = try MirrorCoordinator.open(pool: pool, directory: directory + "/primary", links: self.links) { _ in }
    }

    /// Runs `body` with the server and the links running; stops them after.
    func run(_ body: @escaping @Sendable (RemoteLegHarness) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.server.run() }
            group.addTask { await self.links.run() }
            var failure: (any Error)?
            do { try await body(self) } catch { failure = error }
            try await self.blocking { self.mirrors.shutdown() }
            self.links.close()
            self.server.close()
            try await group.waitForAll()
            if let failure { throw failure }
        }
        try? await self.threads.shutdownGracefully()
        try? await self.legThreads.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// Runs blocking work (leg calls wait on the network's tasks) on the thread pool.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await self.threads.runIfActive { try body() }
    }

    /// Adds the leg. The default deadline is long: the whole unit suite runs in parallel on as
    /// few as 2 cores, and once (seed 1) a leg call waited more than 10 s for its turn there;
    /// the test of deadlines passes its own.
    func add(
        secret: String = "secret", timeoutMillis: UInt64 = 30_000, name: String? = nil, volume: String = "vm1"
    ) async throws -> MirrorLegStatus {
        let request = MirrorRequest.addRemote(
            volume: volume, address: "legd:\(self.server.port)", secretFile: self.directory + "/" + secret, leg: name,
            rate: nil, autoResync: false, timeoutMillis: timeoutMillis)
        return try await self.blocking { try self.mirrors.execute(request)[0] }
    }

    func settle() async throws { try await self.blocking { self.mirrors.runUntilIdle() } }

    func status() -> MirrorLegStatus { self.mirrors.status(volume: "vm1")[0] }

    func write(_ block: Int, _ seed: Int) async throws {
        try await self.blocking {
            try self.pool.write(
                try self.pool.handle("vm1"), at: UInt64(block * Self.chunk),
                (0..<Self.chunk).map { UInt8(truncatingIfNeeded: $0 &+ seed &* 7) })
        }
    }

    /// The volume and the leg daemon's copy `name` hold the same bytes.
    func expectEqual(copy name: String = "vm1") throws {
        let volume = try self.pool.read(try self.pool.handle("vm1"), at: 0, count: Int(Self.size))
        let copy = try self.legPool.read(try self.legPool.handle(name), at: 0, count: Int(Self.size))
        let differing = (0..<Int(Self.size) / Self.chunk).filter { chunk in
            volume[chunk * Self.chunk..<(chunk + 1) * Self.chunk] != copy[chunk * Self.chunk..<(chunk + 1) * Self.chunk]
        }
        #expect(differing.isEmpty, "seed=\(self.seed): the leg's copy differs from the volume in chunks \(differing.prefix(10)) (\(self.status()))")
    }
}

@Suite(.serialized) struct RemoteLegTests {
    static let seeds: [UInt64] = [1, 0xC0FFEE]

    @Test(arguments: Self.seeds) func aRemoteLegHoldsEveryAcknowledgedWrite(seed: UInt64) async throws {
        let harness = try await RemoteLegHarness(seed: seed)
        try await harness.run { harness in
            try await harness.write(3, 1)
            let added = try await harness.add()
            #expect(added.state == .syncing)
            #expect(added.remote)
            try await harness.settle()
            #expect(harness.status().state == .connected)
            // Writes from many threads at once, each acknowledged only once the copy has it.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for block in 0..<32 { group.addTask { try await harness.write(block * 7 % 256, block) } }
                try await group.waitForAll()
            }
            try harness.expectEqual()
            // The copy is the leg daemon's volume vm1, read-only to everyone but the mirror.
            #expect(try harness.legPool.handle("vm1").readOnly)
            #expect(try harness.legPool.isReplica("vm1"))
        }
    }

    @Test(arguments: Self.seeds) func aPartitionDegradesTheLegAndAttachResyncsOnlyWhatChanged(seed: UInt64) async throws {
        let harness = try await RemoteLegHarness(seed: seed)
        try await harness.run { harness in
            // Long enough to connect on a loaded machine, shorter than the network's own timeout.
            _ = try await harness.add(timeoutMillis: 1_500)
            try await harness.settle()
            #expect(harness.status().state == .connected)
            harness.network.partition()
            // Returns although the leg cannot answer: its timeout ends the wait.
            try await harness.write(10, 1)
            #expect(harness.status().state == .degraded)
            #expect(harness.status().lastError?.contains("1500 ms") == true)
            for block in [11, 12, 200] { try await harness.write(block, block) }
            harness.network.heal()
            let attached = try await harness.blocking {
                try harness.mirrors.execute(.attach(volume: "vm1", leg: nil, full: false, rate: nil))[0]
            }
            #expect(attached.state == .resyncing)
            try await harness.settle()
            #expect(harness.status().state == .connected)
            // Blocks 10, 11, 12 and 200: what changed since the pair taken when the copy ended.
            #expect(harness.status().bytesResynced == UInt64(4 * RemoteLegHarness.chunk), "seed=\(seed)")
            try harness.expectEqual()
        }
    }

    @Test func detachAsWritableThenAttachDiscardsTheCopysWrites() async throws {
        let harness = try await RemoteLegHarness(seed: 7)
        try await harness.run { harness in
            _ = try await harness.add()
            try await harness.settle()
            let detached = try await harness.blocking {
                try harness.mirrors.execute(.detach(volume: "vm1", leg: nil, as: "report", writable: true))[0]
            }
            #expect(detached.state == .detached)
            // The copy is now the leg daemon's own writable volume `report`.
            #expect(try !harness.legPool.isReplica("report"))
            let copy = try harness.legPool.handle("report")
            #expect(!copy.readOnly)
            try harness.legPool.write(copy, at: UInt64(50 * RemoteLegHarness.chunk), [UInt8](repeating: 0xEE, count: 4096))
            try await harness.write(60, 2)
            _ = try await harness.blocking {
                try harness.mirrors.execute(.attach(volume: "vm1", leg: nil, full: false, rate: nil))
            }
            try await harness.settle()
            #expect(harness.status().state == .connected)
            #expect(harness.status().bytesResynced == UInt64(2 * RemoteLegHarness.chunk))
            try harness.expectEqual()
            #expect(try harness.legPool.isReplica("vm1"))
            #expect(harness.legPool.targets().allSatisfy { $0.name != "report" })
        }
    }

    @Test func refusalsChangeNothingOnEitherSide() async throws {
        let harness = try await RemoteLegHarness(seed: 9)
        try await harness.run { harness in
            // A wrong secret.
            await #expect {
                _ = try await harness.add(secret: "wrong")
            } throws: { error in
                (error as? StrataError)?.code == .unauthorized
            }
            #expect(try harness.legPool.listVolumes().isEmpty)
            #expect(harness.mirrors.status().isEmpty)
            // A volume of that name on the leg daemon.
            try harness.legPool.createVolume("vm1", size: 4096)
            await #expect {
                _ = try await harness.add()
            } throws: { error in
                (error as? StrataError)?.code == .busy && (error as? StrataError)?.message.contains("delete or rename it") == true
            }
            #expect(try harness.legPool.listVolumes().map(\.name) == ["vm1"])
            #expect(harness.mirrors.status().isEmpty)
            try harness.legPool.deleteVolume("vm1")
            // Already mirrored to that daemon.
            _ = try await harness.add()
            await #expect {
                _ = try await harness.add(name: "second")
            } throws: { error in
                (error as? StrataError)?.code == .alreadyExists
            }
            #expect(harness.mirrors.status().count == 1)
        }
    }

    /// More legs than replication's 8 turns share one leg daemon, each on its own session, and
    /// a replication still gets its turn; one leg past the daemon's session bound is refused,
    /// naming the bound, and changes nothing on either side.
    @Test func legsHaveTheirOwnSessionBound() async throws {
        let legs = Limits.replicationConnectionsMax + 2
        let harness = try await RemoteLegHarness(seed: 13, legDataBytes: 8 << 20, mirrorSessionsMax: legs)
        try await harness.run { harness in
            let names = (1...legs + 1).map { "v\($0)" }
            for name in names { try harness.pool.createVolume(name, size: 16 * 4096) }
            for name in names.prefix(legs) {
                let status = try await harness.add(volume: name)
                #expect(status.volume == name)
            }
            try await harness.settle()
            #expect(harness.mirrors.status().filter { $0.state == .connected }.count == legs)
            // A replication request still gets its turn beside the open sessions.
            let reply = try await harness.network.transport(host: "primary").withConnection(
                to: TransportAddress(host: "legd", port: harness.server.port)
            ) { connection async throws(StrataError) -> ReplicationReply in
                let reader = TransportReader(connection)
                let hello = try await reader.read(count: ReplicationWire.greeting.count + ReplicationWire.challengeBytes, what: "greeting")
                let secret = try ReplicationWire.readSecret(harness.directory + "/secret")
                try await connection.write(ReplicationWire.answer(Array(hello.suffix(ReplicationWire.challengeBytes)), secret: secret))
                try await connection.write(try JobRunner.line(.state(volume: "v1")))
                let line = try await reader.readLine(limit: Limits.streamRequestBytesMax, what: "reply")
                guard let reply = try? JSONDecoder().decode(ReplicationReply.self, from: Data(line)) else {
                    throw StrataError(.io, "unreadable reply")
                }
                return reply
            }
            #expect(reply.error == nil)
            #expect(reply.state?.exists == true)
            #expect(reply.state?.isReplica == true)
            await #expect {
                _ = try await harness.add(volume: names[legs])
            } throws: { error in
                (error as? StrataError)?.code == .busy
                    && (error as? StrataError)?.message.contains("serves \(legs) mirror leg sessions") == true
            }
            #expect(try harness.legPool.listVolumes().count == legs)
            #expect(harness.mirrors.status().count == legs)
        }
    }

    @Test func aLegPoolTooSmallIsRefused() async throws {
        let harness = try await RemoteLegHarness(seed: 11, legDataBytes: 256 << 10)
        try await harness.run { harness in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for block in 0..<100 { group.addTask { try await harness.write(block, block) } }
                try await group.waitForAll()
            }
            await #expect {
                _ = try await harness.add()
            } throws: { error in
                (error as? StrataError)?.code == .noSpace
            }
            #expect(try harness.legPool.listVolumes().isEmpty)
            #expect(harness.mirrors.status().isEmpty)
        }
    }
}
