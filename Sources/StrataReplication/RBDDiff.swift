// Ceph's `rbd diff v1` stream (ceph/ceph doc/dev/rbd-diff.rst), written by `strata send
// --format rbd-diff` and read by `strata receive`, so volumes move between RBD and Strata
// (`rbd export-diff`, `rbd import-diff`, `rbd merge-diff`).
//
// The format: the 12-byte header "rbd diff v1\n"; metadata records, each a one-byte tag:
// 'f' from-snapshot (le32 name length, name), 't' to-snapshot (same), 's' image size (le64);
// then data records: 'w' updated data (le64 offset, le64 length, the bytes), 'z' zeroed range
// (le64 offset, le64 length); then 'e', the end. The format has no checksums and no GUIDs:
// a base is matched by snapshot name, and only truncation and malformed records are caught.

import StrataCore

enum RBDDiff {
    static let header: [UInt8] = Array("rbd diff v1\n".utf8)
    static let tagFrom = UInt8(ascii: "f")
    static let tagTo = UInt8(ascii: "t")
    static let tagSize = UInt8(ascii: "s")
    static let tagData = UInt8(ascii: "w")
    static let tagZero = UInt8(ascii: "z")
    static let tagEnd = UInt8(ascii: "e")

    static func nameRecord(_ tag: UInt8, _ name: String) -> [UInt8] {
        var bytes = [tag, 0, 0, 0, 0]
        bytes.storeLE(UInt32(name.utf8.count), at: 1)
        return bytes + Array(name.utf8)
    }

    static func extentRecord(_ tag: UInt8, offset: UInt64, length: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 17)
        bytes[0] = tag
        bytes.storeLE(offset, at: 1)
        bytes.storeLE(length, at: 9)
        return bytes
    }
}

/// Writes `rbd diff v1`.
struct RBDDiffWriter {
    let plan: SendPlan
    let output: any StreamOutput

    func write(pool: Pool, progress: (UInt64, UInt64) -> Void) throws(StrataError) -> SendSummary {
        guard self.plan.resumeOffset == 0 else {
            throw StrataError(.invalidArgument, "send \(self.plan.request.snapshot): rbd-diff streams cannot resume; send the whole stream again")
        }
        var summary = SendSummary(
            snapshot: self.plan.request.snapshot, guid: self.plan.target.guid.description,
            baseGUID: self.plan.base?.guid.description, format: StreamFormatName.rbdDiff.rawValue)
        var head = RBDDiff.header
        if let base = self.plan.base { head += RBDDiff.nameRecord(RBDDiff.tagFrom, base.name) }
        head += RBDDiff.nameRecord(RBDDiff.tagTo, self.plan.target.name)
        var size = [RBDDiff.tagSize] + [UInt8](repeating: 0, count: 8)
        size.storeLE(self.plan.target.sizeBytes, at: 1)
        head += size
        try self.output.write(head)
        summary.streamBytes += UInt64(head.count)
        try self.plan.writeRecords(pool: pool, to: self.output, summary: &summary, progress: progress) { piece, data in
            (RBDDiff.extentRecord(piece.isData ? RBDDiff.tagData : RBDDiff.tagZero, offset: piece.offset, length: piece.length), data)
        }
        try self.output.write([RBDDiff.tagEnd])
        summary.streamBytes += 1
        return summary
    }
}

/// Reads `rbd diff v1`.
struct RBDDiffDecoder: StreamDecoder {
    let reader: StreamReader
    let context: String
    var description: StreamDescription
    private var pendingTag: UInt8?

    init(reader: StreamReader, magic: [UInt8], context: String) throws(StrataError) {
        self.reader = reader
        self.context = context
        let rest = try reader.read(RBDDiff.header.count - magic.count, what: "rbd diff header")
        guard magic + rest == RBDDiff.header else {
            throw StrataError(.corrupt, "\(context): not an rbd diff v1 stream at byte offset 0 (bad header)").at(byteOffset: 0)
        }
        var fromName: String?
        var toName: String?
        var size: UInt64?
        while true {
            let position = reader.position
            let tag = try reader.read(1, what: "rbd diff record tag")[0]
            switch tag {
            case RBDDiff.tagFrom, RBDDiff.tagTo:
                let length: UInt32 = try reader.read(4, what: "snapshot name length").loadLE(at: 0)
                guard length > 0, length <= UInt32(Limits.nameBytesMax) else {
                    throw StrataError(.corrupt, "\(context): corrupt stream at byte offset \(position): snapshot name of \(length) bytes").at(byteOffset: position)
                }
                let name = String(decoding: try reader.read(Int(length), what: "snapshot name"), as: UTF8.self)
                if tag == RBDDiff.tagFrom { fromName = name } else { toName = name }
            case RBDDiff.tagSize:
                size = try reader.read(8, what: "image size").loadLE(at: 0)
            case RBDDiff.tagData, RBDDiff.tagZero, RBDDiff.tagEnd:
                self.pendingTag = tag
            default:
                throw StrataError(.corrupt, "\(context): corrupt stream at byte offset \(position): unknown rbd diff tag \(tag)").at(byteOffset: position)
            }
            if self.pendingTag != nil { break }
        }
        guard let size, size > 0, size % 512 == 0, size <= Limits.volumeSizeMax else {
            throw StrataError(.corrupt, "\(context): rbd diff stream has no valid image size ('s' record)")
        }
        guard let toName, Names.isValid(toName) else {
            throw StrataError(
                .invalidArgument,
                "\(context): the rbd diff stream names no valid to-snapshot ('t' record); export it from a snapshot (`rbd export-diff IMAGE@SNAP`)")
        }
        self.description = StreamDescription(
            format: .rbdDiff, volumeSize: size, fromGUID: .zero, fromName: fromName, toGUID: .zero,
            snapshotName: toName, createdAtNanos: 0, resumeOffset: 0)
    }

    mutating func next() throws(StrataError) -> StreamItem {
        let position = self.reader.position - (self.pendingTag == nil ? 0 : 1)
        let tag: UInt8
        if let pending = self.pendingTag {
            tag = pending
            self.pendingTag = nil
        } else {
            tag = try self.reader.read(1, what: "rbd diff record tag")[0]
        }
        if tag == RBDDiff.tagEnd { return .end }
        guard tag == RBDDiff.tagData || tag == RBDDiff.tagZero else {
            throw StrataError(.corrupt, "\(self.context): corrupt stream at byte offset \(position): unexpected rbd diff tag \(tag)").at(byteOffset: position)
        }
        let fields = try self.reader.read(16, what: "rbd diff extent")
        let offset: UInt64 = fields.loadLE(at: 0)
        let length: UInt64 = fields.loadLE(at: 8)
        let size = self.description.volumeSize
        guard offset <= size, length <= size - offset else {
            throw StrataError(
                .corrupt,
                "\(self.context): corrupt stream at byte offset \(position): extent offset \(offset) length \(length) past the end (size=\(size))").at(byteOffset: position)
        }
        if tag == RBDDiff.tagZero { return .zero(offset: offset, length: length) }
        guard length <= Limits.rbdDiffExtentBytesMax else {
            throw StrataError(.corrupt, "\(self.context): corrupt stream at byte offset \(position): data extent of \(length) bytes is too large").at(byteOffset: position)
        }
        return .data(offset: offset, bytes: try self.reader.read(Int(length), what: "rbd diff data"))
    }
}
