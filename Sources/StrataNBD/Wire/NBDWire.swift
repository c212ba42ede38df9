// The NBD wire codec: pure functions from bytes to messages and back, no I/O (STYLE §1).
//
// Decoders take the cumulation buffer `inout` and return nil when more bytes are needed
// (leaving the buffer untouched), a message when one is complete (consuming it), or throw
// when the bytes can never be valid: the connection then closes. Limits are checked before
// anything is allocated.
//
// Client → server, negotiation (proto.md "Fixed newstyle negotiation"):
//   client flags u32; then options: IHAVEOPT u64, option u32, length u32, data[length].
// Client → server, transmission ("Request message"):
//   magic u32 0x25609513, flags u16, type u16, cookie u64, offset u64, length u32, then
//   `length` bytes of data for WRITE only.

import NIOCore

/// Why bytes from a client can never be a valid message.
public enum NBDWireError: Error, Equatable, Sendable, CustomStringConvertible {
    case badOptionMagic(UInt64)
    case optionTooLarge(length: UInt32, limit: Int)
    case badRequestMagic(UInt32)
    case requestTooLarge(command: UInt16, length: UInt32, limit: Int)
    case badClientFlags(UInt32)

    public var description: String {
        switch self {
        case .badOptionMagic(let magic): return "bad option magic 0x\(String(magic, radix: 16))"
        case .optionTooLarge(let length, let limit): return "option data of \(length) bytes over the limit \(limit)"
        case .badRequestMagic(let magic): return "bad request magic 0x\(String(magic, radix: 16))"
        case .requestTooLarge(let command, let length, let limit):
            return "command \(command) with \(length) bytes of data over the limit \(limit)"
        case .badClientFlags(let flags):
            return "client flags 0x\(String(flags, radix: 16)): FIXED_NEWSTYLE missing or an unknown flag set"
        }
    }
}

/// One option from the negotiation phase.
public struct NBDOptionRequest: Sendable, Equatable {
    public var option: UInt32
    public var data: ByteBuffer
}

/// One request from the transmission phase.
public struct NBDRequest: Sendable, Equatable {
    public var flags: NBD.CommandFlags
    public var type: UInt16
    public var cookie: UInt64
    public var offset: UInt64
    public var length: UInt32
    /// WRITE's data; empty for every other command.
    public var payload: ByteBuffer

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.flags == rhs.flags && lhs.type == rhs.type && lhs.cookie == rhs.cookie && lhs.offset == rhs.offset
            && lhs.length == rhs.length && lhs.payload == rhs.payload
    }
}

/// Encoders and decoders of NBD messages.
public enum NBDWire {
    /// Longest option data accepted: proto.md bounds names at 4 KiB; queries add a little.
    public static let optionBytesMax = 64 << 10
    /// Largest WRITE payload (and READ length) accepted: 32 MiB, qemu's and nbdkit's bound.
    public static let requestBytesMax = 32 << 20
    static let requestHeaderSize = 28

    // MARK: Decoding

    /// The client's 4-byte flags after the server's greeting.
    public static func decodeClientFlags(_ buffer: inout ByteBuffer) throws(NBDWireError) -> UInt32? {
        guard let flags = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        // proto.md: the server MUST drop the connection on an unknown client flag.
        let known = NBD.clientFlagFixedNewstyle | NBD.clientFlagNoZeroes
        guard flags & NBD.clientFlagFixedNewstyle != 0, flags & ~known == 0 else { throw .badClientFlags(flags) }
        buffer.moveReaderIndex(forwardBy: 4)
        return flags
    }

    /// One option: IHAVEOPT, option, length, data.
    public static func decodeOption(_ buffer: inout ByteBuffer) throws(NBDWireError) -> NBDOptionRequest? {
        let start = buffer.readerIndex
        guard let magic = buffer.getInteger(at: start, as: UInt64.self) else { return nil }
        guard magic == NBD.optionMagic else { throw .badOptionMagic(magic) }
        guard let option = buffer.getInteger(at: start + 8, as: UInt32.self),
            let length = buffer.getInteger(at: start + 12, as: UInt32.self)
        else { return nil }
        guard length <= Self.optionBytesMax else { throw .optionTooLarge(length: length, limit: Self.optionBytesMax) }
        guard let data = buffer.getSlice(at: start + 16, length: Int(length)) else { return nil }
        buffer.moveReaderIndex(forwardBy: 16 + Int(length))
        return NBDOptionRequest(option: option, data: data)
    }

    /// The bytes of the request `buffer` starts with (header and WRITE payload), as far as the
    /// bytes it holds tell: the header's size until the whole header is there.
    public static func requestBytes(startOf buffer: ByteBuffer) -> Int {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= Self.requestHeaderSize,
            buffer.getInteger(at: start + 6, as: UInt16.self) == NBD.Command.write.rawValue,
            let length = buffer.getInteger(at: start + 24, as: UInt32.self)
        else { return Self.requestHeaderSize }
        return Self.requestHeaderSize + Int(min(length, UInt32(Self.requestBytesMax)))
    }

    /// One request, with WRITE's payload.
    public static func decodeRequest(_ buffer: inout ByteBuffer) throws(NBDWireError) -> NBDRequest? {
        let start = buffer.readerIndex
        guard let magic = buffer.getInteger(at: start, as: UInt32.self) else { return nil }
        guard magic == NBD.requestMagic else { throw .badRequestMagic(magic) }
        guard buffer.readableBytes >= Self.requestHeaderSize,
            let flags = buffer.getInteger(at: start + 4, as: UInt16.self),
            let type = buffer.getInteger(at: start + 6, as: UInt16.self),
            let cookie = buffer.getInteger(at: start + 8, as: UInt64.self),
            let offset = buffer.getInteger(at: start + 16, as: UInt64.self),
            let length = buffer.getInteger(at: start + 24, as: UInt32.self)
        else { return nil }
        var payload = ByteBuffer()
        if type == NBD.Command.write.rawValue {
            guard length <= Self.requestBytesMax else {
                throw .requestTooLarge(command: type, length: length, limit: Self.requestBytesMax)
            }
            guard let data = buffer.getSlice(at: start + Self.requestHeaderSize, length: Int(length)) else { return nil }
            payload = data
        }
        buffer.moveReaderIndex(forwardBy: Self.requestHeaderSize + payload.readableBytes)
        return NBDRequest(
            flags: NBD.CommandFlags(rawValue: flags), type: type, cookie: cookie, offset: offset, length: length,
            payload: payload)
    }

    // MARK: Encoding

    /// The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.
    public static func writeGreeting(into buffer: inout ByteBuffer) {
        buffer.writeInteger(NBD.initMagic)
        buffer.writeInteger(NBD.optionMagic)
        buffer.writeInteger(NBD.flagFixedNewstyle | NBD.flagNoZeroes)
    }

    /// An option reply: magic, option, reply type, length, data.
    public static func writeOptionReply(
        into buffer: inout ByteBuffer, option: UInt32, type: NBD.OptionReply, data: ByteBuffer? = nil
    ) {
        buffer.writeInteger(NBD.optionReplyMagic)
        buffer.writeInteger(option)
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(UInt32(data?.readableBytes ?? 0))
        if var data { buffer.writeBuffer(&data) }
    }

    /// An error option reply with a human-readable message.
    public static func writeOptionError(
        into buffer: inout ByteBuffer, option: UInt32, type: NBD.OptionReply, message: String
    ) {
        var data = ByteBuffer()
        data.writeString(message)
        Self.writeOptionReply(into: &buffer, option: option, type: type, data: data)
    }

    /// NBD_OPT_EXPORT_NAME's reply: size, flags, and 124 zeros unless NO_ZEROES was agreed.
    public static func writeExportNameReply(
        into buffer: inout ByteBuffer, size: UInt64, flags: NBD.TransmissionFlags, noZeroes: Bool
    ) {
        buffer.writeInteger(size)
        buffer.writeInteger(flags.rawValue)
        if !noZeroes { buffer.writeRepeatingByte(0, count: 124) }
    }

    /// A simple reply header (READ's data follows it).
    public static func writeSimpleReply(into buffer: inout ByteBuffer, error: NBD.Errno, cookie: UInt64) {
        buffer.writeInteger(NBD.simpleReplyMagic)
        buffer.writeInteger(error.rawValue)
        buffer.writeInteger(cookie)
    }

    /// A structured reply chunk header; `length` bytes of payload follow.
    public static func writeChunkHeader(
        into buffer: inout ByteBuffer, done: Bool, type: NBD.ReplyType, cookie: UInt64, length: Int
    ) {
        buffer.writeInteger(NBD.structuredReplyMagic)
        buffer.writeInteger(done ? NBD.replyFlagDone : 0)
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(cookie)
        buffer.writeInteger(UInt32(length))
    }

    /// A structured error chunk (always the final one).
    public static func writeErrorChunk(into buffer: inout ByteBuffer, cookie: UInt64, error: NBD.Errno, message: String) {
        let text = Array(message.utf8.prefix(4096))
        Self.writeChunkHeader(into: &buffer, done: true, type: .error, cookie: cookie, length: 6 + text.count)
        buffer.writeInteger(error.rawValue)
        buffer.writeInteger(UInt16(text.count))
        buffer.writeBytes(text)
    }
}

extension ByteBuffer {
    /// Reads a u32-length-prefixed string (names in INFO/GO/LIST_META_CONTEXT data).
    mutating func readLengthPrefixedString(limit: Int = 4096) -> String? {
        guard let length = self.readInteger(as: UInt32.self), length <= limit,
            let text = self.readString(length: Int(length))
        else { return nil }
        return text
    }
}
