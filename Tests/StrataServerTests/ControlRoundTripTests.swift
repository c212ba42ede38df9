// Each request that moved onto the one control protocol, through a real daemon's sockets: the
// replicate verbs and the receive staging verbs over control.sock, send and receive over
// stream.sock with the stream's descriptor attached, and the refusals that keep the two
// sockets apart. Without a daemon, the replicate verbs name the fix.

import Foundation
import Logging
import NIOPosix
import StrataCore
import StrataFrontEnd
@testable import StrataReplication
@testable import StrataServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A pool in a temporary directory, served by a control socket and a stream socket.
final class ServedPool {
    let directory: String
    let pool: Pool
    let replicator: Replicator
    let service: PoolService
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let threadPool = NIOThreadPool(numberOfThreads: 2)
    let control: ControlServer
    let streams: StreamServer

    init() throws {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-ctl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try Pool.create(directory: self.directory, size: 256 << 20)
        self.pool = try Pool.openServing(directory: self.directory)
        let logger = Logger(label: "control-test")
        self.replicator = Replicator(pool: self.pool, directory: self.directory, logger: logger)
        self.service = PoolService(pool: self.pool, registry: ConnectionRegistry(), replicator: self.replicator)
        self.threadPool.start()
        self.control = try ControlServer.start(
            directory: self.directory, service: self.service, group: self.group, threadPool: self.threadPool, logger: logger)
        self.streams = try StreamServer.start(directory: self.directory, service: self.service, logger: logger)
    }

    /// Sends `request` to the socket the CLI would choose for it.
    func send(_ request: ControlRequest, stream: Int32 = -1) throws(StrataError) -> ControlResult {
        guard let client = ControlClient.connect(directory: self.directory, for: request) else {
            throw StrataError(.notFound, "no daemon listens in \(self.directory)")
        }
        return try client.send(request, stream: stream) { _, _ in }
    }

    /// The error `request` gets, or nil when it succeeds.
    func failure(_ request: ControlRequest, on socketName: String? = nil) -> StrataError? {
        do throws(StrataError) {
            if let socketName {
                guard let fd = UnixSocketAddress.connect(self.directory + "/" + socketName) else {
                    return StrataError(.notFound, "no socket \(socketName)")
                }
                _ = try ControlClient(fd: fd).send(request) { _, _ in }
            } else {
                _ = try self.send(request)
            }
            return nil
        } catch {
            return error
        }
    }

    func close() throws {
        self.control.close()
        self.streams.close()
        self.replicator.shutdown()
        try self.threadPool.syncShutdownGracefully()
        try self.group.syncShutdownGracefully()
        try self.pool.close()
        try FileManager.default.removeItem(atPath: self.directory)
    }
}

@Suite struct ControlRoundTripTests {
    @Test func sendAndReceivePassTheirDescriptorOverTheStreamSocket() throws {
        let served = try ServedPool()
        defer { #expect(throws: Never.self) { try served.close() } }
        try served.pool.createVolume("vm1", size: 1 << 20)
        try served.pool.write(try served.pool.handle("vm1"), at: 4096, [UInt8](repeating: 0x5A, count: 8192))
        try served.pool.createSnapshot("vm1", "a")
        let file = served.directory + "/vm1.stream"
        let output = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try #require(output >= 0)
        let sent = try served.send(.send(SendRequest(snapshot: "vm1@a", base: nil, resumeToken: nil)), stream: output)
        close(output)
        guard case .sent(let summary) = sent else {
            Issue.record("send: expected .sent, got \(sent)")
            return
        }
        #expect(summary.snapshot == "vm1@a")

        let input = open(file, O_RDONLY | O_CLOEXEC)
        try #require(input >= 0)
        defer { close(input) }
        let received = try served.send(.receive(volume: "vm2", force: false), stream: input)
        guard case .received(let receivedSummary) = received else {
            Issue.record("receive: expected .received, got \(received)")
            return
        }
        #expect(receivedSummary.snapshot == "vm2@a")
        let copy = try served.pool.read(try served.pool.handle("vm2@a"), at: 0, count: 1 << 20)
        #expect(copy == (try served.pool.read(try served.pool.handle("vm1@a"), at: 0, count: 1 << 20)))
    }

    @Test func eachSocketRefusesTheOthersRequests() throws {
        let served = try ServedPool()
        defer { #expect(throws: Never.self) { try served.close() } }
        let send = ControlRequest.send(SendRequest(snapshot: "vm1@a", base: nil, resumeToken: nil))
        let onControl = try #require(served.failure(send, on: ControlServer.socketName))
        #expect(onControl.message.contains(StreamServer.socketName), "\(onControl.message)")
        let onStream = try #require(served.failure(.replicateStatus, on: StreamServer.socketName))
        #expect(onStream.message.contains(ControlServer.socketName), "\(onStream.message)")
        let bare = try #require(served.failure(send, on: StreamServer.socketName))
        #expect(bare.message == "stream: no descriptor attached")
    }

    @Test func receiveStagingVerbsAnswerOverTheControlSocket() throws {
        let served = try ServedPool()
        defer { #expect(throws: Never.self) { try served.close() } }
        try served.pool.createVolume("vm1", size: 1 << 20)
        let token = try #require(served.failure(.receiveToken(volume: "vm1")))
        #expect(token.code == .notFound)
        #expect(token.message.contains("no interrupted receive is staged for vm1"), "\(token.message)")
        let abort = try #require(served.failure(.abortReceive(volume: "vm1")))
        #expect(abort.code == .notFound)
        #expect(abort.message.hasPrefix("receive --abort vm1"), "\(abort.message)")
    }

    @Test func replicateVerbsRoundTripThroughTheDaemon() throws {
        let served = try ServedPool()
        defer { #expect(throws: Never.self) { try served.close() } }
        try served.pool.createVolume("vm1", size: 1 << 20)
        let secret = served.directory + "/secret"
        try Data("a-long-shared-secret".utf8).write(to: URL(fileURLWithPath: secret))
        guard case .replication(let none) = try served.send(.replicateStatus) else {
            Issue.record("replicate status: expected .replication")
            return
        }
        #expect(none.isEmpty)

        // Port 1 refuses: the job exists and retries, which is all status needs to show.
        let job = ReplicationJob(volume: "vm1", host: "127.0.0.1", port: 1, everySeconds: 60, keep: 2, secretFile: secret)
        guard case .done = try served.send(.replicateStart(job)) else {
            Issue.record("replicate start: expected .done")
            return
        }
        guard case .replication(let jobs) = try served.send(.replicateStatus) else {
            Issue.record("replicate status: expected .replication")
            return
        }
        #expect(jobs.map(\.volume) == ["vm1"])
        #expect(jobs.first?.peer == "127.0.0.1:1")
        #expect(FileManager.default.fileExists(atPath: served.directory + "/" + Replicator.fileName))

        guard case .done = try served.send(.replicateStop(volume: "vm1")) else {
            Issue.record("replicate stop: expected .done")
            return
        }
        guard case .replication(let after) = try served.send(.replicateStatus) else {
            Issue.record("replicate status: expected .replication")
            return
        }
        #expect(after.isEmpty)

        let missing = try #require(served.failure(.replicateStart(ReplicationJob(
            volume: "nope", host: "127.0.0.1", port: 1, everySeconds: 60, keep: 2, secretFile: secret))))
        #expect(missing.code == .notFound, "\(missing.message)")
    }

    @Test func promoteMakesAReplicaWritable() throws {
        let served = try ServedPool()
        defer { #expect(throws: Never.self) { try served.close() } }
        try served.pool.createVolume("vm1", size: 1 << 20)
        try served.pool.setReplica("vm1", true)
        #expect(try served.pool.isReplica("vm1"))
        guard case .done = try served.send(.promote(volume: "vm1")) else {
            Issue.record("promote: expected .done")
            return
        }
        #expect(try served.pool.isReplica("vm1") == false)
        try served.pool.write(try served.pool.handle("vm1"), at: 0, [1, 2, 3, 4])
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
