// The HTTP service's listening socket: a NIO server whose connections each get NIOHTTP1's
// server pipeline and an `HTTPHandler`, behind TLS (swift-nio-ssl) when certificates are
// given. It is bound before the daemon's service group runs, so a port in use fails `serve` at
// once; at shutdown it stops accepting and closes its connections (each answers what it is
// writing first: a response is written whole on the loop before the close runs there).
//
// Security rules (docs/OPERATIONS.md): read-only routes only; a non-loopback address needs a
// token (checked by `HTTPServerOptions.validate`, before anything is bound).

import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import StrataTLS
import StrataCore
import StrataFrontEnd
import Synchronization

/// How the HTTP service listens.
public struct HTTPServerOptions: Sendable {
    public var host: String
    public var port: Int
    /// The bearer token's file (`--http-token-file`); required off loopback.
    public var tokenFile: String?
    /// A directory with server-cert.pem, server-key.pem and ca-cert.pem (qemu's layout), for HTTPS.
    public var certificatesDirectory: String?

    public init(host: String, port: Int, tokenFile: String? = nil, certificatesDirectory: String? = nil) {
        self.host = host
        self.port = port
        self.tokenFile = tokenFile
        self.certificatesDirectory = certificatesDirectory
    }

    /// True for 127.0.0.0/8, ::1 and `localhost`: the addresses only this machine reaches.
    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Refuses a non-loopback address without a token.
    /// - Throws: `.invalidArgument` naming the address and the fix.
    public func validate() throws(StrataError) {
        if self.tokenFile == nil && !Self.isLoopback(self.host) {
            throw StrataError(
                .invalidArgument,
                "serve: --http \(self.host):\(self.port) is reachable from other machines and would serve metrics and the API to anyone; pass --http-token-file FILE (a bearer token), or listen on 127.0.0.1"
            )
        }
    }
}

/// A listening HTTP (or HTTPS) server.
public final class HTTPServer: Sendable {
    let channel: any Channel
    let connections: ConnectionTable

    /// The address it listens on (the port, when 0 was asked for).
    public var localAddress: SocketAddress? { self.channel.localAddress }

    /// The scheme clients use: `https` with certificates, else `http`.
    public let scheme: String

    private init(channel: any Channel, connections: ConnectionTable, scheme: String) {
        self.channel = channel
        self.connections = connections
        self.scheme = scheme
    }

    /// Validates the options, loads the token and certificates, and binds.
    /// - Throws: `StrataError` for a refused address, an unreadable token or certificate; the
    ///   bind error (address in use, permission).
    public static func start(
        _ options: HTTPServerOptions, content: any HTTPContentSource, group: any EventLoopGroup,
        workers: any EngineWorkers
    ) throws -> HTTPServer {
        try options.validate()
        let token = try options.tokenFile.map { file throws(StrataError) in try BearerToken.load(file: file) }
        let tls = try options.certificatesDirectory.map { directory throws(StrataError) in
            try Self.tlsContext(directory: directory)
        }
        let router = HTTPRouter(token: token)
        let connections = ConnectionTable()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard connections.add(channel) else {
                    return channel.eventLoop.makeFailedFuture(ChannelError.inputClosed)
                }
                channel.closeFuture.whenComplete { _ in connections.remove(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPHandler(router: router, content: content, workers: workers))
                }
            }
        let channel = try bootstrap.bind(host: options.host, port: options.port).wait()
        return HTTPServer(channel: channel, connections: connections, scheme: tls == nil ? "http" : "https")
    }

    /// A TLS server context from qemu's x509 layout: server-cert.pem (the chain), server-key.pem,
    /// and ca-cert.pem (the same directory serves NBD and replication), though an HTTP client is
    /// not asked for a certificate.
    static func tlsContext(directory: String) throws(StrataError) -> NIOSSLContext {
        let credentials = try X509Credentials.load(directory: directory, role: .server, option: "--http-tls-certificates")
        return try credentials.context(credentials.serverConfiguration(verifyPeer: false))
    }

    /// Stops accepting and closes every connection. Blocks: call it off the event loops.
    public func shutdownAndWait() {
        try? self.channel.close().wait()
        for connection in self.connections.all { try? connection.close().wait() }
    }
}

/// The open connections, so shutdown can close keep-alive ones.
final class ConnectionTable: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// Adds a connection; false (and not added) when `Limits.httpConnectionsMax` are open.
    func add(_ channel: any Channel) -> Bool {
        self.channels.withLock { channels in
            guard channels.count < Limits.httpConnectionsMax else { return false }
            channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func remove(_ channel: any Channel) { _ = self.channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) } }

    var all: [any Channel] { self.channels.withLock { Array($0.values) } }
}
