// Reads a connection by message: exact byte counts and lines, without consuming past them (a
// stream's bytes follow the request line in the same reads), keeping the rest for the next call
// or for the stream's pump (`next`).

import NIOCore
import StrataCore

/// A connection's bytes with what was read but not yet used.
public final class TransportReader: @unchecked Sendable {
    // @unchecked: used by one task at a time, like the connection's read side it wraps.
    public let connection: any TransportConnection
    private var pending = ByteBuffer()
    /// Whether the peer sent any byte yet.
    private var heard = false

    public init(_ connection: any TransportConnection) {
        self.connection = connection
    }

    /// Exactly `count` bytes.
    /// - Throws: `.io` naming `what` when the peer closes first, or as `read` throws.
    public func read(count: Int, what: String) async throws(StrataError) -> [UInt8] {
        while self.pending.readableBytes < count {
            try await self.fill(what: what)
        }
        return self.pending.readBytes(length: count)!
    }

    /// One line, without its newline, of at most `limit` bytes.
    /// - Throws: `.invalidArgument` when it is longer; `.io` as `read(count:what:)`.
    public func readLine(limit: Int, what: String) async throws(StrataError) -> [UInt8] {
        var searched = 0
        while true {
            let view = self.pending.readableBytesView
            if let newline = view.dropFirst(searched).firstIndex(of: UInt8(ascii: "\n")) {
                let length = newline - view.startIndex
                guard length <= limit else { throw StrataError(.invalidArgument, "replication: \(what) is too long") }
                let line = self.pending.readBytes(length: length)!
                self.pending.moveReaderIndex(forwardBy: 1)
                return line
            }
            searched = view.count
            guard searched <= limit else { throw StrataError(.invalidArgument, "replication: \(what) is too long") }
            try await self.fill(what: what)
        }
    }

    /// The next bytes: what is pending, else the connection's next read; nil at its end.
    public func next() async throws(StrataError) -> ByteBuffer? {
        if self.pending.readableBytes > 0 {
            defer { self.pending = ByteBuffer() }
            return self.pending
        }
        return try await self.connection.read()
    }

    private func fill(what: String) async throws(StrataError) {
        guard var more = try await self.connection.read() else {
            // A peer that takes only TLS ends a plain connection before it says anything.
            let hint =
                self.heard
                ? "" : " before sending anything; if it accepts only TLS, give this daemon --tls-certificates with a certificate its CA signed"
            throw StrataError(
                .io, "replication: the peer \(self.connection.peer) closed the connection while sending \(what)\(hint)")
        }
        self.heard = true
        self.pending.writeBuffer(&more)
    }
}
