// The daemon's service group: on graceful shutdown the services stop one at a time in the order
// the README promises (control first, the mirrors after the front ends, the remote legs'
// connections after the mirrors' last split points, the commit last, each
// after the one before has finished),
// and the commit service's last commit makes every write made before the shutdown durable.

import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import StrataCore
@testable import StrataServer
import StrataTesting
import Synchronization
import Testing

/// Records, in one shared log, the moment each service finishes stopping.
final class StopLog: Sendable {
    private let names = Mutex<[String]>([])
    func append(_ name: String) { self.names.withLock { $0.append(name) } }
    var all: [String] { self.names.withLock { $0 } }
}

/// Waits for its turn to stop, yields a little so a wrongly ordered peer would overtake it, then
/// records that it stopped.
struct RecordingService: Service {
    let name: String
    let log: StopLog

    func run() async throws {
        try? await gracefulShutdown()
        try await Task.sleep(for: .milliseconds(5))
        self.log.append(self.name)
    }
}

@Suite struct DaemonServicesTests {
    func stopOrder(iscsi: Bool, replicas: Bool) async throws -> [String] {
        let log = StopLog()
        func recording(_ name: String) -> RecordingService { RecordingService(name: name, log: log) }
        let services = DaemonServices(
            commit: recording("commit"), mirrorLinks: recording("mirrorLinks"), mirrors: recording("mirrors"),
            iscsi: iscsi ? recording("iscsi") : nil, nbd: recording("nbd"),
            replicator: recording("replicator"), replicas: replicas ? recording("replicas") : nil,
            streams: recording("streams"), flattens: recording("flattens"), hydrations: recording("hydrations"),
            control: recording("control"))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: services.startOrder, logger: Logger(label: "order-test")))
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            await group.triggerGracefulShutdown()
        }
        return log.all
    }

    @Test func gracefulShutdownStopsAcceptingFirstAndCommitsLast() async throws {
        #expect(
            try await self.stopOrder(iscsi: true, replicas: true) == [
                "hydrations", "control", "flattens", "streams", "replicas", "replicator", "nbd", "iscsi", "mirrors", "mirrorLinks",
                "commit",
            ])
        #expect(
            try await self.stopOrder(iscsi: false, replicas: false) == [
                "hydrations", "control", "flattens", "streams", "replicator", "nbd", "mirrors", "mirrorLinks", "commit",
            ])
    }

    @Test func theCommitServiceCommitsAtShutdown() async throws {
        let device = SimDevice(size: 2048 * 4096 + 4096 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 2048)
        let pool = try Pool(device: device)
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.flush()
        let before = pool.committedGeneration
        try pool.write(try pool.handle("vm1"), at: 0, [UInt8](repeating: 0xA5, count: 4096))
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        // An hour between timer commits: only the shutdown commit can make the write durable.
        let commit = CommitService(
            pool: pool, interval: .seconds(3600), workers: threadPool, logger: Logger(label: "commit-test"))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: commit)], logger: Logger(label: "commit-test")))
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            await group.triggerGracefulShutdown()
        }
        try await threadPool.shutdownGracefully()
        #expect(pool.committedGeneration > before)
        // A power loss now keeps only what was synced: the write must be there.
        var random = SeededRandom(seed: 1)
        let reopened = try Pool(device: device.crashImage(mode: .dropUnsynced, using: &random))
        #expect(try reopened.read(try reopened.handle("vm1"), at: 0, count: 4096) == [UInt8](repeating: 0xA5, count: 4096))
    }
}
