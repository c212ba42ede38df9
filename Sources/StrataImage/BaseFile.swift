// What the engine records about a base file at volume creation and checks later, so a file
// changed under a based volume is noticed instead of silently serving different bytes:
// the file's identity (size and modification time, cheap, checked at every open) and a
// content fingerprint (every byte read once, for `strata check` and for creation).
//
// The fingerprint is "crc32c-<8 hex>-<16 hex>": CRC-32C (SSE4.2) over the whole file read in
// `Limits.baseFingerprintPieceBytes` pieces, then the file's size. It detects change, not
// tampering: a CRC is no cryptographic hash.

import StrataCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A base file's size and modification time, compared to notice that it changed.
public struct BaseFileIdentity: Codable, Sendable, Equatable {
    /// Bytes in the file (a block device's size for a device).
    public var size: UInt64
    /// Last modification, nanoseconds since the epoch.
    public var modificationNanos: Int64

    public init(size: UInt64, modificationNanos: Int64) {
        self.size = size
        self.modificationNanos = modificationNanos
    }
}

/// One base file (the top file of an image), for fingerprints and identity checks.
public struct BaseFile: Sendable {
    /// The file's path.
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// A hex digest of every byte of the file: `crc32c-<crc>-<size>`.
    /// - Throws: `.notFound` or `.io` naming the file.
    public func contentFingerprint() throws(StrataError) -> String {
        let file = try ImageFile(path: self.path)
        var crc: UInt32 = 0
        var piece = [UInt8](repeating: 0, count: Limits.baseFingerprintPieceBytes)
        var offset: UInt64 = 0
        while offset < file.size {
            let count = Int(min(UInt64(piece.count), file.size - offset))
            try file.read(at: offset, into: &piece)
            crc = piece.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<count]), seed: crc) }
            offset += UInt64(count)
        }
        return "crc32c-" + Self.hex(UInt64(crc), digits: 8) + "-" + Self.hex(file.size, digits: 16)
    }

    /// The file's size and modification time.
    /// - Throws: `.notFound` or `.io` naming the file.
    public func identity() throws(StrataError) -> BaseFileIdentity {
        let file = try ImageFile(path: self.path)
        var status = stat()
        guard fstat(file.descriptor, &status) == 0 else {
            throw ImageErrors.io("stat base image", self.path, errno: errno)
        }
        let nanos = Int64(status.st_mtim.tv_sec) * 1_000_000_000 + Int64(status.st_mtim.tv_nsec)
        return BaseFileIdentity(size: file.size, modificationNanos: nanos)
    }

    private static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

extension BaseImages {
    /// The content fingerprint of the file at `path` (see `BaseFile.contentFingerprint()`).
    /// - Throws: `.notFound` or `.io` naming the file.
    public static func fingerprint(path: String) throws(StrataError) -> String {
        try BaseFile(path: path).contentFingerprint()
    }

    /// The size and modification time of the file at `path`.
    /// - Throws: `.notFound` or `.io` naming the file.
    public static func fileIdentity(path: String) throws(StrataError) -> BaseFileIdentity {
        try BaseFile(path: path).identity()
    }
}
