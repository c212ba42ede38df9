// The connection handler's STARTTLS through `EmbeddedChannel`: the server side is the real
// `NBDConnectionHandler` over a pool on a `SimDevice`; the client side is swift-nio-ssl's client
// handler in a second embedded channel, and the test carries bytes between the two. STARTTLS is
// acknowledged in clear text, the TLS handshake follows, and options sent through TLS are
// answered through TLS; bytes a client sends after STARTTLS without waiting for the ACK close
// the connection (they would be clear text taken for TLS-protected).
//
// The certificates are fixtures made once with openssl (a P-256 CA and a server certificate for
// `localhost`, valid until 2126), so the test needs no tool at run time.

import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOSSL
import StrataCore
import StrataFrontEnd
import StrataTesting
import Testing

@testable import StrataNBD

enum TLSFixtures {
    static let caCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIBozCCAUmgAwIBAgIUPVvEF9A4kIbRpHuwcRUrxlipcdYwCgYIKoZIzj0EAwIw
        HjEcMBoGA1UEAwwTU3RyYXRhIHVuaXQtdGVzdCBDQTAgFw0yNjEyMDYxODU1NTha
        GA8yMTI2MTExMjE4NTU1OFowHjEcMBoGA1UEAwwTU3RyYXRhIHVuaXQtdGVzdCBD
        QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABEtz+kQoyOTyPtebq39/9yHAy82O
        LDK1ZctWSDfwissdeGgkMN7PqzRNQhkGnaPMN20Vn4lGsGmLnnozUQMlVvajYzBh
        MB0GA1UdDgQWBBRDdtgLK66zb5spgA+gaiRcrketrjAfBgNVHSMEGDAWgBRDdtgL
        K66zb5spgA+gaiRcrketrjAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIB
        BjAKBggqhkjOPQQDAgNIADBFAiAvDWFf8DDKySe1+i7Vv6nH4NE3tYm50iX7aClg
        pYdUlgIhAOwEfvWD80Rlhxa0BVpXn4B06arqW4LrTL2hfixOuydy
        -----END CERTIFICATE-----
        """
    static let serverCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIBxDCCAWmgAwIBAgIUKQHAb6YQ6TJ1eJNBIHV1k4xARx8wCgYIKoZIzj0EAwIw
        HjEcMBoGA1UEAwwTU3RyYXRhIHVuaXQtdGVzdCBDQTAgFw0yNjEyMDYxODU1NTla
        GA8yMTI2MTExMjE4NTU1OVowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZI
        zj0CAQYIKoZIzj0DAQcDQgAEEwVp64mEGbJRTQVXfNX2iJZeUEgcN1c6R58jNdtZ
        kZLmSRSbFEt+UQF3UwgfCnSs1YK8eRDAJTuYVQIjCCVCHqOBjDCBiTAMBgNVHRMB
        Af8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAUBgNV
        HREEDTALgglsb2NhbGhvc3QwHQYDVR0OBBYEFEQfo6ER16FfEhTMhRcjL9SqY4e2
        MB8GA1UdIwQYMBaAFEN22AsrrrNvmymAD6BqJFyuR62uMAoGCCqGSM49BAMCA0kA
        MEYCIQCSuk2vuYXpbLTbzUDY9lsVJKCiiFU67v4RNhGiQMUtTwIhAOlPGzh/JwWp
        ASowOwIvw8n5SYwfjqyOUZ0uPsK51wk1
        -----END CERTIFICATE-----
        """
    static let serverKey = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgt+EMFLl8SOc4d+Lj
        0m2R6z5VUYSyLL3aO/3M9z2tZZOhRANCAAQTBWnriYQZslFNBVd81faIll5QSBw3
        VzpHnyM121mRkuZJFJsUS35RAXdTCB8KdKzVgrx5EMAlO5hVAiMIJUIe
        -----END PRIVATE KEY-----
        """
}

@Suite struct NBDConnectionHandlerTLSTests {
    let pool: Pool
    let workers = InPlaceWorkers()

    init() throws {
        self.pool = try makeHandlerTestPool()
    }

    func server(mode: NBDTLSMode) throws -> EmbeddedChannel {
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(TLSFixtures.serverCertificate.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(TLSFixtures.serverKey.utf8), format: .pem)))
        let tls = NBDTLS(mode: mode, context: try NIOSSLContext(configuration: configuration))
        let handler = NBDConnectionHandler(
            pool: self.pool, catalog: PoolCatalog(pool: self.pool), workers: self.workers,
            registry: ConnectionRegistry(), tls: tls, logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 10809)).wait()
        return channel
    }

    func client() throws -> EmbeddedChannel {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(TLSFixtures.caCertificate.utf8)))
        let handler = try NIOSSLClientHandler(context: try NIOSSLContext(configuration: configuration), serverHostname: "localhost")
        return EmbeddedChannel(handler: handler)
    }

    /// Everything `channel` wrote, as one buffer.
    func drain(_ channel: EmbeddedChannel) throws -> ByteBuffer {
        var all = ByteBuffer()
        while var piece = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&piece) }
        return all
    }

    /// Carries bytes both ways until neither side has any to send.
    func shuttle(_ client: EmbeddedChannel, _ server: EmbeddedChannel) throws {
        for _ in 0..<50 {
            let toServer = try self.drain(client)
            let toClient = try self.drain(server)
            if toServer.readableBytes == 0 && toClient.readableBytes == 0 { return }
            if toServer.readableBytes > 0 { try server.writeInbound(toServer) }
            if toClient.readableBytes > 0 { try client.writeInbound(toClient) }
        }
        Issue.record("the two sides never went quiet")
    }

    /// Client flags then STARTTLS, in clear text; returns what came back after the greeting.
    func startTLS(on server: EmbeddedChannel, trailing: [UInt8] = []) throws -> ByteBuffer {
        var greeting = try self.drain(server)
        #expect(greeting.readInteger(as: UInt64.self) == NBD.initMagic)
        var hello = ByteBuffer()
        hello.writeInteger(NBD.clientFlagFixedNewstyle | NBD.clientFlagNoZeroes)
        var starttls = option(NBD.Option.startTLS.rawValue)
        hello.writeBuffer(&starttls)
        hello.writeBytes(trailing)
        try server.writeInbound(hello)
        return try self.drain(server)
    }

    @Test func startTLSThenNegotiatesThroughTLS() throws {
        let server = try self.server(mode: .require)
        let ack = try self.startTLS(on: server)
        #expect(replies(ack).map(\.1) == [NBD.OptionReply.ack.rawValue])
        let client = try self.client()
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 10809)).wait()
        try self.shuttle(client, server)
        // The handshake is done: an option written in plain text to the client's TLS handler is
        // answered, through TLS, by the handler behind the server's.
        try client.writeOutbound(option(NBD.Option.go.rawValue, infoData("vm1", [])))
        try self.shuttle(client, server)
        var answer = ByteBuffer()
        while var piece = try client.readInbound(as: ByteBuffer.self) { answer.writeBuffer(&piece) }
        let parsed = replies(answer)
        #expect(parsed.map(\.1).last == NBD.OptionReply.ack.rawValue, "GO through TLS: \(parsed.map(\.1))")
        #expect(parsed.first?.1 == NBD.OptionReply.info.rawValue)
        #expect(server.isActive)
        // The channels are not closed: a TLS close waits for the peer's close_notify, and
        // `EmbeddedChannel.finish()` would wait for it on a loop that never delivers it.
    }

    @Test func bytesAfterStartTLSBeforeTheAcknowledgementCloseTheConnection() throws {
        let server = try self.server(mode: .on)
        // A LIST pipelined behind STARTTLS: never answered, and the connection closes.
        var list = option(NBD.Option.list.rawValue)
        let answer = try self.startTLS(on: server, trailing: Array(list.readBytes(length: list.readableBytes)!))
        #expect(answer.readableBytes == 0, "nothing, not even STARTTLS's ACK, is sent")
        #expect(!server.isActive)
    }
}
