// Each request that moved onto the one control protocol, through a real daemon's sockets: the
// replicate verbs and the receive staging verbs over control.sock, send and receive over
// stream.sock with the stream's descriptor attached, and the refusals that keep the two
// sockets apart. Without a daemon, the replicate verbs name the fix.

import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import StrataCore
import StrataFrontEnd
@testable import StrataReplication
@testable import StrataServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A pool in a temporary directory served by the daemon's real services (NBD on a free port,
/// iSCSI off) in a `ServiceGroup`, for as long as a test body runs; then a graceful shutdown.
struct ServedPool {
    let directory: String
    let pool: Pool

    /// Runs `body` against a served pool, then shuts the services down and closes the pool.
    static func serve(_ body: (ServedPool) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-ctl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Pool.create(directory: directory, size: 256 << 20)
        let pool = try Pool.openServing(directory: directory)
        let logger = Logger(label: "control-test")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let options = DaemonOptions(
            directory: directory, nbdHost: "127.0.0.1", nbdPort: 0, iscsi: [], createSize: 0, commitIntervalSeconds: 1)
        let services = try await Daemon.bind(options, tls: nil, pool: pool, group: group, threadPool: threadPool, logger: logger)
        let serviceGroup = ServiceGroup(configuration: ServiceGroupConfiguration(services: services.startOrder, logger: logger))
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask { try await serviceGroup.run() }
            do {
                try await body(ServedPool(directory: directory, pool: pool))
            } catch {
                await serviceGroup.triggerGracefulShutdown()
                throw error
            }
            await serviceGroup.triggerGracefulShutdown()
        }
        try pool.close()
        try await threadPool.shutdownGracefully()
        try await group.shutdownGracefully()
    }

    /// Sends `request` to the socket the CLI would choose for it. The client blocks, so it runs
    /// on a thread of its own: blocking the few cooperative threads would starve the services.
    func send(_ request: ControlRequest, stream: Int32 = -1) async throws -> ControlResult {
        let directory = self.directory
        return try await DedicatedThread.run(name: "test-client") {
            Result { () throws(StrataError) -> ControlResult in
                guard let client = ControlClient.connect(directory: directory, for: request) else {
                    throw StrataError(.notFound, "no daemon listens in \(directory)")
                }
                return try client.send(request, stream: stream) { _, _ in }
            }
        }.get()
    }

    /// The error `request` gets on `socketName` (by default the socket the CLI would choose), or
    /// nil when it succeeds.
    func failure(_ request: ControlRequest, on socketName: String? = nil) async -> StrataError? {
        let directory = self.directory
        let outcome = await DedicatedThread.run(name: "test-client") {
            Result { () throws(StrataError) -> ControlResult in
                let name = socketName ?? (request.needsDescriptor ? StreamServer.socketName : ControlServer.socketName)
                guard let fd = UnixSocketAddress.connect(directory + "/" + name) else {
                    throw StrataError(.notFound, "no socket \(name)")
                }
                return try ControlClient(fd: fd).send(request) { _, _ in }
            }
        }
        guard case .failure(let error) = outcome else { return nil }
        return error
    }
}

@Suite struct ControlRoundTripTests {
    @Test func sendAndReceivePassTheirDescriptorOverTheStreamSocket() async throws {
        try await ServedPool.serve { served in
            try served.pool.createVolume("vm1", size: 1 << 20)
            try served.pool.write(try served.pool.handle("vm1"), at: 4096, [UInt8](repeating: 0x5A, count: 8192))
            try served.pool.createSnapshot("vm1", "a")
            let file = served.directory + "/vm1.stream"
            let output = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            try #require(output >= 0)
            let sent = try await served.send(.send(SendRequest(snapshot: "vm1@a", base: nil, resumeToken: nil)), stream: output)
            close(output)
            guard case .sent(let summary) = sent else {
                Issue.record("send: expected .sent, got \(sent)")
                return
            }
            #expect(summary.snapshot == "vm1@a")

            let input = open(file, O_RDONLY | O_CLOEXEC)
            try #require(input >= 0)
            defer { close(input) }
            let received = try await served.send(.receive(volume: "vm2", force: false), stream: input)
            guard case .received(let receivedSummary) = received else {
                Issue.record("receive: expected .received, got \(received)")
                return
            }
            #expect(receivedSummary.snapshot == "vm2@a")
            let copy = try served.pool.read(try served.pool.handle("vm2@a"), at: 0, count: 1 << 20)
            #expect(copy == (try served.pool.read(try served.pool.handle("vm1@a"), at: 0, count: 1 << 20)))
        }
    }

    @Test func eachSocketRefusesTheOthersRequests() async throws {
        try await ServedPool.serve { served in
            let send = ControlRequest.send(SendRequest(snapshot: "vm1@a", base: nil, resumeToken: nil))
            let onControl = try #require(await served.failure(send, on: ControlServer.socketName))
            #expect(onControl.message.contains(StreamServer.socketName), "\(onControl.message)")
            let onStream = try #require(await served.failure(.replicateStatus, on: StreamServer.socketName))
            #expect(onStream.message.contains(ControlServer.socketName), "\(onStream.message)")
            let bare = try #require(await served.failure(send, on: StreamServer.socketName))
            #expect(bare.message == "stream: no descriptor attached")
        }
    }

    @Test func receiveStagingVerbsAnswerOverTheControlSocket() async throws {
        try await ServedPool.serve { served in
            try served.pool.createVolume("vm1", size: 1 << 20)
            let token = try #require(await served.failure(.receiveToken(volume: "vm1")))
            #expect(token.code == .notFound)
            #expect(token.message.contains("no interrupted receive is staged for vm1"), "\(token.message)")
            let abort = try #require(await served.failure(.abortReceive(volume: "vm1")))
            #expect(abort.code == .notFound)
            #expect(abort.message.hasPrefix("receive --abort vm1"), "\(abort.message)")
        }
    }

    @Test func replicateVerbsRoundTripThroughTheDaemon() async throws {
        try await ServedPool.serve { served in
            try served.pool.createVolume("vm1", size: 1 << 20)
            let secret = served.directory + "/secret"
            try Data("a-long-shared-secret".utf8).write(to: URL(fileURLWithPath: secret))
            guard case .replication(let none) = try await served.send(.replicateStatus) else {
                Issue.record("replicate status: expected .replication")
                return
            }
            #expect(none.isEmpty)

            // Port 1 refuses: the job exists and retries, which is all status needs to show.
            let job = ReplicationJob(volume: "vm1", host: "127.0.0.1", port: 1, everySeconds: 60, keep: 2, secretFile: secret)
            guard case .done = try await served.send(.replicateStart(job)) else {
                Issue.record("replicate start: expected .done")
                return
            }
            guard case .replication(let jobs) = try await served.send(.replicateStatus) else {
                Issue.record("replicate status: expected .replication")
                return
            }
            #expect(jobs.map(\.volume) == ["vm1"])
            #expect(jobs.first?.peer == "127.0.0.1:1")
            #expect(FileManager.default.fileExists(atPath: served.directory + "/" + Replicator.fileName))

            guard case .done = try await served.send(.replicateStop(volume: "vm1")) else {
                Issue.record("replicate stop: expected .done")
                return
            }
            guard case .replication(let after) = try await served.send(.replicateStatus) else {
                Issue.record("replicate status: expected .replication")
                return
            }
            #expect(after.isEmpty)

            let missing = try #require(await served.failure(.replicateStart(ReplicationJob(
                volume: "nope", host: "127.0.0.1", port: 1, everySeconds: 60, keep: 2, secretFile: secret))))
            #expect(missing.code == .notFound, "\(missing.message)")
        }
    }

    @Test func promoteMakesAReplicaWritable() async throws {
        try await ServedPool.serve { served in
            try served.pool.createVolume("vm1", size: 1 << 20)
            try served.pool.setReplica("vm1", true)
            #expect(try served.pool.isReplica("vm1"))
            guard case .done = try await served.send(.promote(volume: "vm1")) else {
                Issue.record("promote: expected .done")
                return
            }
            #expect(try served.pool.isReplica("vm1") == false)
            try served.pool.write(try served.pool.handle("vm1"), at: 0, [1, 2, 3, 4])
        }
    }

    @Test(arguments: [
        ControlRequest.replicateStatus, .replicateStop(volume: "vm1"),
        .replicateStart(ReplicationJob(volume: "vm1", host: "h", port: 1, everySeconds: 1, keep: 1, secretFile: "/s")),
    ])
    func withoutADaemonReplicateVerbsNameTheFix(_ request: ControlRequest) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-ctl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Pool.create(directory: directory, size: 64 << 20)
        let pool = try Pool.openServing(directory: directory, readOnly: true)
        defer { _ = Result { () throws(StrataError) in try pool.close() } }
        do throws(StrataError) {
            _ = try PoolService(pool: pool, registry: nil).execute(request)
            Issue.record("\(request) succeeded without a daemon")
        } catch {
            #expect(error.code == .notFound)
            #expect(error.message.contains("start `strata serve`"), "\(error.message)")
        }
    }
}
