// The connection handler as NIO glue, through `EmbeddedChannel`: bytes in, bytes out, with the
// real framer, login and session. A login to the full feature phase, a NOP-Out ping, where each
// command runs (a READ of a hole on the event loop, answered in Data-In with status; a WRITE, and
// a READ the engine cannot serve without waiting, on the engine workers), and a logout that
// closes the channel: what a client sees of the handler. Setting up takes the pool's locks, so
// each login PDU and each SendTargets listing goes to the workers too; workers that refuse work
// (a daemon shutting down) close the connection.

import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import StrataCore
import StrataFrontEnd
import StrataTesting
import Testing

@testable import StrataISCSI

@Suite("iSCSI connection handler")
struct ISCSIConnectionHandlerTests {
    let pool: Pool
    /// They run each item in place and count it: how these tests tell where work ran.
    let workers = InPlaceWorkers()

    init() throws {
        self.pool = try makeTestUnit().pool
    }

    /// A channel with the handler, logged in to `vm1`; the final login response.
    func loggedIn(discovery: Bool = false) throws -> (EmbeddedChannel, PDU) {
        let channel = try self.connected(workers: self.workers)
        // Login: security stage straight to the full feature phase, no CHAP set.
        try self.write(self.login(discovery: discovery), to: channel)
        let login = try #require(try self.read(from: channel).first)
        return (channel, login)
    }

    func connected(workers: any EngineWorkers) throws -> EmbeddedChannel {
        let target = ISCSITarget(
            pool: self.pool, directory: nil, workers: workers, registry: ConnectionRegistry(),
            logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: ISCSIConnectionHandler(target: target))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 3260)).wait()
        return channel
    }

    func login(discovery: Bool) -> PDU {
        loginRequest(
            current: 0, next: 3,
            keys: [("InitiatorName", "iqn.2026-11.org.example:host"), ("SessionType", discovery ? "Discovery" : "Normal")]
                + (discovery ? [] : [("TargetName", "iqn.2026-11.org.strata:vm1")]) + [("AuthMethod", "None")])
    }

    static let framing = FramingSettings(maxReceiveDataLength: 1 << 24)

    func write(_ pdu: PDU, to channel: EmbeddedChannel) throws {
        var buffer = channel.allocator.buffer(capacity: 64)
        PDUFramer.encode(pdu, data: nil, into: &buffer, settings: Self.framing)
        try channel.writeInbound(buffer)
    }

    /// Every PDU the handler wrote so far.
    func read(from channel: EmbeddedChannel) throws -> [PDU] {
        var stream = channel.allocator.buffer(capacity: 0)
        while var piece = try channel.readOutbound(as: ByteBuffer.self) { stream.writeBuffer(&piece) }
        var pdus: [PDU] = []
        while let pdu = try PDUFramer.decode(&stream, settings: Self.framing) { pdus.append(pdu) }
        #expect(stream.readableBytes == 0)
        return pdus
    }

    @Test func loginCommandsAndLogoutThroughTheChannel() throws {
        let (channel, login) = try self.loggedIn()
        #expect(login.opcode == .loginResponse)
        #expect(login.uint16(at: 36) == 0)  // success
        #expect(login.tsih != 0)
        #expect(self.workers.items == 1, "the login PDU was handled on the event loop")
        let expected = login.expectedCommandSequenceNumber

        // NOP-Out ping, echoed.
        var nop = nopOut(tag: 1, sequence: expected)
        nop.data = [1, 2, 3, 4]
        try self.write(nop, to: channel)
        let pong = try #require(try self.read(from: channel).first)
        #expect(pong.opcode == .nopIn)
        #expect(pong.initiatorTaskTag == 1)
        #expect(pong.data == [1, 2, 3, 4])

        // READ(10) of a block never written: a hole needs no wait, so the event loop answers it,
        // with zeros, in one Data-In carrying the status.
        try self.write(
            scsiCommand(tag: 2, sequence: expected &+ 1, cdb: [0x28, 0, 0, 0, 0, 90, 0, 0, 1, 0], expectedLength: 512,
                        read: true),
            to: channel)
        let dataIn = try self.read(from: channel)
        #expect(dataIn.map(\.opcode) == [.dataIn])
        #expect(dataIn.first?.data == [UInt8](repeating: 0, count: 512))
        #expect(dataIn.first.map { $0.flags & PDU.Flag.status != 0 } == true)
        #expect(dataIn.first?.expectedCommandSequenceNumber == expected &+ 2)
        #expect(self.workers.items == 1, "the READ of a hole left the event loop")
        // WRITE(10) of one block as immediate data: never run on the event loop.
        let block = (0..<512).map { UInt8(truncatingIfNeeded: $0 * 5) }
        try self.write(
            scsiCommand(tag: 3, sequence: expected &+ 2, cdb: [0x2a, 0, 0, 0, 0, 3, 0, 0, 1, 0], expectedLength: 512,
                        write: true, data: block),
            to: channel)
        let written = try #require(try self.read(from: channel).first)
        #expect(written.opcode == .scsiResponse)
        #expect(written.status == SCSIStatus.good.rawValue)
        #expect(self.workers.items == 2, "the WRITE ran on the event loop")
        // READ(10) of data the engine cannot serve without waiting (the simulated device cannot
        // tell what is cached): it goes to the workers too, and reads what the WRITE wrote.
        try self.write(
            scsiCommand(tag: 4, sequence: expected &+ 3, cdb: [0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0], expectedLength: 512,
                        read: true),
            to: channel)
        let waited = try #require(try self.read(from: channel).first)
        #expect(waited.opcode == .dataIn)
        #expect(waited.data == block)
        #expect(self.workers.items == 3, "a read that would wait ran on the event loop")

        // Logout: the response, then the channel closes.
        var logout = PDU(.logoutRequest, flags: PDU.Flag.final)
        logout.initiatorTaskTag = 5
        logout.set(expected &+ 4, at: 24)
        try self.write(logout, to: channel)
        let bye = try self.read(from: channel)
        #expect(bye.map(\.opcode) == [.logoutResponse])
        #expect(!channel.isActive)
    }

    /// A PDU whose data segment exceeds what the target declared is rejected and the connection closed.
    @Test func anOversizedSegmentIsRejectedAndCloses() throws {
        let (channel, login) = try self.loggedIn()
        var big = nopOut(tag: 1, sequence: login.expectedCommandSequenceNumber)
        big.data = [UInt8](repeating: 0, count: TargetLimits.maxReceiveDataLength + 4)
        try self.write(big, to: channel)
        let answer = try self.read(from: channel)
        #expect(answer.map(\.opcode) == [.reject])
        #expect(answer.first?.response == RejectReason.protocolError.rawValue)
        #expect(!channel.isActive)
    }

    /// SendTargets in a Discovery session: the target list is fetched on the workers, so a
    /// volume made after the login is listed at once.
    @Test func sendTargetsListsOnTheWorkers() throws {
        let (channel, login) = try self.loggedIn(discovery: true)
        #expect(login.uint16(at: 36) == 0)
        try self.pool.createVolume("vm2", size: 1 << 20)
        var request = PDU(.textRequest, flags: PDU.Flag.final)
        request.initiatorTaskTag = 8
        request.targetTransferTag = PDU.reservedTag
        request.set(login.expectedCommandSequenceNumber, at: 24)
        request.data = TextKeys([("SendTargets", "All")]).bytes
        try self.write(request, to: channel)
        let answer = try #require(try self.read(from: channel).first)
        #expect(answer.opcode == .textResponse)
        let names = (TextKeys.parse(answer.data)?.pairs ?? []).filter { $0.0 == "TargetName" }.map(\.1)
        #expect(names == ["iqn.2026-11.org.strata:vm1", "iqn.2026-11.org.strata:vm2"])
        #expect(self.workers.items == 2, "login and listing: one work item each")
    }

    /// Workers that refuse work (the daemon shutting down): the login is not answered and the
    /// connection closes.
    @Test func refusedLoginWorkClosesTheConnection() throws {
        let workers = InPlaceWorkers(stopped: true)
        let channel = try self.connected(workers: workers)
        try self.write(self.login(discovery: false), to: channel)
        #expect(try self.read(from: channel).isEmpty)
        #expect(workers.items == 1)
        #expect(!channel.isActive)
    }
}
