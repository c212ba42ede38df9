// `strata check` through the daemon's control socket after a failed sync (issue 13, defect 2).
//
// The daemon answered `check` with the last durable commit's check, which a failed sync leaves
// intact, so it said "clean" while the pool had failed. Here a real control socket serves a pool
// on a `SimDevice`, one sync fails, and the report the CLI receives must carry the failure.

import Foundation
import Logging
import NIOPosix
import StrataCore
import StrataServer
import StrataTesting
import Testing

@Suite struct ControlSocketTests {
    @Test func checkThroughTheSocketReportsAFailedSync() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-control-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (device, pool) = try SimDevice.formattedPool(metadataPages: 256, dataBytes: 1 << 20)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        defer {
            try? threadPool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
        }
        let server = try ControlServer.start(
            directory: directory, service: PoolService(pool: pool, registry: nil), group: group, workers: threadPool,
            logger: Logger(label: "control-socket-test"))
        defer { server.shutdownAndWait() }
        func send(_ request: ControlRequest) throws(StrataError) -> ControlResult {
            guard let client = ControlClient.connect(directory: directory, for: request) else {
                throw StrataError(.notFound, "no control socket in \(directory)")
            }
            return try client.send(request) { _, _ in }
        }

        _ = try send(.createVolume(name: "vm1", size: 1 << 20))
        guard case .check(let healthy) = try send(.check) else {
            Issue.record("check did not answer with a report")
            return
        }
        #expect(healthy.clean, "\(healthy.problems)")

        try pool.write(try pool.handle("vm1"), at: 0, [UInt8](repeating: 7, count: 4096))
        device.failNextSync()
        guard case .check(let report) = try send(.check) else {
            Issue.record("check did not answer with a report")
            return
        }
        #expect(!report.clean, "the daemon said clean after a failed sync")
        let failure = try #require(report.failure, "the report over the socket lost the failure")
        #expect(failure.contains("sync failed"), "\(failure)")
        // The pool stays failed: a mutation through the socket is refused with the reason.
        let refused = #expect(throws: StrataError.self) { try send(.createVolume(name: "vm2", size: 1 << 20)) }
        #expect(refused?.code == .failed)
        #expect(refused?.message.contains("sync failed") == true, "\(refused?.message ?? "")")
    }
}
