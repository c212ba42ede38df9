// The real transport: TCP on SwiftNIO. A connection is an `NIOAsyncChannel` of byte buffers, whose
// inbound side applies backpressure (the channel stops reading while the consumer has not taken
// what it read) and whose outbound writer suspends while the socket is not writable. An
// `IdleStateHandler` ahead of it ends a connection on which no byte has moved either way for the
// timeout, as the blocking sockets' SO_RCVTIMEO/SO_SNDTIMEO did, and the error then says so.
//
// Connections live inside `executeThenClose`: a client's for the body of `withConnection`, a
// server's for its handler, which runs as a child task of `serve`, so no connection outlives the
// service that accepted it. `close` closes the listening channel (ending `serve`'s accept loop)
// and every open connection.

import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import StrataCore
import Synchronization

/// TCP on SwiftNIO, with mutual TLS when given credentials (TransportTLS.swift).
public struct NIOTransport: Transport {
    let group: any EventLoopGroup
    /// How long a connection may move no byte, and a connect may take, before it fails.
    let timeout: TimeAmount
    /// TLS on every connection made and accepted; nil for plain TCP.
    let tls: TransportTLS?

    public init(
        group: any EventLoopGroup, timeout: TimeAmount = .seconds(Int64(Limits.replicationIOTimeoutSeconds)),
        tls: TransportTLS? = nil
    ) {
        self.group = group
        self.timeout = timeout
        self.tls = tls
    }

    public func withConnection<Value: Sendable>(
        to address: TransportAddress, _ body: (any TransportConnection) async throws(StrataError) -> Value
    ) async throws(StrataError) -> Value {
        let timeout = self.timeout
        let tls = self.tls
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        let flag = TimeoutFlag()
        do {
            channel = try await ClientBootstrap(group: self.group)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.recvAllocator, value: Self.receiveBuffers)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try Self.wrap(
                            channel, timeout: timeout, flag: flag, tls: try tls?.clientHandlers(host: address.host) ?? [])
                    }
                }
        } catch {
            throw StrataError(.io, "replicate: cannot connect to \(address) (\(error))")
        }
        return try await Self.execute(channel, peer: address.description, flag: flag, timeout: timeout, body)
    }

    public func listen(on address: TransportAddress) async throws(StrataError) -> any TransportListener {
        let timeout = self.timeout
        let tls = self.tls
        let registry = NIOListener.Registry()
        do {
            let server = try await ServerBootstrap(group: self.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 16)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.recvAllocator, value: Self.receiveBuffers)
                .bind(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let flag = TimeoutFlag()
                        let peer = channel.remoteAddress.map(Self.describe) ?? "?"
                        return Accepted(
                            channel: try Self.wrap(channel, timeout: timeout, flag: flag, tls: tls?.serverHandlers() ?? []),
                            peer: peer, flag: flag)
                    }
                }
            let port = server.channel.localAddress?.port ?? address.port
            return NIOListener(
                server: server, address: TransportAddress(host: address.host, port: port), timeout: timeout,
                registry: registry)
        } catch {
            throw StrataError(.io, "replication: cannot listen on \(address) (\(error)); is another server using it?")
        }
    }

    /// How much one read takes from the socket: from 64 KiB, growing to 1 MiB while reads fill
    /// their buffer (NIO's default starts at 2 KiB and stops at 64 KiB, so a 1 MiB mirror write
    /// or stream record arrived in dozens of reads, each a wakeup of the reading task). The
    /// inbound side holds at most 8 reads its reader has not taken (`wrap`): 8 MiB a connection.
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20)

    /// Adds TLS (`tls`, nearest the socket), the idle timeout, and wraps `channel` for async use.
    /// Runs on its event loop.
    static func wrap(_ channel: any Channel, timeout: TimeAmount, flag: TimeoutFlag, tls: [any ChannelHandler]) throws
        -> NIOAsyncChannel<ByteBuffer, ByteBuffer>
    {
        for handler in tls { try channel.pipeline.syncOperations.addHandler(handler) }
        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: timeout))
        try channel.pipeline.syncOperations.addHandler(IdleTimeoutHandler(flag: flag))
        return try NIOAsyncChannel(
            wrappingChannelSynchronously: channel,
            configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8)))
    }

    /// Runs `body` with `channel` as a connection, then closes it.
    static func execute<Value: Sendable>(
        _ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, peer: String, flag: TimeoutFlag, timeout: TimeAmount,
        _ body: (any TransportConnection) async throws(StrataError) -> Value
    ) async throws(StrataError) -> Value {
        do {
            return try await channel.executeThenClose { inbound, outbound in
                let connection = NIOConnection(
                    channel: channel.channel, inbound: inbound.makeAsyncIterator(), outbound: outbound, peer: peer,
                    flag: flag, timeout: timeout)
                return try await body(connection)
            }
        } catch let error as StrataError {
            throw error
        } catch {
            throw StrataError(.io, TransportTLS.failure(error, peer: peer) ?? "replication: connection with \(peer) failed (\(error))")
        }
    }

    static func describe(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }
}

/// Set when a connection's idle timeout fired, so its error says "timed out", not "closed".
final class TimeoutFlag: Sendable {
    let fired = Atomic<Bool>(false)
}

/// Turns the idle event into an error that ends the connection.
final class IdleTimeoutHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let flag: TimeoutFlag

    init(flag: TimeoutFlag) { self.flag = flag }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is IdleStateHandler.IdleStateEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        self.flag.fired.store(true, ordering: .releasing)
        context.fireErrorCaught(ChannelError.connectTimeout(.seconds(0)))
        context.close(promise: nil)
    }
}

/// One TCP connection. @unchecked: the iterator is used by one reading task at a time (the
/// transport's contract), the writer is Sendable, and `sending` is behind its lock.
final class NIOConnection: TransportConnection, @unchecked Sendable {
    private let channel: any Channel
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let peer: String
    private let flag: TimeoutFlag
    private let timeout: TimeAmount
    /// Bytes `send` took that the event loop has not written yet, and whether it is asked to.
    private struct Sending {
        var pending = ByteBuffer()
        var scheduled = false
    }
    private let sending = Mutex(Sending())

    init(
        channel: any Channel, inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, peer: String, flag: TimeoutFlag, timeout: TimeAmount
    ) {
        self.channel = channel
        self.inbound = inbound
        self.outbound = outbound
        self.peer = peer
        self.flag = flag
        self.timeout = timeout
    }

    func read() async throws(StrataError) -> ByteBuffer? {
        do {
            let bytes = try await self.inbound.next()
            if bytes == nil, Task.isCancelled { throw CancellationError() }
            if bytes == nil, self.flag.fired.load(ordering: .acquiring) { throw self.timedOut() }
            return bytes
        } catch {
            throw self.failure(error)
        }
    }

    func write(_ bytes: ByteBuffer) async throws(StrataError) {
        do {
            try await self.outbound.write(bytes)
        } catch {
            throw self.failure(error)
        }
    }

    /// Queues `bytes`; the first sender since the event loop last wrote asks it to write what
    /// has queued by then, in one write (through the pipeline, so TLS applies).
    func send(_ bytes: ByteBuffer) {
        var bytes = bytes
        let first = self.sending.withLock { sending -> Bool in
            sending.pending.writeBuffer(&bytes)
            defer { sending.scheduled = true }
            return !sending.scheduled
        }
        guard first else { return }
        let channel = self.channel
        channel.eventLoop.execute {
            let queued = self.sending.withLock { sending -> ByteBuffer in
                sending.scheduled = false
                defer { sending.pending = ByteBuffer() }
                return sending.pending
            }
            channel.writeAndFlush(queued, promise: nil)
        }
    }

    private func failure(_ error: any Error) -> StrataError {
        if let error = error as? StrataError { return error }
        if self.flag.fired.load(ordering: .acquiring) { return self.timedOut() }
        if error is CancellationError { return StrataError(.io, "replication: the transfer with \(self.peer) was stopped") }
        if let message = TransportTLS.failure(error, peer: self.peer) { return StrataError(.io, message) }
        return StrataError(.io, "replication: connection with \(self.peer) broke (\(error))")
    }

    private func timedOut() -> StrataError {
        StrataError(
            .io,
            "replication: connection with \(self.peer) timed out: no byte moved for \(self.timeout.nanoseconds / 1_000_000_000) s (the peer is gone or the network is partitioned)"
        )
    }
}

/// A connection the server accepted, before it is served.
struct Accepted: Sendable {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let peer: String
    let flag: TimeoutFlag
}

/// A listening TCP socket.
final class NIOListener: TransportListener {
    /// The open connections, so `close` can cut them; closed once `close` ran.
    final class Registry: Sendable {
        let state = Mutex((closed: false, open: [ObjectIdentifier: any Channel]()))
    }

    let server: NIOAsyncChannel<Accepted, Never>
    let address: TransportAddress
    let timeout: TimeAmount
    let registry: Registry

    init(server: NIOAsyncChannel<Accepted, Never>, address: TransportAddress, timeout: TimeAmount, registry: Registry) {
        self.server = server
        self.address = address
        self.timeout = timeout
        self.registry = registry
    }

    func serve(limit: Int, _ handler: @escaping @Sendable (any TransportConnection) async -> Void) async {
        let timeout = self.timeout
        _ = try? await self.server.executeThenClose { connections in
            await withDiscardingTaskGroup { group in
                do {
                    for try await accepted in connections {
                        let key = ObjectIdentifier(accepted.channel.channel)
                        // Admitted under the lock `close` cuts under, so none slips past the cut.
                        let admitted = self.registry.state.withLock { state in
                            guard !state.closed, state.open.count < limit else { return false }
                            state.open[key] = accepted.channel.channel
                            return true
                        }
                        guard admitted else {
                            accepted.channel.channel.close(promise: nil)
                            continue
                        }
                        group.addTask {
                            _ = try? await NIOTransport.execute(
                                accepted.channel, peer: accepted.peer, flag: accepted.flag, timeout: timeout
                            ) { connection async throws(StrataError) in await handler(connection) }
                            self.registry.state.withLock { _ = $0.open.removeValue(forKey: key) }
                        }
                    }
                } catch {
                    // The listening socket failed or was closed: stop accepting; handlers finish.
                }
            }
        }
    }

    func close() {
        let open = self.registry.state.withLock { state in
            state.closed = true
            return Array(state.open.values)
        }
        self.server.channel.close(promise: nil)
        for channel in open { channel.close(promise: nil) }
    }
}
