// Mutual TLS for daemon-to-daemon traffic (replication and mirror legs), from the daemon's
// `--tls-certificates` directory (qemu's x509 layout, StrataTLS). Each daemon is a server to the
// peers that connect to it and a client of the peers it connects to, and each side checks the
// other: the accepting daemon asks for a certificate signed by ca-cert.pem and refuses a peer
// without one; the connecting daemon accepts only a peer whose certificate ca-cert.pem signed
// for the name or IP address it dialled. A connecting daemon shows client-cert.pem when the
// directory has one, else its server-cert.pem (a certificate made for both uses, or one CA's
// leaf that the peer checks only for its signature).
//
// TLS sits under the replication handshake: the shared secret (--secret-file) still
// authenticates the job, and TLS adds confidentiality and the peer's identity.

import NIOCore
import NIOSSL
import StrataCore
import StrataTLS

/// The two contexts a daemon's transport uses.
public struct TransportTLS: Sendable {
    let server: NIOSSLContext
    let client: NIOSSLContext
    /// The credentials directory, for messages.
    public let directory: String

    /// Reads `directory`'s credentials for both roles.
    /// - Throws: `StrataError` naming the file and the fix (X509Credentials).
    public static func load(directory: String) throws(StrataError) -> TransportTLS {
        let option = "--tls-certificates"
        let server = try X509Credentials.load(directory: directory, role: .server, option: option)
        let client = try X509Credentials.load(directory: directory, role: .client, fallback: .server, option: option)
        return TransportTLS(
            server: try server.context(server.serverConfiguration(verifyPeer: true)),
            client: try client.context(client.clientConfiguration()), directory: directory)
    }

    /// The handlers that make an accepted connection TLS: a check that the peer starts a TLS
    /// handshake at all, then TLS.
    func serverHandlers() -> [any ChannelHandler] {
        [PlaintextPeerGuard(), NIOSSLServerHandler(context: self.server)]
    }

    /// The handlers that make a connection to `host` TLS. A name is checked against the peer's
    /// certificate (and sent as SNI); an IP address is checked against the address connected to.
    func clientHandlers(host: String) throws -> [any ChannelHandler] {
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return [try NIOSSLClientHandler(context: self.client, serverHostname: isAddress ? nil : host)]
    }

    /// The message for a connection that failed in or because of TLS; nil for other failures.
    static func failure(_ error: any Error, peer: String) -> String? {
        if error is PlaintextPeerError {
            return "replication: \(peer) did not start TLS in \(Limits.replicationTLSStartSeconds) s; this daemon accepts replication only over TLS, so give the peer --tls-certificates with a certificate ca-cert.pem signed"
        }
        guard error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError else { return nil }
        return "replication: TLS with \(peer) failed (\(error)); both daemons need --tls-certificates with certificates one CA signed (ca-cert.pem), and the accepting daemon's certificate must name the address it is reached at"
    }
}

/// A peer that sent something other than a TLS handshake record, or nothing in time.
struct PlaintextPeerError: Error {}

/// Ends an accepted connection whose first byte is not a TLS handshake record's (22), or that
/// sends nothing for `Limits.replicationTLSStartSeconds`. A peer without TLS waits for the
/// accepting side to speak first (the replication handshake's challenge), while TLS waits for
/// its ClientHello: without this, both would wait until the idle timeout.
final class PlaintextPeerGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    static let handshakeRecordType: UInt8 = 22
    private var deadline: Scheduled<Void>?

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.deadline = context.eventLoop.scheduleTask(in: .seconds(Int64(Limits.replicationTLSStartSeconds))) {
            Self.refuse(loopBound.value)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else {
            context.fireChannelRead(data)
            return
        }
        self.deadline?.cancel()
        guard first == Self.handshakeRecordType else {
            Self.refuse(context)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private static func refuse(_ context: ChannelHandlerContext) {
        context.fireErrorCaught(PlaintextPeerError())
        context.close(promise: nil)
    }
}
