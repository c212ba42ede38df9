// The Strata send stream, version 1 (docs/STREAM.md): a header, then records in ascending
// volume offset, then an end record. All integers are little-endian.
//
// Header (152 bytes):
//
// | OFFSET | SIZE | FIELD                                                              |
// |--------|------|--------------------------------------------------------------------|
// | 0      | 8    | magic "STRATASN"                                                   |
// | 8      | 4    | version (1)                                                        |
// | 12     | 4    | header length (152)                                                |
// | 16     | 4    | flags: bit 0 = records may carry zlib-compressed payloads          |
// | 20     | 4    | chunk size of the sending pool (informational)                     |
// | 24     | 8    | volume size in bytes (the snapshot's)                              |
// | 32     | 16   | from-GUID: the base snapshot (all zero for a full stream)          |
// | 48     | 16   | to-GUID: the snapshot this stream produces                         |
// | 64     | 8    | snapshot creation time, nanoseconds since 1970                     |
// | 72     | 8    | resume offset: the stream covers only bytes at or past it          |
// | 80     | 1    | snapshot name length                                               |
// | 81     | 64   | snapshot name, UTF-8, zero padded                                  |
// | 145    | 3    | reserved, zero                                                     |
// | 148    | 4    | CRC-32C of bytes 0..<148                                           |
//
// Record header (32 bytes), followed by `payload length` bytes of payload:
//
// | OFFSET | SIZE | FIELD                                                              |
// |--------|------|--------------------------------------------------------------------|
// | 0      | 1    | type: 1 data, 2 zero, 3 end                                        |
// | 1      | 1    | flags: bit 0 = payload is zlib-compressed                          |
// | 2      | 2    | reserved, zero                                                     |
// | 4      | 4    | payload length                                                     |
// | 8      | 8    | data/zero: volume offset; end: records before this one             |
// | 16     | 8    | data/zero: length in bytes; end: data bytes in the stream          |
// | 24     | 4    | CRC-32C of the payload (as stored)                                 |
// | 28     | 4    | CRC-32C of bytes 0..<28 of this header                             |
//
// The end record's payload is the SHA-256 of the stream header followed by every record
// header before it: each header carries its payload's CRC, so the digest covers every byte,
// and a dropped, repeated or reordered record changes it.

import StrataCore

/// What a stream reader or writer can fail with; messages name the byte offset.
typealias StreamError = StrataError

/// The stream header.
public struct StreamHeader: Sendable, Equatable {
    public static let magic: [UInt8] = Array("STRATASN".utf8)
    public static let version: UInt32 = 1
    public static let size = 152
    public static let flagCompression: UInt32 = 1

    public var flags: UInt32
    public var chunkSize: UInt32
    public var volumeSize: UInt64
    public var fromGUID: StrataGUID
    public var toGUID: StrataGUID
    public var createdAtNanos: Int64
    public var resumeOffset: UInt64
    public var snapshotName: String

    public var isIncremental: Bool { !self.fromGUID.isZero }

    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.replaceSubrange(0..<8, with: Self.magic)
        bytes.storeLE(Self.version, at: 8)
        bytes.storeLE(UInt32(Self.size), at: 12)
        bytes.storeLE(self.flags, at: 16)
        bytes.storeLE(self.chunkSize, at: 20)
        bytes.storeLE(self.volumeSize, at: 24)
        bytes.storeGUID(self.fromGUID, at: 32)
        bytes.storeGUID(self.toGUID, at: 48)
        bytes.storeLE(UInt64(bitPattern: self.createdAtNanos), at: 64)
        bytes.storeLE(self.resumeOffset, at: 72)
        let name = Array(self.snapshotName.utf8)
        precondition(name.count <= Limits.nameBytesMax, "snapshot name too long")
        bytes[80] = UInt8(name.count)
        bytes.replaceSubrange(81..<(81 + name.count), with: name)
        bytes.storeLE(crc32c(Array(bytes[0..<148])), at: 148)
        return bytes
    }

    /// Decodes and validates a header; `context` names the operation for messages.
    public static func decode(_ bytes: [UInt8], context: String) throws(StrataError) -> StreamHeader {
        precondition(bytes.count == Self.size, "header decode needs \(Self.size) bytes")
        guard Array(bytes[0..<8]) == Self.magic else {
            throw StrataError(.corrupt, "\(context): not a Strata stream at byte offset 0 (bad magic)").at(byteOffset: 0)
        }
        let version: UInt32 = bytes.loadLE(at: 8)
        guard version == Self.version else {
            throw StrataError(
                .corrupt, "\(context): stream version \(version) at byte offset 8 is not supported (this strata reads version 1)").at(byteOffset: 8)
        }
        let stored: UInt32 = bytes.loadLE(at: 148)
        let computed = crc32c(Array(bytes[0..<148]))
        guard stored == computed else {
            throw StrataError(
                .corrupt,
                "\(context): corrupt stream at byte offset 0: header checksum mismatch (stored=\(hex(stored)) computed=\(hex(computed)))").at(byteOffset: 0)
        }
        let length: UInt32 = bytes.loadLE(at: 12)
        let nameLength = Int(bytes[80])
        guard length == UInt32(Self.size), nameLength <= Limits.nameBytesMax else {
            throw StrataError(.corrupt, "\(context): corrupt stream at byte offset 12: invalid header fields").at(byteOffset: 12)
        }
        let header = StreamHeader(
            flags: bytes.loadLE(at: 16), chunkSize: bytes.loadLE(at: 20), volumeSize: bytes.loadLE(at: 24),
            fromGUID: bytes.loadGUID(at: 32), toGUID: bytes.loadGUID(at: 48),
            createdAtNanos: Int64(bitPattern: bytes.loadLE(at: 64)), resumeOffset: bytes.loadLE(at: 72),
            snapshotName: String(decoding: bytes[81..<(81 + nameLength)], as: UTF8.self))
        guard Names.isValid(header.snapshotName), !header.toGUID.isZero else {
            throw StrataError(.corrupt, "\(context): corrupt stream at byte offset 80: invalid snapshot name or GUID").at(byteOffset: 80)
        }
        return header
    }
}

/// One record's header.
public struct RecordHeader: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case data = 1
        case zero = 2
        case end = 3
    }

    public static let size = 32
    public static let flagCompressed: UInt8 = 1
    /// Largest payload a reader accepts: a data record carries at most this much volume data.
    public static let payloadBytesMax = Limits.streamRecordBytesMax

    public var kind: Kind
    public var flags: UInt8
    public var payloadLength: UInt32
    public var offset: UInt64
    public var length: UInt64
    public var payloadCRC: UInt32

    public init(kind: Kind, flags: UInt8 = 0, payloadLength: UInt32, offset: UInt64, length: UInt64, payloadCRC: UInt32) {
        self.kind = kind
        self.flags = flags
        self.payloadLength = payloadLength
        self.offset = offset
        self.length = length
        self.payloadCRC = payloadCRC
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes[0] = self.kind.rawValue
        bytes[1] = self.flags
        bytes.storeLE(self.payloadLength, at: 4)
        bytes.storeLE(self.offset, at: 8)
        bytes.storeLE(self.length, at: 16)
        bytes.storeLE(self.payloadCRC, at: 24)
        bytes.storeLE(crc32c(Array(bytes[0..<28])), at: 28)
        return bytes
    }

    /// Decodes a record header read at stream byte `position`.
    public static func decode(_ bytes: [UInt8], position: UInt64, context: String) throws(StrataError) -> RecordHeader {
        precondition(bytes.count == Self.size, "record decode needs \(Self.size) bytes")
        let stored: UInt32 = bytes.loadLE(at: 28)
        let computed = crc32c(Array(bytes[0..<28]))
        guard stored == computed else {
            throw StrataError(
                .corrupt,
                "\(context): corrupt stream at byte offset \(position): record header checksum mismatch (stored=\(hex(stored)) computed=\(hex(computed)))"
            ).at(byteOffset: position)
        }
        guard let kind = Kind(rawValue: bytes[0]) else {
            throw StrataError(.corrupt, "\(context): corrupt stream at byte offset \(position): unknown record type \(bytes[0])").at(byteOffset: position)
        }
        let header = RecordHeader(
            kind: kind, flags: bytes[1], payloadLength: bytes.loadLE(at: 4), offset: bytes.loadLE(at: 8),
            length: bytes.loadLE(at: 16), payloadCRC: bytes.loadLE(at: 24))
        guard Int(header.payloadLength) <= Self.payloadBytesMax + 1024, header.flags & ~Self.flagCompressed == 0 else {
            throw StrataError(
                .corrupt,
                "\(context): corrupt stream at byte offset \(position): invalid record (payload \(header.payloadLength) bytes, flags \(header.flags))"
            ).at(byteOffset: position)
        }
        return header
    }
}

func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}

extension Array where Element == UInt8 {
    func loadGUID(at offset: Int) -> StrataGUID {
        StrataGUID(high: self.loadLE(at: offset), low: self.loadLE(at: offset + 8))
    }

    mutating func storeGUID(_ guid: StrataGUID, at offset: Int) {
        self.storeLE(guid.high, at: offset)
        self.storeLE(guid.low, at: offset + 8)
    }
}
