// The qcow2 header and its extensions, decoded and validated (QEMU docs/interop/qcow2.txt,
// "Header" and "Header extensions"). All integers are big-endian; `version` at byte 4 is 2 or 3.
//
// | OFFSET | SIZE | FIELD                                                           |
// |--------|------|-----------------------------------------------------------------|
// | 0      | 4    | magic "QFI\xfb"                                                 |
// | 4      | 4    | version: 2 or 3                                                 |
// | 8      | 8    | backing_file_offset (0: no backing file)                       |
// | 16     | 4    | backing_file_size (at most 1023)                                |
// | 20     | 4    | cluster_bits (9…21 here)                                        |
// | 24     | 8    | size: virtual disk bytes                                        |
// | 32     | 4    | crypt_method (0 none, 1 AES, 2 LUKS; only 0 is read)            |
// | 36     | 4    | l1_size: entries in the active L1 table                         |
// | 40     | 8    | l1_table_offset (cluster aligned)                               |
// | 48     | 8    | refcount_table_offset (not read: refcounts matter to writers)   |
// | 56     | 4    | refcount_table_clusters                                         |
// | 60     | 4    | nb_snapshots (internal snapshots are not read)                  |
// | 64     | 8    | snapshots_offset                                                |
// | 72     | 8    | v3: incompatible_features (bit 0 dirty, 1 corrupt, 2 external   |
// |        |      | data file, 3 compression type, 4 extended L2; others unknown)   |
// | 80     | 8    | v3: compatible_features (ignored, as the spec allows)           |
// | 88     | 8    | v3: autoclear_features (ignored: they matter to writers)        |
// | 96     | 4    | v3: refcount_order                                              |
// | 100    | 4    | v3: header_length (≥ 104, multiple of 8; v2: 72)                |
// | 104    | 1    | v3, when header_length > 104: compression_type (0 zlib, 1 zstd) |
//
// Header extensions follow at header_length, each `type u32, length u32, data, padding to 8`,
// until type 0 or the end of the first cluster. Only the backing file format (0xE2792ACA) is
// used; others are skipped after their bounds are checked.
//
// What is refused, and why: encryption (no keys here, and the data would be ciphertext), the
// corrupt bit (QEMU itself refuses to trust such an image), external data files (the guest
// data lives in a second file the image names, outside what the user handed us), extended L2
// entries (subcluster bitmaps: a different L2 layout), zstd compression, and any unknown
// incompatible bit (the spec requires it). The dirty bit only means the refcounts may be
// stale; a reader never uses them, so a dirty image is read as it is.

import StrataCore

/// A validated qcow2 header.
struct Qcow2Header: Sendable {
    static let magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]  // "QFI\xfb"
    static let backingFormatExtension: UInt32 = 0xE279_2ACA
    static let version2Length: UInt64 = 72
    static let version3LengthMin: UInt64 = 104

    /// Incompatible feature bits (v3, byte 72).
    enum Incompatible {
        static let dirty: UInt64 = 1 << 0
        static let corrupt: UInt64 = 1 << 1
        static let externalDataFile: UInt64 = 1 << 2
        static let compressionType: UInt64 = 1 << 3
        static let extendedL2: UInt64 = 1 << 4
        static let known: UInt64 = 0x1F
        /// Features a reader cannot honour, with the message and the fix for each.
        static let refused: [(bit: UInt64, what: String, fix: String)] = [
            (
                Self.externalDataFile, "qcow2 external data file is not supported",
                "convert it to a self-contained image with `qemu-img convert -O qcow2`"
            ),
            (
                Self.extendedL2, "qcow2 extended L2 entries are not supported",
                "convert it with `qemu-img convert -O qcow2 -o extended_l2=off`"
            ),
        ]
    }

    let version: UInt32
    let clusterBits: UInt32
    let virtualSize: UInt64
    let l1Entries: UInt64
    let l1Offset: UInt64
    /// The backing file name as stored (relative names are relative to this file's directory).
    let backingName: String?
    /// "raw" or "qcow2" from the backing format extension, nil when absent.
    let backingFormat: String?

    var clusterSize: UInt64 { 1 << UInt64(self.clusterBits) }

    /// Decodes the header from the file's first cluster (or all of it, when shorter).
    /// - Throws: `.corrupt` or `.invalidArgument` naming `file` and the field.
    init(file: ImageFile) throws(StrataError) {
        let path = file.path
        guard file.size >= Self.version2Length else {
            throw ImageErrors.corrupt(path, "truncated qcow2 header", "file_size=\(file.size) header_bytes_min=72")
        }
        let fixed = try file.bytes(at: 0, count: Int(Self.version2Length))
        guard Array(fixed[0..<4]) == Self.magic else {
            throw ImageErrors.corrupt(path, "bad qcow2 magic")
        }
        let version = BigEndian.u32(fixed, 4)
        guard version == 2 || version == 3 else {
            throw ImageErrors.unsupported(
                path, "qcow2 version \(version) is not supported", "version=\(version) supported=2,3",
                fix: "convert it with `qemu-img convert -O qcow2`")
        }
        let clusterBits = BigEndian.u32(fixed, 20)
        guard clusterBits >= Limits.qcow2ClusterBitsMin, clusterBits <= Limits.qcow2ClusterBitsMax else {
            throw ImageErrors.corrupt(path, "cluster_bits out of range", "cluster_bits=\(clusterBits) supported=9…21")
        }
        let cryptMethod = BigEndian.u32(fixed, 32)
        guard cryptMethod == 0 else {
            throw ImageErrors.unsupported(
                path, "encrypted qcow2 images are not supported", "crypt_method=\(cryptMethod)",
                fix: "decrypt it first with `qemu-img convert --object secret,… -O qcow2`")
        }
        let clusterSize = UInt64(1) << UInt64(clusterBits)
        let header = try file.bytes(at: 0, count: Int(min(clusterSize, file.size)))
        let headerLength = try Self.checkFeatures(header, version: version, file: file)
        self.version = version
        self.clusterBits = clusterBits
        self.virtualSize = BigEndian.u64(fixed, 24)
        self.l1Entries = UInt64(BigEndian.u32(fixed, 36))
        self.l1Offset = BigEndian.u64(fixed, 40)
        let backingOffset = BigEndian.u64(fixed, 8)
        let backingLength = UInt64(BigEndian.u32(fixed, 16))
        let extensionsEnd = backingOffset > 0 ? min(backingOffset, UInt64(header.count)) : UInt64(header.count)
        self.backingFormat = try Self.backingFormat(header, from: headerLength, to: extensionsEnd, path: path)
        self.backingName = try Self.backingName(header, offset: backingOffset, length: backingLength, path: path)
        try self.validateGeometry(path: path)
    }

    /// Checks the v3 feature bits and header length; returns the header length (72 for v2).
    private static func checkFeatures(_ header: [UInt8], version: UInt32, file: ImageFile) throws(StrataError)
        -> UInt64
    {
        let path = file.path
        guard version == 3 else { return Self.version2Length }
        guard header.count >= Self.version3LengthMin else {
            throw ImageErrors.corrupt(
                path, "truncated qcow2 header", "file_size=\(file.size) header_bytes_min=\(Self.version3LengthMin)")
        }
        let headerLength = UInt64(BigEndian.u32(header, 100))
        guard headerLength >= Self.version3LengthMin, headerLength % 8 == 0, headerLength <= UInt64(header.count) else {
            throw ImageErrors.corrupt(
                path, "bad qcow2 header_length", "header_length=\(headerLength) cluster_bytes=\(header.count)")
        }
        let incompatible = BigEndian.u64(header, 72)
        let unknown = incompatible & ~Incompatible.known
        guard unknown == 0 else {
            let bits = (0..<64).filter { unknown & (1 << UInt64($0)) != 0 }.map(String.init).joined(separator: ",")
            throw ImageErrors.unsupported(
                path, "unknown qcow2 incompatible feature bits", "bits=\(bits)",
                fix: "this image needs a newer reader; convert it with `qemu-img convert -O qcow2 -o compat=1.1`")
        }
        guard incompatible & Incompatible.corrupt == 0 else {
            throw ImageErrors.corrupt(
                path, "qcow2 image is marked corrupt", "incompatible_features=\(incompatible)",
                fix: "repair it with `qemu-img check -r all`")
        }
        for (bit, what, fix) in Incompatible.refused where incompatible & bit != 0 {
            throw ImageErrors.unsupported(path, what, "incompatible_features=\(incompatible)", fix: fix)
        }
        let compressionType = headerLength > 104 ? header[104] : 0
        guard incompatible & Incompatible.compressionType == 0 else {
            let name = compressionType == 1 ? "zstd" : "type \(compressionType)"
            throw ImageErrors.unsupported(
                path, "qcow2 \(name) compression is not supported (only deflate)",
                "compression_type=\(compressionType)",
                fix: "convert it with `qemu-img convert -O qcow2 -o compression_type=zlib`")
        }
        guard compressionType == 0 else {
            throw ImageErrors.corrupt(
                path, "qcow2 compression_type set without its feature bit", "compression_type=\(compressionType)")
        }
        return headerLength
    }

    /// Walks the header extensions in [start, end) and returns the backing format, if named.
    private static func backingFormat(_ header: [UInt8], from start: UInt64, to end: UInt64, path: String)
        throws(StrataError) -> String?
    {
        var format: String?
        var cursor = start
        while cursor + 8 <= end {
            let type = BigEndian.u32(header, Int(cursor))
            let length = UInt64(BigEndian.u32(header, Int(cursor) + 4))
            if type == 0 { break }
            let dataStart = cursor + 8
            guard length <= end - dataStart else {
                throw ImageErrors.corrupt(
                    path, "qcow2 header extension runs past the header",
                    "extension_offset=\(cursor) type=0x\(String(type, radix: 16)) length=\(length) end=\(end)")
            }
            if type == Self.backingFormatExtension {
                let name = String(decoding: header[Int(dataStart)..<Int(dataStart + length)], as: UTF8.self)
                guard name == "raw" || name == "qcow2" else {
                    throw ImageErrors.unsupported(
                        path, "backing file format \"\(name)\" is not supported (only raw and qcow2)", "",
                        fix: "convert the backing file with `qemu-img convert -O qcow2`")
                }
                format = name
            }
            cursor = dataStart + (length + 7) / 8 * 8
        }
        return format
    }

    /// The backing file name stored at [offset, offset + length) of the first cluster.
    private static func backingName(_ header: [UInt8], offset: UInt64, length: UInt64, path: String)
        throws(StrataError) -> String?
    {
        guard offset > 0 else { return nil }
        guard length > 0, length <= UInt64(Limits.qcow2BackingNameBytesMax),
            offset <= UInt64(header.count), length <= UInt64(header.count) - offset
        else {
            throw ImageErrors.corrupt(
                path, "qcow2 backing file name lies outside the header cluster",
                "backing_file_offset=\(offset) backing_file_size=\(length) header_bytes=\(header.count)")
        }
        let bytes = header[Int(offset)..<Int(offset + length)]
        guard !bytes.contains(0) else {
            throw ImageErrors.corrupt(
                path, "qcow2 backing file name contains a NUL byte", "backing_file_offset=\(offset)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Bounds the virtual size and the L1 table before anything is sized from them.
    private func validateGeometry(path: String) throws(StrataError) {
        guard self.virtualSize <= Limits.qcow2VirtualBytesMax else {
            throw ImageErrors.corrupt(
                path, "qcow2 virtual size too large", "size=\(self.virtualSize) max=\(Limits.qcow2VirtualBytesMax)")
        }
        guard self.l1Entries >= self.l1EntriesNeeded else {
            throw ImageErrors.corrupt(
                path, "qcow2 L1 table too small for the virtual size",
                "l1_size=\(self.l1Entries) needed=\(self.l1EntriesNeeded) size=\(self.virtualSize)")
        }
        guard self.l1EntriesNeeded <= Limits.qcow2L1EntriesMax else {
            throw ImageErrors.corrupt(
                path, "qcow2 L1 table too large", "needed=\(self.l1EntriesNeeded) max=\(Limits.qcow2L1EntriesMax)")
        }
        guard self.l1Offset % self.clusterSize == 0 else {
            throw ImageErrors.corrupt(
                path, "qcow2 L1 table offset not cluster aligned", "l1_table_offset=\(self.l1Offset)")
        }
    }

    /// Entries per L2 table: one cluster of 8-byte entries.
    var l2Entries: UInt64 { self.clusterSize / 8 }

    /// L1 entries the virtual size needs: one per L2 table's worth of clusters.
    var l1EntriesNeeded: UInt64 {
        let clusters = (self.virtualSize + self.clusterSize - 1) >> UInt64(self.clusterBits)
        return (clusters + self.l2Entries - 1) / self.l2Entries
    }
}

/// Big-endian integer access into byte arrays whose bounds the caller has checked.
enum BigEndian {
    static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        bytes[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }
}
