// The base-source seam: what a never-written chunk of a based volume reads from. A volume
// created with `--base FILE` keeps its own chunks in the pool like any other; where its tree
// has a hole, a read falls through to the base image instead of returning zeros. The engine
// knows only this protocol; StrataImage decodes the formats (raw, qcow2 with backing chains)
// behind it, and later an object-store snapshot can stand behind it too.
//
// Invariants: a base image is read-only and immutable while open (the layer that opens it
// checks the file has not changed, and fails every read when it has); `read` and `allocation`
// are safe to call from many threads at once.

#if canImport(Glibc)
import Glibc
#endif

/// One file of a base image's stack, for `strata volume layers`.
public struct BaseLayer: Codable, Sendable, Equatable {
    /// The file's path as resolved (absolute).
    public var path: String
    /// "raw" or "qcow2".
    public var format: String
    /// The size the file presents as a disk, in bytes.
    public var virtualSize: UInt64

    public init(path: String, format: String, virtualSize: UInt64) {
        self.path = path
        self.format = format
        self.virtualSize = virtualSize
    }
}

/// A read-only external image that a based volume's holes read from.
public protocol BaseImage: AnyObject, Sendable {
    /// The size of the disk the image presents, in bytes. Reads past it return zeros.
    var virtualSize: UInt64 { get }

    /// The files of the image from the top down: the image itself, then its backing files.
    var layers: [BaseLayer] { get }

    /// Reads `buffer.count` bytes at `offset`; bytes at or past `virtualSize` read as zeros.
    /// - Throws: `.io` or `.corrupt` naming the file and the problem.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError)

    /// Reads as `read` does if that needs no wait (every byte it needs is in memory); returns
    /// false otherwise, `buffer` then holding nothing useful. An event loop calls it.
    func readIfCached(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool

    /// The extents of [offset, offset + length) in order, merged, covering the whole range:
    /// `mapped` where the image holds data, unmapped where it reads as zeros because nothing
    /// was ever written there (a hole, an unallocated or zero cluster, or past the end).
    /// - Throws: `.io` or `.corrupt` naming the file and the problem.
    func allocation(at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent]

    /// Nil for an image that is cheap to read again (a file). Set for one whose reads are costly
    /// (a remote snapshot): then after a read of a writable volume goes through to the base,
    /// the engine stores the whole aligned unit of this many bytes around it into the volume's
    /// chunks that are still holes, so the base is read there only once. A power of two and a
    /// multiple of every chunk size.
    var fillUnitBytes: UInt64? { get }

    /// Where the `length` bytes at `offset` lie unchanged in a file the image keeps open (a raw
    /// image's own bytes): its descriptor, valid while the image is open, and the offset in it,
    /// so a front end can send them from the file (sendfile) instead of copying them; nil when
    /// they are not stored so (qcow2 clusters, bytes past the end, a remote snapshot).
    func fileRange(at offset: UInt64, length: UInt64) -> (descriptor: Int32, offset: UInt64)?

    /// Calls `body` with the `length` bytes at `offset` as `read` gives them. An image that
    /// already holds them in memory (a remote snapshot's fetched object) lends its own bytes;
    /// any other reads them into `scratch` (grown as needed) and lends that.
    /// - Throws: `read`'s errors, and `body`'s.
    func withBytes<T>(
        at offset: UInt64, length: Int, scratch: inout [UInt8],
        _ body: (UnsafeRawBufferPointer) throws(StrataError) -> T
    ) throws(StrataError) -> T
}

extension BaseImage {
    public var fillUnitBytes: UInt64? { nil }

    public func fileRange(at offset: UInt64, length: UInt64) -> (descriptor: Int32, offset: UInt64)? { nil }

    /// An image that cannot tell what is cached never reads without waiting.
    public func readIfCached(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool { false }

    public func withBytes<T>(
        at offset: UInt64, length: Int, scratch: inout [UInt8],
        _ body: (UnsafeRawBufferPointer) throws(StrataError) -> T
    ) throws(StrataError) -> T {
        try self.readCopy(at: offset, length: length, scratch: &scratch, body)
    }

    /// `withBytes` by a copy into `scratch`: what an image without bytes of its own to lend does.
    public func readCopy<T>(
        at offset: UInt64, length: Int, scratch: inout [UInt8],
        _ body: (UnsafeRawBufferPointer) throws(StrataError) -> T
    ) throws(StrataError) -> T {
        if scratch.count < length { scratch = [UInt8](repeating: 0, count: length) }
        return try scratch.withUnsafeMutableBufferPointer { typed throws(StrataError) -> T in
            let target = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(typed)[0..<length])
            try self.read(at: offset, into: target)
            return try body(UnsafeRawBufferPointer(target))
        }
    }
}

/// Bytes of a read left in a base image's file (`Pool.readLeavingHolesAndBaseFiles`): the range
/// of the read's buffer they stand for, and where they are in the file. `descriptor` is the
/// holder's own: it closes it (`close`) once the bytes are sent.
public struct BaseFileRange: Sendable {
    public let range: Range<Int>
    public let descriptor: Int32
    public let fileOffset: UInt64

    public init(range: Range<Int>, descriptor: Int32, fileOffset: UInt64) {
        self.range = range
        self.descriptor = descriptor
        self.fileOffset = fileOffset
    }

    public func close() {
        _ = Glibc.close(self.descriptor)
    }

    /// Reads the bytes into `buffer` (as long as `range`) and closes the descriptor.
    /// - Throws: `.io` naming `what` when the file cannot be read.
    public func readAndClose(into buffer: UnsafeMutableRawBufferPointer, what: String) throws(StrataError) {
        defer { self.close() }
        var done = 0
        while done < buffer.count {
            let got = pread(self.descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(self.fileOffset) + off_t(done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                throw StrataError(.io, "\(what): cannot read its base file at \(self.fileOffset + UInt64(done)) (\(got < 0 ? "errno \(errno)" : "end of file"))")
            }
            done += got
        }
    }
}
