// The manifest: a snapshot's version table in the remote, written last so a snapshot is
// visible only when every object it names is stored. Field by field in docs/OBJECTSTORE.md.
//
// Version 2 adds a SHA-256 per part (`partSizeBytes`, 256 KiB as pushed) of every object, so a
// read of a never-fetched range can GET just the parts it covers and verify them before use;
// the whole object's SHA-256 still guards what is stored. A manifest without part hashes is
// written as version 1, so older readers keep reading it; this reader reads both.
//
// A manifest is two parts: a header line, one JSON object ending in LF, then the body, a JSON
// object of exactly `bodyBytes` bytes whose SHA-256 is `bodySHA256`:
//
//     {"bodyBytes":N,"bodySHA256":"<hex>","format":"strata-manifest","version":1}\n<body>
//
// The header is read first, so a manifest from a newer format version is refused before its
// body is parsed, and the body's checksum is over its exact bytes (no canonical JSON needed).
// Invariants, checked before encoding and again after decoding (STYLE §5 pairs): entries are
// in strictly ascending index order, every index is below the object count, every entry's
// length is its object's length (the last may be short), every SHA-256 is 64 hex digits and
// the key is the content key it derives. A hole (never written or all zeros) has no entry.

import Crypto
import Foundation
import StrataCore

/// Where things live in a remote's container (docs/OBJECTSTORE.md "Keys").
public enum RemoteLayout {
    /// Content objects: `objects/<sha256 hex>`.
    public static let objectPrefix = "objects/"
    /// Manifests: `manifests/<volume>/<snapshot>`.
    public static let manifestPrefix = "manifests/"
    /// Push and gc leases: `leases/push-…`, `leases/gc-…`.
    public static let leasePrefix = "leases/"

    public static func objectKey(sha256: String) -> String { Self.objectPrefix + sha256 }
    public static func manifestKey(volume: String, snapshot: String) -> String {
        "\(Self.manifestPrefix)\(volume)/\(snapshot)"
    }
}

/// One stored object of a snapshot.
public struct ManifestEntry: Codable, Sendable, Equatable {
    /// Object index: the entry covers volume bytes [index × objectSize, (index + 1) × objectSize).
    public let index: UInt64
    public let key: String
    public let sha256: String
    /// The object's length: the object size, or less for the last object of the volume.
    public let bytes: UInt64
    /// Version 2: hex SHA-256 of each part of the object (part j covers object bytes
    /// [j × partSizeBytes, (j + 1) × partSizeBytes), the last cut at `bytes`), so a ranged GET
    /// of whole parts is verified on its own. Nil in version 1, and for an entry a version-2
    /// push inherited unread from a version-1 parent.
    public let parts: [String]?

    public init(index: UInt64, sha256: String, bytes: UInt64, parts: [String]? = nil) {
        self.index = index
        self.key = RemoteLayout.objectKey(sha256: sha256)
        self.sha256 = sha256
        self.bytes = bytes
        self.parts = parts
    }
}

/// The snapshot a manifest was pushed incrementally from.
public struct ManifestParent: Codable, Sendable, Equatable {
    public let snapshot: String
    public let guid: String

    public init(snapshot: String, guid: String) {
        self.snapshot = snapshot
        self.guid = guid
    }
}

/// A snapshot's version table.
public struct Manifest: Codable, Sendable, Equatable {
    public static let formatName = "strata-manifest"
    /// The newest format version this strata reads. It writes 2 when the manifest has part
    /// hashes (`partSizeBytes`), 1 otherwise, and reads both.
    public static let version = 2

    public var volume: String
    public var snapshot: String
    /// The local snapshot's GUID: a same-named snapshot elsewhere is a different snapshot.
    public var guid: String
    public var createdAt: String
    public var sizeBytes: UInt64
    public var objectSizeBytes: UInt64
    public var parent: ManifestParent?
    public var objects: [ManifestEntry]
    /// Version 2: the length of the parts each entry's `parts` hashes (a power of two from
    /// 4 KiB to the object size); nil in version 1.
    public var partSizeBytes: UInt64?

    public init(
        volume: String, snapshot: String, guid: String, createdAt: String, sizeBytes: UInt64, objectSizeBytes: UInt64,
        parent: ManifestParent?, objects: [ManifestEntry], partSizeBytes: UInt64? = nil
    ) {
        self.partSizeBytes = partSizeBytes
        self.volume = volume
        self.snapshot = snapshot
        self.guid = guid
        self.createdAt = createdAt
        self.sizeBytes = sizeBytes
        self.objectSizeBytes = objectSizeBytes
        self.parent = parent
        self.objects = objects
    }

    /// How many objects cover the volume, holes included.
    public var objectCount: UInt64 { (self.sizeBytes + self.objectSizeBytes - 1) / self.objectSizeBytes }

    /// The length of object `index`: the object size, or the remainder for the last one.
    public func length(ofObject index: UInt64) -> UInt64 {
        min(self.objectSizeBytes, self.sizeBytes - index * self.objectSizeBytes)
    }

    private struct Header: Codable {
        let format: String
        let version: Int
        let bodyBytes: Int
        let bodySHA256: String
    }

    /// The manifest's bytes. Traps on a manifest that breaks its invariants (a programmer error).
    public func encode() -> Data {
        if let problem = self.problem { preconditionFailure("encode manifest \(self.volume)@\(self.snapshot): \(problem)") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let body = try? encoder.encode(self) else { preconditionFailure("a manifest always encodes") }
        let header = Header(
            format: Self.formatName, version: self.partSizeBytes == nil ? 1 : 2, bodyBytes: body.count,
            bodySHA256: SigV4Signer.hex(SHA256.hash(data: body)))
        guard var data = try? encoder.encode(header) else { preconditionFailure("a manifest header always encodes") }
        data.append(UInt8(ascii: "\n"))
        data.append(body)
        return data
    }

    /// Decodes and verifies a manifest read from `key`.
    /// - Throws: `.unsupported` for a newer format version, `.corrupt` for anything unreadable,
    ///   a checksum mismatch or a broken invariant.
    public static func decode(_ data: Data, key: String) throws(StrataError) -> Manifest {
        func corrupt(_ what: String) -> StrataError {
            StrataError(.corrupt, "read manifest \(key): \(what); push the snapshot again or delete the manifest")
        }
        guard data.count <= Limits.manifestBytesMax else { throw corrupt("larger than \(Limits.manifestBytesMax) bytes") }
        guard let newline = data.firstIndex(of: UInt8(ascii: "\n")),
            let header = try? JSONDecoder().decode(Header.self, from: data[data.startIndex..<newline])
        else { throw corrupt("no manifest header line") }
        guard header.format == Self.formatName else { throw corrupt("format '\(header.format)' is not \(Self.formatName)") }
        guard header.version <= Self.version else {
            throw StrataError(
                .unsupported,
                "read manifest \(key): format version \(header.version) is newer than this strata's \(Self.version); upgrade strata to read it"
            )
        }
        let body = data[(newline + 1)...]
        guard body.count == header.bodyBytes else { throw corrupt("body is \(body.count) bytes, header says \(header.bodyBytes)") }
        let digest = SigV4Signer.hex(SHA256.hash(data: body))
        guard digest == header.bodySHA256 else {
            throw corrupt("body checksum mismatch (expected=\(header.bodySHA256) actual=\(digest))")
        }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(body))
        } catch {
            throw corrupt("unreadable body (\(error))")
        }
        if let problem = manifest.problem { throw corrupt(problem) }
        guard header.version >= 2 || manifest.partSizeBytes == nil else { throw corrupt("part hashes in a version 1 manifest") }
        return manifest
    }

    /// The first broken invariant, or nil.
    var problem: String? {
        guard self.objectSizeBytes.nonzeroBitCount == 1 else { return "object size \(self.objectSizeBytes) is not a power of two" }
        // Bounded first, so `objectCount` cannot overflow: a size near 2^64 once trapped there
        // (found by the manifest fuzz target, docs/TESTING.md).
        guard self.sizeBytes <= Limits.volumeSizeMax else {
            return "size \(self.sizeBytes) is past the largest volume (\(Limits.volumeSizeMax) bytes)"
        }
        guard Names.isValid(self.volume), Names.isValid(self.snapshot) else { return "invalid volume or snapshot name" }
        if let problem = self.partSizeProblem { return problem }
        var previous: UInt64?
        for entry in self.objects {
            if let previous, entry.index <= previous { return "object \(entry.index) is out of order" }
            previous = entry.index
            guard entry.index < self.objectCount else { return "object \(entry.index) is beyond the volume's \(self.objectCount) objects" }
            guard entry.bytes == self.length(ofObject: entry.index) else {
                return "object \(entry.index) is \(entry.bytes) bytes, expected \(self.length(ofObject: entry.index))"
            }
            guard entry.sha256.count == 64, entry.sha256.allSatisfy(\.isHexDigit), entry.sha256 == entry.sha256.lowercased()
            else { return "object \(entry.index) has an invalid SHA-256" }
            guard entry.key == RemoteLayout.objectKey(sha256: entry.sha256) else {
                return "object \(entry.index) key \(entry.key) is not its content key"
            }
            if let problem = self.partsProblem(entry) { return problem }
        }
        return nil
    }

    /// What is wrong with `entry`'s part hashes, or nil.
    private func partsProblem(_ entry: ManifestEntry) -> String? {
        guard let parts = entry.parts else { return nil }
        guard let partSize = self.partSizeBytes else { return "object \(entry.index) has part hashes but no partSizeBytes" }
        guard UInt64(parts.count) == (entry.bytes + partSize - 1) / partSize else {
            return "object \(entry.index) has \(parts.count) part hashes, expected \((entry.bytes + partSize - 1) / partSize)"
        }
        for part in parts where !Self.isHexSHA256(part) { return "object \(entry.index) has an invalid part SHA-256" }
        return nil
    }

    static func isHexSHA256(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// The part size's problem, or nil.
    private var partSizeProblem: String? {
        guard let partSize = self.partSizeBytes else { return nil }
        guard partSize.nonzeroBitCount == 1, partSize >= 4096, partSize <= self.objectSizeBytes else {
            return "part size \(partSize) is not a power of two from 4096 to the object size"
        }
        return nil
    }

    /// The part hashes of `bytes` for parts of `partSize` bytes.
    public static func partHashes(_ bytes: [UInt8], partSize: UInt64) -> [String] {
        bytes.withUnsafeBytes { Self.hashes($0, partSize: partSize).parts }
    }

    /// The hex SHA-256 of `bytes` and of each of its parts of `partSize` bytes, in one walk over
    /// the bytes: each part feeds the whole object's hash and its own while it is still in the
    /// processor's cache, so an 8 MiB object is read from memory once, not twice.
    public static func hashes(_ bytes: UnsafeRawBufferPointer, partSize: UInt64) -> (sha256: String, parts: [String]) {
        precondition(partSize > 0, "a part holds at least one byte")
        var whole = SHA256()
        var parts: [String] = []
        parts.reserveCapacity((bytes.count + Int(partSize) - 1) / Int(partSize))
        for start in stride(from: 0, to: bytes.count, by: Int(partSize)) {
            let part = UnsafeRawBufferPointer(rebasing: bytes[start..<min(start + Int(partSize), bytes.count)])
            whole.update(bufferPointer: part)
            parts.append(SigV4Signer.hex(SHA256.hash(data: part)))
        }
        return (SigV4Signer.hex(whole.finalize()), parts)
    }
}
