// Cuts PDUs out of a connection's byte stream and writes them back to bytes, with the digests
// the connection negotiated (RFC 7143 §11.1: BHS, AHS, HeaderDigest, data padded to 4 bytes,
// DataDigest). A PDU longer than this side's MaxRecvDataSegmentLength is refused before its
// bytes are buffered, so a client cannot make the target hold more than one bounded PDU.

import NIOCore
import StrataCore

/// Why a byte stream cannot be framed; the connection answers with a Reject or closes.
public enum FramingError: Error, Equatable, Sendable {
    /// The data segment is longer than the receive limit.
    case dataSegmentTooLong(header: [UInt8], length: Int, limit: Int)
    /// The header digest does not match: nothing after it can be trusted.
    case headerDigest
    /// The data digest does not match; the header is sound.
    case dataDigest(header: [UInt8])
}

/// The digests and limit of one connection; changed when login completes.
public struct FramingSettings: Sendable, Equatable {
    public var headerDigest = false
    public var dataDigest = false
    /// The longest data segment this side accepts.
    public var maxReceiveDataLength: Int

    public init(headerDigest: Bool = false, dataDigest: Bool = false, maxReceiveDataLength: Int) {
        self.headerDigest = headerDigest
        self.dataDigest = dataDigest
        self.maxReceiveDataLength = maxReceiveDataLength
    }
}

public enum PDUFramer {
    /// Takes one whole PDU off the front of `buffer`, or returns nil (leaving it as it was) when
    /// more bytes are needed.
    public static func decode(_ buffer: inout ByteBuffer, settings: FramingSettings) throws(FramingError) -> PDU? {
        guard buffer.readableBytes >= PDU.headerLength,
            let header = buffer.getBytes(at: buffer.readerIndex, length: PDU.headerLength)
        else { return nil }
        let ahsLength = Int(header[4]) * 4
        let dataLength = Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
        if dataLength > settings.maxReceiveDataLength {
            throw .dataSegmentTooLong(header: header, length: dataLength, limit: settings.maxReceiveDataLength)
        }
        let padded = (dataLength + 3) & ~3
        let headerDigestLength = settings.headerDigest ? 4 : 0
        let dataDigestLength = settings.dataDigest && dataLength > 0 ? 4 : 0
        let total = PDU.headerLength + ahsLength + headerDigestLength + padded + dataDigestLength
        guard buffer.readableBytes >= total else { return nil }

        let start = buffer.readerIndex
        let covered = PDU.headerLength + ahsLength
        if settings.headerDigest {
            let digest = buffer.getInteger(at: start + covered, endianness: .little, as: UInt32.self)
            let computed = crc32c(buffer.getBytes(at: start, length: covered) ?? [])
            guard digest == computed else { throw .headerDigest }
        }
        let ahs = buffer.getBytes(at: start + PDU.headerLength, length: ahsLength) ?? []
        let dataStart = start + covered + headerDigestLength
        let data = buffer.getBytes(at: dataStart, length: dataLength) ?? []
        let dataDigest =
            dataDigestLength > 0 ? buffer.getInteger(at: dataStart + padded, endianness: .little, as: UInt32.self) : nil
        buffer.moveReaderIndex(forwardBy: total)
        if let dataDigest, dataDigest != Self.dataDigest(data) { throw .dataDigest(header: header) }
        return PDU(header: header, additionalHeader: ahs, data: data)
    }

    /// Appends `pdu` to `buffer`, with lengths set from its segments, padding and digests.
    /// `data`, when given, is the data segment in place of `pdu.data` (a slice of a larger
    /// buffer, sent without copying it first).
    public static func encode(
        _ pdu: PDU, data: ArraySlice<UInt8>? = nil, into buffer: inout ByteBuffer, settings: FramingSettings
    ) {
        var pdu = pdu
        let segment = data ?? pdu.data[...]
        pdu.sealLengths(dataLength: segment.count)
        buffer.writeBytes(pdu.header)
        buffer.writeBytes(pdu.additionalHeader)
        if settings.headerDigest {
            buffer.writeInteger(crc32c(pdu.header + pdu.additionalHeader), endianness: .little)
        }
        guard !segment.isEmpty else { return }
        buffer.writeBytes(segment)
        buffer.writeRepeatingByte(0, count: (4 - segment.count % 4) % 4)
        if settings.dataDigest { buffer.writeInteger(Self.dataDigest(segment), endianness: .little) }
    }

    /// CRC32C of a data segment with its padding (RFC 7143 §11.1: the digest covers the pad bytes).
    static func dataDigest(_ data: some Collection<UInt8>) -> UInt32 {
        let padding = (4 - data.count % 4) % 4
        let crc = data.withContiguousStorageIfAvailable { crc32c(UnsafeRawBufferPointer($0)) } ?? crc32c(Array(data))
        guard padding > 0 else { return crc }
        return [UInt8](repeating: 0, count: padding).withUnsafeBufferPointer {
            crc32c(UnsafeRawBufferPointer($0), seed: crc)
        }
    }
}
