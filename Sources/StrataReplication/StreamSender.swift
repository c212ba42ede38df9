// `strata send`: writes a snapshot as a stream. A full stream carries every mapped, non-zero
// chunk of the snapshot; an incremental one carries only the extents the engine's diff finds
// between the base and the snapshot (cost proportional to the change, not the volume size).
// A resumed stream (resume offset R) carries only what lies at or past R.
//
// Data is read in pieces of at most `RecordHeader.payloadBytesMax`; an all-zero piece is sent
// as a zero record (incremental) or not at all (full: the target starts empty), so streams
// stay as thin as the volume.

import Crypto
import StrataCore

/// What `send` produced.
public struct SendSummary: Codable, Sendable, Equatable {
    public var snapshot: String
    public var guid: String
    public var baseGUID: String?
    public var format: String
    public var streamBytes: UInt64 = 0
    public var dataBytes: UInt64 = 0
    public var records: UInt64 = 0
    public var resumeOffset: UInt64 = 0
}

/// What to send.
public struct SendRequest: Codable, Sendable, Equatable {
    /// `VOLUME@SNAPSHOT`.
    public var snapshot: String
    /// `VOLUME@SNAPSHOT` the receiver holds, for an incremental stream.
    public var base: String?
    /// A resume token printed by an interrupted receive.
    public var resumeToken: String?
    /// `strata` or `rbd-diff`.
    public var format: StreamFormatName
    /// Deflate data records where that makes them smaller (Strata format only).
    public var compress: Bool

    public init(
        snapshot: String, base: String?, resumeToken: String? = nil, format: StreamFormatName = .strata,
        compress: Bool = false
    ) {
        self.snapshot = snapshot
        self.base = base
        self.resumeToken = resumeToken
        self.format = format
        self.compress = compress
    }
}

/// Stream formats `send` writes and `receive` reads.
public enum StreamFormatName: String, Codable, Sendable, CaseIterable {
    case strata
    case rbdDiff = "rbd-diff"
}

/// A changed extent to send: data to read from the snapshot, or zeros.
struct SendExtent {
    var offset: UInt64
    var length: UInt64
    var isData: Bool
}

public enum StreamSender {
    /// Writes the stream `request` describes to `output`; `progress(done, total)` in data bytes.
    public static func send(
        pool: Pool, _ request: SendRequest, to output: any StreamOutput, progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) throws(StrataError) -> SendSummary {
        let plan = try SendPlan(pool: pool, request)
        switch request.format {
        case .strata:
            return try StrataStreamWriter(plan: plan, output: output).write(pool: pool, progress: progress)
        case .rbdDiff:
            return try RBDDiffWriter(plan: plan, output: output).write(pool: pool, progress: progress)
        }
    }
}

/// The snapshots, the extents and the resume point of one send.
struct SendPlan {
    let request: SendRequest
    let target: SnapshotIdentity
    let base: SnapshotIdentity?
    let handle: VolumeHandle
    let extents: [SendExtent]
    let resumeOffset: UInt64

    init(pool: Pool, _ request: SendRequest) throws(StrataError) {
        self.request = request
        let operation = "send \(request.snapshot)"
        self.target = try pool.snapshotIdentity(request.snapshot)
        self.handle = try pool.handle(request.snapshot)
        var extents: [SendExtent] = []
        if let base = request.base {
            guard Names.split(base).snapshot != nil else {
                throw StrataError(.invalidArgument, "\(operation): --from must name a snapshot, VOLUME@SNAPSHOT")
            }
            self.base = try pool.snapshotIdentity(base)
            extents = try pool.diff(from: base, to: request.snapshot).map {
                SendExtent(offset: $0.offset, length: $0.length, isData: $0.kind == .data)
            }
        } else {
            self.base = nil
            extents = try pool.mapping(self.handle, at: 0, length: self.target.sizeBytes).filter(\.mapped).map {
                SendExtent(offset: $0.offset, length: $0.length, isData: true)
            }
        }
        var resume: UInt64 = 0
        if let text = request.resumeToken {
            let token = try ResumeToken(parsing: text, operation: operation)
            guard token.target == self.target.guid, token.base == (self.base?.guid ?? .zero) else {
                throw StrataError(
                    .invalidArgument,
                    "\(operation): the resume token is for snapshot \(token.target) from base \(token.base), not \(self.target.guid) from \(self.base?.guid ?? .zero); send the snapshots the token names"
                )
            }
            resume = token.offset
        }
        self.resumeOffset = resume
        self.extents = extents.compactMap { extent in
            let end = extent.offset + extent.length
            guard end > resume else { return nil }
            let start = max(extent.offset, resume)
            return SendExtent(offset: start, length: end - start, isData: extent.isData)
        }
    }

    var totalBytes: UInt64 { self.extents.reduce(0) { $0 + $1.length } }

    /// Calls `body` with every piece of data (at most `pieceBytesMax`) or zero extent, in order.
    /// An all-zero data piece is passed as a zero extent.
    func forEachPiece(
        pool: Pool, pieceBytesMax: Int, _ body: (SendExtent, [UInt8]) throws(StrataError) -> Void
    ) throws(StrataError) {
        var buffer = [UInt8](repeating: 0, count: pieceBytesMax)
        for extent in self.extents {
            guard extent.isData else {
                try body(extent, [])
                continue
            }
            var offset = extent.offset
            while offset < extent.offset + extent.length {
                let count = Int(min(UInt64(pieceBytesMax), extent.offset + extent.length - offset))
                if buffer.count != count { buffer = [UInt8](repeating: 0, count: count) }
                try buffer.withUnsafeMutableBufferPointer { raw throws(StrataError) in
                    try pool.read(self.handle, at: offset, into: UnsafeMutableRawBufferPointer(raw))
                }
                let piece = SendExtent(offset: offset, length: UInt64(count), isData: !Zeros.all(buffer))
                try body(piece, piece.isData ? buffer : [])
                offset += UInt64(count)
            }
        }
    }

    /// Writes every piece as the record header and payload `record` makes of it, counting into
    /// `summary` and reporting progress.
    func writeRecords(
        pool: Pool, to output: any StreamOutput, summary: inout SendSummary, progress: (UInt64, UInt64) -> Void,
        record: (SendExtent, [UInt8]) -> (header: [UInt8], payload: [UInt8])
    ) throws(StrataError) {
        let total = self.totalBytes
        var done: UInt64 = 0
        try self.forEachPiece(pool: pool, pieceBytesMax: RecordHeader.payloadBytesMax) { piece, data throws(StrataError) in
            let (bytes, payload) = record(piece, data)
            try output.write(bytes)
            if !payload.isEmpty { try output.write(payload) }
            summary.records += 1
            summary.streamBytes += UInt64(bytes.count + payload.count)
            summary.dataBytes += UInt64(payload.count)
            done += piece.length
            progress(done, total)
        }
        progress(total, total)
    }
}

/// Writes the Strata stream format (StreamFormat.swift).
struct StrataStreamWriter {
    let plan: SendPlan
    let output: any StreamOutput

    func write(pool: Pool, progress: (UInt64, UInt64) -> Void) throws(StrataError) -> SendSummary {
        var summary = SendSummary(
            snapshot: self.plan.request.snapshot, guid: self.plan.target.guid.description,
            baseGUID: self.plan.base?.guid.description, format: StreamFormatName.strata.rawValue)
        summary.resumeOffset = self.plan.resumeOffset
        let header = StreamHeader(
            flags: self.plan.request.compress ? StreamHeader.flagCompression : 0, chunkSize: UInt32(pool.chunkSize), volumeSize: self.plan.target.sizeBytes,
            fromGUID: self.plan.base?.guid ?? .zero, toGUID: self.plan.target.guid,
            createdAtNanos: self.plan.target.createdAtNanos, resumeOffset: self.plan.resumeOffset,
            snapshotName: self.plan.target.name)
        var digest = SHA256()
        let headerBytes = header.encode()
        digest.update(data: headerBytes)
        try self.output.write(headerBytes)
        summary.streamBytes += UInt64(headerBytes.count)
        let compress = self.plan.request.compress
        try self.plan.writeRecords(pool: pool, to: self.output, summary: &summary, progress: progress) { piece, data in
            let packed = compress && piece.isData ? RecordCompression.compress(data) : nil
            let payload = packed ?? data
            let bytes = RecordHeader(
                kind: piece.isData ? .data : .zero, flags: packed == nil ? 0 : RecordHeader.flagCompressed,
                payloadLength: UInt32(payload.count), offset: piece.offset, length: piece.length,
                payloadCRC: crc32c(payload)
            ).encode()
            digest.update(data: bytes)
            return (bytes, payload)
        }
        let hash = Array(digest.finalize())
        let end = RecordHeader(
            kind: .end, payloadLength: UInt32(hash.count), offset: summary.records, length: summary.dataBytes,
            payloadCRC: crc32c(hash))
        try self.output.write(end.encode())
        try self.output.write(hash)
        summary.streamBytes += UInt64(RecordHeader.size + hash.count)
        return summary
    }
}
