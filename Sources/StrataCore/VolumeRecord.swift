import Foundation

// One row of the volume table: a volume or a snapshot. Snapshots point at their volume by id
// (so renaming a volume carries its snapshots along); a clone is a volume whose origin is the
// snapshot it was made from (informational only: the clone shares chunks through reference
// counts, so the snapshot may be deleted while the clone lives).
//
// Record layout (160 bytes, little-endian), 25 records per volume-table leaf page:
//
// | OFFSET | SIZE | FIELD                                                               |
// |--------|------|---------------------------------------------------------------------|
// | 0      | 8    | id (0 = free slot)                                                  |
// | 8      | 1    | kind: 1 volume, 2 snapshot, 3 staging (a receive in progress)       |
// | 9      | 1    | tree depth (levels of 256-way nodes)                                |
// | 10     | 1    | name length in bytes                                                |
// | 11     | 1    | flags: bit 0 = replica (read-only until `replicate promote`),       |
// |        |      | bit 1 = flatten in progress (resumed when the pool opens),          |
// |        |      | bit 2 = hidden snapshot (a mirror's split point, Pool+Hidden.swift) |
// | 12     | 4    | base image id in the pool's base table (`bases.json`); 0 = none     |
// | 16     | 8    | parent: a snapshot's volume id; a clone's origin snapshot id; or 0  |
// | 24     | 8    | size in bytes                                                       |
// | 32     | 8    | mapping tree root page (0 = nothing mapped)                         |
// | 40     | 8    | shared-before epoch: mappings older than this may be shared         |
// | 48     | 8    | creation time (nanoseconds since 1970)                              |
// | 56     | 16   | GUID (random; survives send and receive)                            |
// | 72     | 64   | name (UTF-8, `[A-Za-z0-9._-]`)                                      |
// | 136    | 8    | staging only: bytes of the volume received so far (resume point)   |
// | 144    | 16   | staging only: GUID of the base snapshot (0 for a full stream)       |
//
// A staging record is a hidden volume that a receive writes into (`Pool+Receive.swift`). Its name
// is the target volume's; it is indexed apart from volumes, so listings and exports never show it.
// A reader without kind 3 refuses the pool rather than mistaking it for a second volume.

/// What a volume-table record describes.
public enum RecordKind: UInt8, Sendable {
    case volume = 1
    case snapshot = 2
    /// A receive in progress: hidden, writable only by the receive, never exported.
    case staging = 3
}

struct VolumeRecord: PagedElement, Equatable {
    static var width: Int { 160 }
    static var zero: VolumeRecord {
        VolumeRecord(
            id: 0, kind: .volume, depth: 0, parent: 0, size: 0, root: .none, sharedBefore: 0, createdAtNanos: 0,
            guid: (0, 0), name: "")
    }

    /// Bit 0: a replication target, read-only until promoted. Bit 1: a flatten of the volume's
    /// base is in progress (resumed when the pool opens). Other bits are zero.
    var flags: UInt8 = 0
    static let flagReplica: UInt8 = 1
    static let flagFlattening: UInt8 = 2
    /// Bit 2: a hidden snapshot (a mirror's split point): never listed, exported or usable by a
    /// user operation; `Pool+Hidden.swift`.
    static let flagHidden: UInt8 = 4
    static let flagsKnown: UInt8 = Self.flagReplica | Self.flagFlattening | Self.flagHidden
    var isHidden: Bool { self.flags & Self.flagHidden != 0 }
    var isReplica: Bool { self.flags & Self.flagReplica != 0 }
    var isFlattening: Bool { self.flags & Self.flagFlattening != 0 }
    /// The base image this record's holes read from (an id in the pool's `BaseTable`); 0 = none,
    /// holes read as zeros. Snapshots and clones inherit it.
    var baseID: UInt32 = 0

    /// Staging records: how many bytes of the volume (from offset 0) the receive has applied.
    var receivedBytes: UInt64 = 0
    /// Staging records: the GUID of the snapshot the stream is based on; (0, 0) for a full stream.
    var baseGUID: (UInt64, UInt64) = (0, 0)

    var id: UInt64
    var kind: RecordKind
    var depth: UInt8
    var parent: UInt64
    var size: UInt64
    var root: PageNumber
    var sharedBefore: UInt64
    var createdAtNanos: Int64
    var guid: (UInt64, UInt64)
    var name: String
    /// Set by decoding when a field is out of its domain; `check` reports it.
    var decodeProblem: String? = nil

    var isZero: Bool { self.id == 0 }

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.id == rhs.id && lhs.kind == rhs.kind && lhs.depth == rhs.depth && lhs.parent == rhs.parent
            && lhs.size == rhs.size && lhs.root == rhs.root && lhs.sharedBefore == rhs.sharedBefore
            && lhs.createdAtNanos == rhs.createdAtNanos && lhs.guid == rhs.guid && lhs.name == rhs.name
            && lhs.flags == rhs.flags && lhs.receivedBytes == rhs.receivedBytes && lhs.baseGUID == rhs.baseGUID
            && lhs.baseID == rhs.baseID
    }

    init(
        id: UInt64, kind: RecordKind, depth: UInt8, parent: UInt64, size: UInt64, root: PageNumber,
        sharedBefore: UInt64, createdAtNanos: Int64, guid: (UInt64, UInt64), name: String
    ) {
        self.id = id
        self.kind = kind
        self.depth = depth
        self.parent = parent
        self.size = size
        self.root = root
        self.sharedBefore = sharedBefore
        self.createdAtNanos = createdAtNanos
        self.guid = guid
        self.name = name
    }

    init(decoding page: [UInt8], at offset: Int) {
        self.id = page.loadLE(at: offset)
        let kind = RecordKind(rawValue: page[offset + 8])
        self.kind = kind ?? .volume
        self.depth = page[offset + 9]
        let nameLength = Int(page[offset + 10])
        self.parent = page.loadLE(at: offset + 16)
        self.size = page.loadLE(at: offset + 24)
        self.root = PageNumber(page.loadLE(at: offset + 32))
        self.sharedBefore = page.loadLE(at: offset + 40)
        self.createdAtNanos = page.loadLE(at: offset + 48)
        self.guid = (page.loadLE(at: offset + 56), page.loadLE(at: offset + 64))
        let nameBytes = Array(page[(offset + 72)..<(offset + 72 + min(nameLength, Limits.nameBytesMax))])
        self.name = String(decoding: nameBytes, as: UTF8.self)
        self.flags = page[offset + 11]
        self.baseID = page.loadLE(at: offset + 12)
        self.receivedBytes = page.loadLE(at: offset + 136)
        self.baseGUID = (page.loadLE(at: offset + 144), page.loadLE(at: offset + 152))
        if self.id != 0 {
            if kind == nil { self.decodeProblem = "record \(self.id): unknown kind \(page[offset + 8])" }
            if nameLength == 0 || nameLength > Limits.nameBytesMax || !Names.isValid(self.name) {
                self.decodeProblem = "record \(self.id): invalid name"
            }
            if self.flags & ~Self.flagsKnown != 0 {
                self.decodeProblem = "record \(self.id): unknown flags \(self.flags)"
            }
            if self.depth == 0 || Int(self.depth) > Limits.treeDepthMax {
                self.decodeProblem = "record \(self.id): invalid tree depth \(self.depth)"
            }
        }
    }

    func encode(into page: inout [UInt8], at offset: Int) {
        let nameBytes = Array(self.name.utf8)
        precondition(nameBytes.count <= Limits.nameBytesMax, "record \(self.id): name too long")
        // Paired with `init(decoding:)`'s checks (STYLE §5): a live record must decode cleanly.
        if self.id != 0 {
            precondition(Names.isValid(self.name), "record \(self.id): invalid name")
            precondition(self.depth >= 1 && Int(self.depth) <= Limits.treeDepthMax, "record \(self.id): depth \(self.depth)")
            precondition(self.flags & ~Self.flagsKnown == 0, "record \(self.id): unknown flags \(self.flags)")
            precondition(self.kind == .staging || self.receivedBytes == 0, "record \(self.id): progress on a non-staging record")
        }
        page.storeLE(self.id, at: offset)
        page[offset + 8] = self.kind.rawValue
        page[offset + 9] = self.depth
        page[offset + 10] = UInt8(nameBytes.count)
        page.storeLE(self.parent, at: offset + 16)
        page.storeLE(self.size, at: offset + 24)
        page.storeLE(self.root.rawValue, at: offset + 32)
        page.storeLE(self.sharedBefore, at: offset + 40)
        page.storeLE(self.createdAtNanos, at: offset + 48)
        page.storeLE(self.guid.0, at: offset + 56)
        page.storeLE(self.guid.1, at: offset + 64)
        for (position, byte) in nameBytes.enumerated() { page[offset + 72 + position] = byte }
        page[offset + 11] = self.flags
        page.storeLE(self.baseID, at: offset + 12)
        page.storeLE(self.receivedBytes, at: offset + 136)
        page.storeLE(self.baseGUID.0, at: offset + 144)
        page.storeLE(self.baseGUID.1, at: offset + 152)
    }
}

/// Validation of the names users give volumes and snapshots.
public enum Names {
    /// True when `name` matches `[A-Za-z0-9._-]{1,64}` and is not "." or "..".
    public static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= Limits.nameBytesMax, name != ".", name != ".." else { return false }
        return bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
    }

    /// Throws a clear error unless `name` is a valid volume or snapshot name.
    public static func validate(_ name: String, kind: String, operation: String) throws(StrataError) {
        guard Self.isValid(name) else {
            throw StrataError(
                .invalidArgument,
                "\(operation) \(kind) '\(name)': invalid name; use 1 to 64 characters from A-Z a-z 0-9 . _ -")
        }
    }

    /// Splits `VOLUME@SNAPSHOT`; the snapshot part is nil for a plain volume name.
    public static func split(_ target: String) -> (volume: String, snapshot: String?) {
        guard let at = target.firstIndex(of: "@") else { return (target, nil) }
        return (String(target[..<at]), String(target[target.index(after: at)...]))
    }
}

/// Parses sizes given as bytes or with a K, M, G, T (powers of 1024) suffix.
public enum SizeParser {
    /// Parses "4096", "64K", "1G", "1.5G", "2TiB"; nil when malformed.
    public static func parse(_ text: String) -> UInt64? {
        var body = text.trimmingCharacters(in: .whitespaces).uppercased()
        if body.hasSuffix("IB") { body.removeLast(2) } else if body.hasSuffix("B") { body.removeLast() }
        guard let last = body.last else { return nil }
        let shifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40, "P": 50]
        var shift: UInt64 = 0
        if let found = shifts[last] {
            shift = found
            body.removeLast()
        }
        guard !body.isEmpty, body.allSatisfy({ $0.isNumber || $0 == "." }) else { return nil }
        if body.contains(".") {
            guard let value = Double(body), value >= 0 else { return nil }
            let bytes = value * Double(UInt64(1) << shift)
            guard bytes < 9.2e18 else { return nil }
            return UInt64(bytes)
        }
        guard let value = UInt64(body) else { return nil }
        let (result, overflow) = value.multipliedReportingOverflow(by: UInt64(1) << shift)
        return overflow ? nil : result
    }

    /// Formats a byte count for people: "64 KiB", "1.5 GiB".
    public static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded)) \(units[unit])" : "\(rounded) \(units[unit])"
    }
}
