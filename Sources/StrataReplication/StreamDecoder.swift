// Stream decoders: turn bytes into verified items for the receiver. The Strata decoder checks
// every record's header and payload CRC before handing it out, that records ascend and stay
// inside the volume, and at the end the record count and the SHA-256 digest of all headers;
// anything else is an error naming the byte offset where the problem starts. Nothing is handed
// out before it is verified, so what the receiver applies is always a verified prefix.

import Crypto
import StrataCore

/// What a stream says about itself, from its header (or rbd-diff metadata records).
public struct StreamDescription: Sendable {
    public var format: StreamFormatName
    public var volumeSize: UInt64
    /// The base snapshot's GUID (Strata streams); zero for a full stream or an rbd-diff.
    public var fromGUID: StrataGUID
    /// The base snapshot's name (rbd-diff streams, which carry names, not GUIDs).
    public var fromName: String?
    public var toGUID: StrataGUID
    public var snapshotName: String
    public var createdAtNanos: Int64
    public var resumeOffset: UInt64
}

/// One verified piece of a stream.
enum StreamItem {
    case data(offset: UInt64, bytes: [UInt8])
    case zero(offset: UInt64, length: UInt64)
    case end
}

protocol StreamDecoder {
    var description: StreamDescription { get }
    mutating func next() throws(StrataError) -> StreamItem
}

enum StreamDecoders {
    /// Reads the stream's first bytes and returns the decoder for its format.
    static func open(_ reader: StreamReader, context: String) throws(StrataError) -> any StreamDecoder {
        let magic = try reader.read(8, what: "stream magic")
        if magic == StreamHeader.magic {
            return try StrataStreamDecoder(reader: reader, magic: magic, context: context)
        }
        if magic == Array(RBDDiff.header.prefix(8)) {
            return try RBDDiffDecoder(reader: reader, magic: magic, context: context)
        }
        throw StrataError(
            .corrupt, "\(context): not a Strata stream or an rbd diff v1 stream at byte offset 0 (bad magic)").at(byteOffset: 0)
    }
}

struct StrataStreamDecoder: StreamDecoder {
    let reader: StreamReader
    let context: String
    let description: StreamDescription
    private var digest = SHA256()
    private var records: UInt64 = 0
    private var dataBytes: UInt64 = 0
    private var nextOffset: UInt64
    private let compressionAllowed: Bool

    init(reader: StreamReader, magic: [UInt8], context: String) throws(StrataError) {
        self.reader = reader
        self.context = context
        let bytes = magic + (try reader.read(StreamHeader.size - magic.count, what: "stream header"))
        let header = try StreamHeader.decode(bytes, context: context)
        guard header.flags & ~StreamHeader.flagCompression == 0 else {
            throw StrataError(.corrupt, "\(context): corrupt stream at byte offset 16: unknown header flags \(header.flags)").at(byteOffset: 16)
        }
        guard header.resumeOffset <= header.volumeSize, header.volumeSize > 0, header.volumeSize % 512 == 0,
            header.volumeSize <= Limits.volumeSizeMax
        else {
            throw StrataError(.corrupt, "\(context): corrupt stream at byte offset 24: invalid volume size or resume offset").at(byteOffset: 24)
        }
        self.digest.update(data: bytes)
        self.nextOffset = header.resumeOffset
        self.compressionAllowed = header.flags & StreamHeader.flagCompression != 0
        self.description = StreamDescription(
            format: .strata, volumeSize: header.volumeSize, fromGUID: header.fromGUID, fromName: nil,
            toGUID: header.toGUID, snapshotName: header.snapshotName, createdAtNanos: header.createdAtNanos,
            resumeOffset: header.resumeOffset)
    }

    mutating func next() throws(StrataError) -> StreamItem {
        let position = self.reader.position
        let headerBytes = try self.reader.read(RecordHeader.size, what: "record header")
        let record = try RecordHeader.decode(headerBytes, position: position, context: self.context)
        let payloadPosition = self.reader.position
        let payload = try self.reader.read(Int(record.payloadLength), what: "record payload")
        let crc = crc32c(payload)
        guard crc == record.payloadCRC else {
            throw StrataError(
                .corrupt,
                "\(self.context): corrupt stream at byte offset \(payloadPosition): record payload checksum mismatch (stored=\(hex(record.payloadCRC)) computed=\(hex(crc)))"
            ).at(byteOffset: payloadPosition)
        }
        let context = self.context
        let invalid = { (what: String) in
            StrataError(.corrupt, "\(context): corrupt stream at byte offset \(position): \(what)").at(byteOffset: position)
        }
        switch record.kind {
        case .end:
            let computed = self.digest.finalize()
            guard record.offset == self.records, record.length == self.dataBytes else {
                throw invalid("end record counts \(record.offset) records and \(record.length) data bytes, the stream had \(self.records) and \(self.dataBytes)")
            }
            guard computed == payload else { throw invalid("stream digest mismatch") }
            return .end
        case .data, .zero:
            guard record.length > 0, record.offset >= self.nextOffset,
                record.offset <= self.description.volumeSize,
                record.length <= self.description.volumeSize - record.offset
            else {
                throw invalid("record at volume offset \(record.offset) length \(record.length) is out of order or past the end (size=\(self.description.volumeSize))")
            }
            // A data record's volume bytes are bounded before anything is allocated for them: the
            // sender never writes more than one payload's worth, compressed or not.
            guard record.kind == .zero || record.length <= UInt64(RecordHeader.payloadBytesMax) else {
                throw invalid("data record of \(record.length) bytes exceeds the limit of \(RecordHeader.payloadBytesMax)")
            }
            let compressed = record.flags & RecordHeader.flagCompressed != 0
            guard !compressed || (record.kind == .data && self.compressionAllowed) else {
                throw invalid("a compressed record in a stream whose header allows none")
            }
            let expected = record.kind == .data ? record.length : 0
            guard compressed ? UInt64(record.payloadLength) < expected : UInt64(record.payloadLength) == expected else {
                throw invalid("payload of \(record.payloadLength) bytes for a record of length \(record.length)")
            }
            self.digest.update(data: headerBytes)
            self.records += 1
            self.dataBytes += UInt64(payload.count)
            self.nextOffset = record.offset + record.length
            guard record.kind == .data else { return .zero(offset: record.offset, length: record.length) }
            guard compressed else { return .data(offset: record.offset, bytes: payload) }
            guard let inflated = RecordCompression.decompress(payload, length: Int(record.length)) else {
                throw StrataError(
                    .corrupt, "\(self.context): corrupt stream at byte offset \(payloadPosition): compressed payload does not inflate to \(record.length) bytes").at(byteOffset: payloadPosition)
            }
            return .data(offset: record.offset, bytes: inflated)
        }
    }
}
