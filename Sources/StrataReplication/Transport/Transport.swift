// The one transport replication runs on: connect, listen and accept, and byte streams with
// backpressure, a timeout and cancellation. `NIOTransport` is the real one (SwiftNIO, TCP);
// StrataTesting's `SimNetwork` is a seeded simulation of the same contract (delay, resets,
// truncation, partitions, reordered connects, slow readers), so the replication tests run
// without sockets and replay from their seed.
//
// Contract of a connection:
// - `read` returns the next bytes the peer sent, in order, or nil once the peer has closed its
//   side. It throws `.io` when the connection is reset, when no byte has moved either way for the
//   transport's timeout (a dead peer or a partition), or when the task is cancelled.
// - `write` returns once the transport has taken the bytes; it suspends while the peer does not
//   read (backpressure), and throws as `read` does.
// - One task may read while another writes (a connection is full duplex), but two tasks never
//   read, or write, at once. A replication session reads and writes in turns.
// - `send` hands bytes over at once, from any thread, without backpressure: for a session of
//   many requests in flight that bounds them itself (a mirror leg), whose engine threads send
//   their own requests and answers, so no task has to wake to pass them on. What several
//   threads send while the connection is busy goes out in one write.
// - The connection is open only inside `withConnection`'s body or a listener's handler; it is
//   closed (gracefully) when that returns, and cut when the listener closes.
//
// Nothing here blocks: the engine's work (reading or applying a stream, which can fsync) runs on
// a thread pool and meets the connection through a `BytePipe`.

import NIOCore
import StrataCore

/// Where a peer listens.
public struct TransportAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(self.host):\(self.port)" }
}

/// A byte stream to one peer. See the file's note for the contract.
public protocol TransportConnection: AnyObject, Sendable {
    /// The peer's address, for logs and errors.
    var peer: String { get }

    /// The next bytes from the peer; nil once the peer has closed its side.
    /// - Throws: `.io` on a reset, a timeout or cancellation.
    func read() async throws(StrataError) -> ByteBuffer?

    /// Hands `bytes` to the transport, waiting while the peer does not read.
    /// - Throws: `.io` on a reset, a timeout or cancellation.
    func write(_ bytes: ByteBuffer) async throws(StrataError)

    /// Hands `bytes` to the transport now, from any thread, and returns without waiting: after
    /// everything this thread wrote or sent before, in order. The caller bounds what it has in
    /// flight (nothing here holds it back). On a connection that has failed or closed the bytes
    /// are dropped; its reader sees why.
    func send(_ bytes: ByteBuffer)
}

/// Connections arriving on one address.
public protocol TransportListener: Sendable {
    /// The address listened on (the port is the one bound when 0 was asked).
    var address: TransportAddress { get }

    /// Accepts until `close`, running `handler` for each connection in a child task, at most
    /// `limit` at once (a connection beyond it is closed on arrival); returns once every handler
    /// has returned. The connection closes when its handler returns.
    func serve(limit: Int, _ handler: @escaping @Sendable (any TransportConnection) async -> Void) async

    /// Stops accepting and cuts every open connection (their handlers then see errors and return).
    /// Does not block.
    func close()
}

/// Connects and listens.
public protocol Transport: Sendable {
    /// Connects to `address` and runs `body` with the connection, which closes when `body` returns.
    /// - Throws: `.io` naming the address when it cannot connect; whatever `body` throws.
    func withConnection<Value: Sendable>(
        to address: TransportAddress, _ body: (any TransportConnection) async throws(StrataError) -> Value
    ) async throws(StrataError) -> Value

    /// Listens on `address` (port 0: any free port).
    /// - Throws: `.io` naming the address and the fix when it is taken.
    func listen(on address: TransportAddress) async throws(StrataError) -> any TransportListener
}

extension TransportConnection {
    /// Writes `bytes`.
    public func write(_ bytes: [UInt8]) async throws(StrataError) {
        try await self.write(ByteBuffer(bytes: bytes))
    }
}
