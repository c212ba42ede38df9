// Runs one transmission-phase request against the engine and encodes its whole reply. Called
// on a thread-pool thread (the engine blocks), whose result goes back to the event loop; a READ
// the engine can serve without waiting (`executeWithoutWaiting`) is answered on the event loop.
//
// READ with structured replies sends OFFSET_DATA for mapped ranges and OFFSET_HOLE for holes
// (one OFFSET_DATA when DF is set); BLOCK_STATUS answers `base:allocation` from the mapping
// tree. Engine errors map to NBD errors in one place, `nbdErrno`.

import Logging
import NIOCore
import StrataCore

package struct NBDRequestExecutor {
    let pool: Pool
    let export: NBDExport
    let structured: Bool
    let allocationContext: Bool
    /// Failures the client sees only as an errno (EIO) are logged with their message, which
    /// names the damaged page or the unavailable base image and the fix.
    let logger: Logger

    /// `package` so the fuzz target of the request stream (Sources/StrataFuzz) runs requests
    /// through the same code as the connection handler.
    package init(pool: Pool, export: NBDExport, structured: Bool, allocationContext: Bool, logger: Logger) {
        self.pool = pool
        self.export = export
        self.structured = structured
        self.allocationContext = allocationContext
        self.logger = logger
    }

    static func nbdErrno(_ error: StrataError) -> NBD.Errno {
        switch error.code {
        case .invalidArgument: return .invalid
        case .readOnly: return .permission
        case .noSpace: return .noSpace
        case .notFound: return .shutdown
        case .unauthorized: return .permission
        case .alreadyExists, .busy, .io, .corrupt, .failed, .unsupported: return .io
        }
    }

    /// The reply to `request`. With `sendingFiles` (a connection without TLS), the bytes of a
    /// READ that lie unchanged in a raw base image's file stay there: the reply carries them as
    /// file regions, which the event loop sends with sendfile, so they are never copied through
    /// this process (a fresh overlay's sequential reads are mostly such bytes).
    package func execute(_ request: NBDRequest, allocator: ByteBufferAllocator, sendingFiles: Bool = false) -> NBDReply {
        var out = allocator.buffer(capacity: 32)
        var files: [BaseFileRange]? = sendingFiles ? [] : nil
        do throws(StrataError) {
            try self.perform(request, into: &out, allocator: allocator, files: &files)
        } catch {
            for file in files ?? [] { file.close() }
            files = nil
            if error.code == .io || error.code == .corrupt || error.code == .failed {
                self.logger.warning("\(error.message)")
            }
            out.clear()
            self.writeError(into: &out, cookie: request.cookie, errno: Self.nbdErrno(error), message: error.message)
        }
        return NBDReply(out, files: files ?? [])
    }

    /// The reply to `request` if the engine can give it without waiting (a READ of at most
    /// `inlineReadBytesMax` whose mapping is in memory and whose data is in the page cache), so
    /// an event loop can answer it at once; nil for anything else, which goes to the thread pool.
    func executeWithoutWaiting(_ request: NBDRequest, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard request.type == NBD.Command.read.rawValue, request.length <= Self.inlineReadBytesMax,
            NBD.CommandFlags.known.isSuperset(of: request.flags)
        else { return nil }
        var out = allocator.buffer(capacity: 32)
        let start = MonotonicClock.nanos()
        do throws(StrataError) {
            var files: [BaseFileRange]?
            guard try self.read(request, into: &out, allocator: allocator, waiting: .never, files: &files) else { return nil }
            self.pool.countServed(self.export.handle, .read, bytes: UInt64(request.length), since: start)
            return out
        } catch {
            // Errors are answered by the thread pool's run, which logs them the one way.
            return nil
        }
    }

    /// The largest READ an event loop answers itself. Small reads gain most from skipping the
    /// thread hop; large ones are better spread over the pool's threads than copied one after
    /// another on one event loop (at 1 MiB inline, sequential reads fell from 2044 to 1489 MiB/s in
    /// bench/run-layers.sh, while 4 KiB random reads rose from 97869 to 178981 IOPS).
    static let inlineReadBytesMax: UInt32 = 128 << 10

    private func writeError(into out: inout ByteBuffer, cookie: UInt64, errno: NBD.Errno, message: String) {
        if self.structured {
            NBDWire.writeErrorChunk(into: &out, cookie: cookie, error: errno, message: message)
        } else {
            NBDWire.writeSimpleReply(into: &out, error: errno, cookie: cookie)
        }
    }

    private func success(into out: inout ByteBuffer, cookie: UInt64) {
        if self.structured {
            NBDWire.writeChunkHeader(into: &out, done: true, type: .none, cookie: cookie, length: 0)
        } else {
            NBDWire.writeSimpleReply(into: &out, error: .ok, cookie: cookie)
        }
    }

    private func checkRange(_ request: NBDRequest, operation: String) throws(StrataError) {
        let (end, overflow) = request.offset.addingReportingOverflow(UInt64(request.length))
        let size = try self.pool.size(of: self.export.handle)
        guard !overflow, end <= size else {
            throw StrataError(
                .invalidArgument,
                "\(operation) \(self.export.name): range beyond end of volume (offset=\(request.offset) length=\(request.length))")
        }
    }

    private func perform(
        _ request: NBDRequest, into out: inout ByteBuffer, allocator: ByteBufferAllocator, files: inout [BaseFileRange]?
    ) throws(StrataError) {
        let handle = self.export.handle
        let flags = request.flags
        guard let command = NBD.Command(rawValue: request.type) else {
            throw StrataError(.invalidArgument, "request \(request.type) on \(self.export.name): unknown command")
        }
        guard NBD.CommandFlags.known.isSuperset(of: flags) else {
            throw StrataError(
                .invalidArgument,
                "\(command) \(self.export.name): unknown command flags 0x\(String(flags.rawValue, radix: 16))")
        }
        switch command {
        case .read:
            guard Int(request.length) <= NBDWire.requestBytesMax else {
                throw StrataError(.invalidArgument, "read \(self.export.name): \(request.length) bytes over the 32 MiB limit")
            }
            // Counted once for /metrics however many chunks its reply has.
            _ = try self.pool.counted(self.export.handle, .read, bytes: UInt64(request.length)) { () throws(StrataError) in
                try self.read(request, into: &out, allocator: allocator, waiting: .allowed, files: &files)
            }
        case .write:
            if self.export.readOnly { throw self.readOnly("write") }
            var payload = request.payload
            var failure: StrataError?
            payload.withUnsafeReadableBytes { bytes in
                do throws(StrataError) {
                    try self.pool.write(handle, at: request.offset, bytes, fua: flags.contains(.fua))
                } catch {
                    failure = error
                }
            }
            payload.moveReaderIndex(to: payload.writerIndex)
            if let failure { throw failure }
            self.success(into: &out, cookie: request.cookie)
        case .flush:
            try self.pool.flush(handle)
            self.success(into: &out, cookie: request.cookie)
        case .trim:
            if self.export.readOnly { throw self.readOnly("trim") }
            try self.pool.trim(handle, at: request.offset, length: UInt64(request.length))
            if flags.contains(.fua) { try self.pool.flush() }
            self.success(into: &out, cookie: request.cookie)
        case .writeZeroes:
            if self.export.readOnly { throw self.readOnly("write zeroes") }
            let noHole = flags.contains(.noHole)
            if flags.contains(.fastZero) && noHole {
                // Zeros that must stay allocated are written, which is not fast.
                self.writeError(
                    into: &out, cookie: request.cookie, errno: .notSupported,
                    message: "write zeroes \(self.export.name): NO_HOLE zeroing is not fast")
                return
            }
            try self.pool.writeZeroes(
                handle, at: request.offset, length: UInt64(request.length), allowTrim: !noHole, fua: flags.contains(.fua))
            self.success(into: &out, cookie: request.cookie)
        case .cache:
            try self.checkRange(request, operation: "cache")
            self.success(into: &out, cookie: request.cookie)
        case .blockStatus:
            try self.blockStatus(request, into: &out)
        case .disconnect, .resize:
            throw StrataError(.invalidArgument, "request \(command) on \(self.export.name): not supported")
        }
    }

    private func readOnly(_ operation: String) -> StrataError {
        StrataError(.readOnly, "\(operation) \(self.export.name): snapshots are read-only")
    }

    /// Encodes the reply to a READ. Holes the engine reports are zeros in a simple reply or a
    /// DF read, and OFFSET_HOLE chunks otherwise. With `.never`, false when the engine would
    /// wait, `out` then holding nothing useful.
    /// With `files` (not nil), bytes left in a base image's file are appended there, their
    /// ranges as positions in `out`, when the reply carries the data in one piece; else read.
    private func read(
        _ request: NBDRequest, into out: inout ByteBuffer, allocator: ByteBufferAllocator, waiting: Waiting,
        files: inout [BaseFileRange]?
    ) throws(StrataError) -> Bool {
        let length = Int(request.length)
        if self.structured && length == 0 {
            // Nothing to describe: a content chunk must cover at least one byte.
            guard waiting == .allowed else { return false }
            try self.checkRange(request, operation: "read")
            self.success(into: &out, cookie: request.cookie)
            return true
        }
        // The reply is laid out for data without holes, which is the common case: one header,
        // then the bytes read in place.
        if self.structured {
            out.reserveCapacity(28 + length)
            NBDWire.writeChunkHeader(into: &out, done: true, type: .offsetData, cookie: request.cookie, length: 8 + length)
            out.writeInteger(request.offset)
        } else {
            out.reserveCapacity(16 + length)
            NBDWire.writeSimpleReply(into: &out, error: .ok, cookie: request.cookie)
        }
        let whole = !self.structured || request.flags.contains(.dontFragment)
        let dataStart = out.writerIndex
        let start = dataStart - out.readerIndex
        var holes: [Range<Int>]?
        var failure: StrataError?
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { buffer in
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
            do throws(StrataError) {
                if files != nil && waiting == .allowed {
                    let found = try self.pool.readLeavingHolesAndBaseFiles(self.export.handle, at: request.offset, into: target)
                    holes = found.holes
                    if whole || found.holes.isEmpty {
                        files?.append(
                            contentsOf: found.files.map {
                                BaseFileRange(
                                    range: (start + $0.range.lowerBound)..<(start + $0.range.upperBound),
                                    descriptor: $0.descriptor, fileOffset: $0.fileOffset)
                            })
                    } else {
                        // Chunks of data between holes: the file's bytes go in them.
                        for (index, file) in found.files.enumerated() {
                            do throws(StrataError) {
                                try file.readAndClose(
                                    into: UnsafeMutableRawBufferPointer(rebasing: target[file.range]),
                                    what: "read \(self.export.name)")
                            } catch {
                                for rest in found.files[(index + 1)...] { rest.close() }
                                throw error
                            }
                        }
                    }
                } else {
                    holes = try self.pool.readLeavingHoles(self.export.handle, at: request.offset, into: target, waiting: waiting)
                }
                if whole, let holes {
                    for hole in holes {
                        UnsafeMutableRawBufferPointer(rebasing: target[hole]).initializeMemory(as: UInt8.self, repeating: 0)
                    }
                }
            } catch {
                failure = error
            }
            return length
        }
        if let failure { throw failure }
        guard let holes else { return false }
        if whole || holes.isEmpty { return true }
        // Some of it was holes: data chunks for the rest, OFFSET_HOLE chunks for them.
        let data = out.getSlice(at: dataStart, length: length)!
        var reply = allocator.buffer(capacity: length + 32 * (2 * holes.count + 1))
        let pieces = Pool.pieces(of: length, holes: holes)
        for (index, piece) in pieces.enumerated() {
            let done = index == pieces.count - 1
            let offset = request.offset + UInt64(piece.range.lowerBound)
            if piece.hole {
                NBDWire.writeChunkHeader(into: &reply, done: done, type: .offsetHole, cookie: request.cookie, length: 12)
                reply.writeInteger(offset)
                reply.writeInteger(UInt32(piece.range.count))
            } else {
                NBDWire.writeChunkHeader(
                    into: &reply, done: done, type: .offsetData, cookie: request.cookie, length: 8 + piece.range.count)
                reply.writeInteger(offset)
                var bytes = data.getSlice(at: data.readerIndex + piece.range.lowerBound, length: piece.range.count)!
                reply.writeBuffer(&bytes)
            }
        }
        out = reply
        return true
    }

    private func blockStatus(_ request: NBDRequest, into out: inout ByteBuffer) throws(StrataError) {
        guard self.structured, self.allocationContext else {
            throw StrataError(
                .invalidArgument, "block status \(self.export.name): negotiate the base:allocation meta context first")
        }
        guard request.length > 0 else {
            throw StrataError(.invalidArgument, "block status \(self.export.name): zero length")
        }
        let size = try self.pool.size(of: self.export.handle)
        let end = min(request.offset &+ UInt64(request.length), size)
        guard request.offset < size else {
            throw StrataError(
                .invalidArgument,
                "block status \(self.export.name): range beyond end of volume (offset=\(request.offset) size=\(size))")
        }
        var extents = try self.pool.mapping(self.export.handle, at: request.offset, length: end - request.offset)
        if request.flags.contains(.requestOne) { extents = Array(extents.prefix(1)) }
        NBDWire.writeChunkHeader(
            into: &out, done: true, type: .blockStatus, cookie: request.cookie, length: 4 + 8 * extents.count)
        out.writeInteger(NBD.baseAllocationID)
        for extent in extents {
            out.writeInteger(UInt32(extent.length))
            out.writeInteger(extent.mapped ? 0 : NBD.stateHole | NBD.stateZero)
        }
    }
}

/// A reply as it goes on the socket: its bytes, with the byte ranges a READ left in a base
/// image's file (`NBDRequestExecutor.execute`) as file regions between them. The regions'
/// descriptors are the reply's own: close them (`close`) once the reply is written or dropped.
package struct NBDReply: Sendable {
    package private(set) var parts: [IOData]
    private var handles: [NIOFileHandle] = []

    package init(_ bytes: ByteBuffer) {
        self.parts = [.byteBuffer(bytes)]
    }

    /// `bytes` with the ranges of `files` (positions in `bytes`, in order) sent from their files.
    init(_ bytes: ByteBuffer, files: [BaseFileRange]) {
        self.parts = []
        var cursor = bytes.readerIndex
        for file in files {
            let start = bytes.readerIndex + file.range.lowerBound
            if start > cursor { self.parts.append(.byteBuffer(bytes.getSlice(at: cursor, length: start - cursor)!)) }
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: file.descriptor)
            self.handles.append(handle)
            let from = Int(file.fileOffset)
            self.parts.append(.fileRegion(FileRegion(fileHandle: handle, readerIndex: from, endIndex: from + file.range.count)))
            cursor = bytes.readerIndex + file.range.upperBound
        }
        if bytes.writerIndex > cursor {
            self.parts.append(.byteBuffer(bytes.getSlice(at: cursor, length: bytes.writerIndex - cursor)!))
        }
    }

    /// The bytes the reply puts on the socket.
    package var byteCount: Int { self.parts.reduce(0) { $0 + $1.readableBytes } }

    /// Closes the descriptors of the reply's file regions.
    package func close() {
        for handle in self.handles { try? handle.close() }
    }
}
