// The messages of a remote mirror leg's session (docs/MIRROR.md, "The remote leg's messages").
//
// A session starts as every replication connection does (greeting, challenge, HMAC answer:
// ReplicationServer.swift) with the request line `{"mirror": {...}}` (`MirrorLegOpen`); the leg
// daemon answers one `ReplicationReply` line, and on success both sides switch to the binary
// messages below, many in flight at once: the mirror sends requests, each tagged with its own
// id, and the leg daemon answers each when it has applied it, in any order. All integers are
// big-endian (network order).
//
// Request (32-byte header, then `payloadLength` bytes):
//   OFFSET SIZE FIELD
//        0    1 operation (`MirrorOperation`)
//        1    1 flags: bit 0 trim (zero), bit 1 writable (detach); other bits must be 0
//        2    2 reserved, 0
//        4    4 payloadLength, at most `Limits.mirrorPayloadBytesMax`
//        8    8 id, chosen by the mirror, unique among its requests in flight
//       16    8 offset (write, zero, read)
//       24    8 length (zero, read)
//       32    n payload: write bytes; a split point's name (UTF-8); detach's copy name (UTF-8,
//               empty: keep the name)
//
// Reply (16-byte header, then `payloadLength` bytes):
//   OFFSET SIZE FIELD
//        0    8 id of the request answered
//        8    1 status: 0 done, 1 failed
//        9    3 reserved, 0
//       12    4 payloadLength, at most `Limits.mirrorPayloadBytesMax`
//       16    n payload. Done: read's bytes; size as 8 bytes; split points' names joined by
//               "\n"; changes as (offset 8, length 8) pairs (the
//               extent's kind does not cross: a resync copies both kinds alike); empty otherwise. Failed: the
//               error's code (`StrataError.Code` raw value), one "\n", then its message.
//
// The decoders follow the codec rule of the NBD wire: nil means "need more bytes", a throw means
// the peer is not speaking this protocol, and a length is checked against its limit before
// anything is allocated for it.

import NIOCore
import StrataCore

/// What a remote mirror leg's session asks the leg daemon to do.
public enum MirrorOperation: UInt8, Sendable, CaseIterable {
    case write = 1
    case zero = 2
    case flush = 3
    case read = 4
    case size = 5
    case createSplitPoint = 6
    case deleteSplitPoint = 7
    case splitPoints = 8
    case changes = 9
    case commitIfNeeded = 10
    case detach = 11
    case attach = 12
    case release = 13
    case discard = 14
}

/// One request of a remote mirror leg's session.
public struct MirrorRequestMessage: Sendable, Equatable {
    public static let headerBytes = 32
    public static let flagTrim: UInt8 = 1
    public static let flagWritable: UInt8 = 2

    public var id: UInt64
    public var operation: MirrorOperation
    public var flags: UInt8
    public var offset: UInt64
    public var length: UInt64
    public var payload: [UInt8]

    public init(
        id: UInt64, operation: MirrorOperation, flags: UInt8 = 0, offset: UInt64 = 0, length: UInt64 = 0,
        payload: [UInt8] = []
    ) {
        precondition(payload.count <= Limits.mirrorPayloadBytesMax, "mirror request \(id): payload over the limit")
        precondition(flags & ~(Self.flagTrim | Self.flagWritable) == 0, "mirror request \(id): unknown flags")
        self.id = id
        self.operation = operation
        self.flags = flags
        self.offset = offset
        self.length = length
        self.payload = payload
    }

    /// Appends the message to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.operation.rawValue)
        buffer.writeInteger(self.flags)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt32(self.payload.count))
        buffer.writeInteger(self.id)
        buffer.writeInteger(self.offset)
        buffer.writeInteger(self.length)
        buffer.writeBytes(self.payload)
    }

    /// Takes one request from the front of `buffer`.
    /// - Returns: nil when `buffer` does not hold a whole message yet (nothing is consumed).
    /// - Throws: `.invalidArgument` for an unknown operation, flags or reserved bits, or a payload over the limit.
    public static func decode(_ buffer: inout ByteBuffer) throws(StrataError) -> MirrorRequestMessage? {
        let start = buffer.readerIndex
        guard let type = buffer.getInteger(at: start, as: UInt8.self),
            let flags = buffer.getInteger(at: start + 1, as: UInt8.self),
            let reserved = buffer.getInteger(at: start + 2, as: UInt16.self),
            let length = buffer.getInteger(at: start + 4, as: UInt32.self)
        else { return nil }
        guard let operation = MirrorOperation(rawValue: type) else {
            throw StrataError(.invalidArgument, "mirror leg session: unknown operation \(type)")
        }
        guard flags & ~(Self.flagTrim | Self.flagWritable) == 0 else {
            throw StrataError(.invalidArgument, "mirror leg session: unknown flags \(flags) in a \(operation) request")
        }
        guard reserved == 0 else {
            throw StrataError(.invalidArgument, "mirror leg session: reserved bytes set in a \(operation) request")
        }
        guard length <= Limits.mirrorPayloadBytesMax else {
            throw StrataError(
                .invalidArgument,
                "mirror leg session: a \(operation) request of \(length) bytes is over the limit (limit=\(Limits.mirrorPayloadBytesMax))")
        }
        guard buffer.readableBytes >= Self.headerBytes + Int(length) else { return nil }
        let id = buffer.getInteger(at: start + 8, as: UInt64.self)!
        let offset = buffer.getInteger(at: start + 16, as: UInt64.self)!
        let count = buffer.getInteger(at: start + 24, as: UInt64.self)!
        let payload = buffer.getBytes(at: start + Self.headerBytes, length: Int(length))!
        buffer.moveReaderIndex(forwardBy: Self.headerBytes + Int(length))
        return MirrorRequestMessage(id: id, operation: operation, flags: flags, offset: offset, length: count, payload: payload)
    }
}

/// One answer of the leg daemon to a `MirrorRequestMessage`.
public struct MirrorReplyMessage: Sendable, Equatable {
    public static let headerBytes = 16

    public var id: UInt64
    public var result: Result<[UInt8], StrataError>

    public init(id: UInt64, result: Result<[UInt8], StrataError>) {
        self.id = id
        self.result = result
    }

    /// Appends the message to `buffer`. An error's message longer than the limit is cut.
    public func encode(into buffer: inout ByteBuffer) {
        var payload: [UInt8]
        let status: UInt8
        switch self.result {
        case .success(let bytes):
            precondition(bytes.count <= Limits.mirrorPayloadBytesMax, "mirror reply \(self.id): payload over the limit")
            status = 0
            payload = bytes
        case .failure(let error):
            status = 1
            payload = Array("\(error.code.rawValue)\n\(error.message)".utf8.prefix(Limits.streamRequestBytesMax))
        }
        buffer.writeInteger(self.id)
        buffer.writeInteger(status)
        buffer.writeBytes([0, 0, 0])
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeBytes(payload)
    }

    /// Takes one reply from the front of `buffer`.
    /// - Returns: nil when `buffer` does not hold a whole message yet (nothing is consumed).
    /// - Throws: `.invalidArgument` for an unknown status, reserved bits set, or a payload over the limit.
    public static func decode(_ buffer: inout ByteBuffer) throws(StrataError) -> MirrorReplyMessage? {
        let start = buffer.readerIndex
        guard let id = buffer.getInteger(at: start, as: UInt64.self),
            let status = buffer.getInteger(at: start + 8, as: UInt8.self),
            let reserved = buffer.getBytes(at: start + 9, length: 3),
            let length = buffer.getInteger(at: start + 12, as: UInt32.self)
        else { return nil }
        guard status <= 1 else { throw StrataError(.invalidArgument, "mirror leg session: unknown reply status \(status)") }
        guard reserved == [0, 0, 0] else {
            throw StrataError(.invalidArgument, "mirror leg session: reserved bytes set in the reply to \(id)")
        }
        guard length <= Limits.mirrorPayloadBytesMax else {
            throw StrataError(
                .invalidArgument,
                "mirror leg session: a reply of \(length) bytes is over the limit (limit=\(Limits.mirrorPayloadBytesMax))")
        }
        guard buffer.readableBytes >= Self.headerBytes + Int(length) else { return nil }
        let payload = buffer.getBytes(at: start + Self.headerBytes, length: Int(length))!
        buffer.moveReaderIndex(forwardBy: Self.headerBytes + Int(length))
        guard status == 1 else { return MirrorReplyMessage(id: id, result: .success(payload)) }
        let text = String(decoding: payload, as: UTF8.self)
        let parts = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        let code = StrataError.Code(rawValue: String(parts[0])) ?? .io
        let message = parts.count > 1 ? String(parts[1]) : text
        return MirrorReplyMessage(id: id, result: .failure(StrataError(code, message)))
    }
}

/// Encodings of the payloads that are not raw bytes.
public enum MirrorPayload {
    /// A size or other single integer.
    public static func integer(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }

    /// - Throws: `.invalidArgument` when `bytes` is not 8 bytes.
    public static func integer(from bytes: [UInt8]) throws(StrataError) -> UInt64 {
        guard bytes.count == 8 else {
            throw StrataError(.invalidArgument, "mirror leg session: an integer of \(bytes.count) bytes, not 8")
        }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Extents as (offset, length) pairs.
    /// - Throws: `.invalidArgument` naming the fix when they do not fit one message.
    public static func extents(_ extents: [DiffExtent]) throws(StrataError) -> [UInt8] {
        guard extents.count * 16 <= Limits.mirrorPayloadBytesMax else {
            throw StrataError(
                .invalidArgument,
                "mirror leg: \(extents.count) changed extents do not fit one message; attach with --full")
        }
        return extents.flatMap { Self.integer($0.offset) + Self.integer($0.length) }
    }

    /// - Throws: `.invalidArgument` when `bytes` is not whole pairs.
    public static func extents(from bytes: [UInt8]) throws(StrataError) -> [DiffExtent] {
        guard bytes.count % 16 == 0 else {
            throw StrataError(.invalidArgument, "mirror leg session: an extent list of \(bytes.count) bytes")
        }
        var result: [DiffExtent] = []
        for start in stride(from: 0, to: bytes.count, by: 16) {
            result.append(
                DiffExtent(
                    offset: try Self.integer(from: Array(bytes[start..<start + 8])),
                    length: try Self.integer(from: Array(bytes[start + 8..<start + 16])), kind: .data))
        }
        return result
    }
}

extension ByteBuffer {
    /// Drops the bytes already decoded, so a session's receive buffer does not keep every
    /// message it ever read (a `ByteBuffer` never discards read bytes on its own).
    mutating func dropDecoded() {
        if self.readableBytes == 0 {
            self.clear()
        } else if self.readerIndex >= Limits.mirrorPayloadBytesMax {
            self.discardReadBytes()
        }
    }
}
