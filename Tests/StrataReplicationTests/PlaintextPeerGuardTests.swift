// The guard in front of TLS on an accepted replication connection: a TLS ClientHello passes
// through untouched and the guard leaves the pipeline; a first byte that is not a TLS handshake
// record, or silence past `Limits.replicationTLSStartSeconds`, ends the connection with the
// error whose message tells the plain peer's operator what to do.

import NIOCore
import NIOEmbedded
@testable import StrataCore
@testable import StrataReplication
import Testing

@Suite struct PlaintextPeerGuardTests {
    /// Records the errors that reach the end of the pipeline.
    final class Errors: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var seen: [any Error] = []
        var reads: [ByteBuffer] = []
        func errorCaught(context: ChannelHandlerContext, error: any Error) { self.seen.append(error) }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.reads.append(Self.unwrapInboundIn(data)) }
    }

    func channel() throws -> (EmbeddedChannel, Errors) {
        let errors = Errors()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(PlaintextPeerGuard())
        try channel.pipeline.syncOperations.addHandler(errors)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, errors)
    }

    @Test func aClientHelloPassesAndTheGuardLeaves() throws {
        let (channel, errors) = try self.channel()
        let hello = ByteBuffer(bytes: [22, 3, 1, 0, 5, 1, 0, 0, 1, 0])
        try channel.writeInbound(hello)
        #expect(errors.reads == [hello])
        #expect(errors.seen.isEmpty)
        #expect(channel.isActive)
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: PlaintextPeerGuard.self) }
        // Later bytes are TLS's business, whatever they are; the deadline no longer applies.
        try channel.writeInbound(ByteBuffer(bytes: [0x53, 0x54]))
        channel.embeddedEventLoop.advanceTime(by: .seconds(Int64(Limits.replicationTLSStartSeconds) + 1))
        #expect(channel.isActive)
        #expect(errors.seen.isEmpty)
        _ = try channel.finish()
    }

    @Test func plainTextIsCutWithAnErrorThatSaysTLS() throws {
        let (channel, errors) = try self.channel()
        try channel.writeInbound(ByteBuffer(string: "STRATA-REPLICATION 1\n"))
        #expect(errors.reads.isEmpty)
        #expect(errors.seen.count == 1)
        #expect(!channel.isActive)
        let error = try #require(errors.seen.first)
        let message = try #require(TransportTLS.failure(error, peer: "10.0.0.1:9"))
        #expect(message.contains("10.0.0.1:9 did not start TLS"))
        #expect(message.contains("--tls-certificates"))
    }

    @Test func silenceIsCutAtTheDeadline() throws {
        let (channel, errors) = try self.channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(Int64(Limits.replicationTLSStartSeconds) - 1))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(errors.seen.count == 1)
        #expect(errors.seen.first is PlaintextPeerError)
    }
}
