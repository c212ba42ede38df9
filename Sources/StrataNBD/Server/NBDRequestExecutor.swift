// Runs one transmission-phase request against the engine and encodes its whole reply. Called
// on a thread-pool thread (the engine blocks); the result goes back to the event loop.
//
// READ with structured replies sends OFFSET_DATA for mapped ranges and OFFSET_HOLE for holes
// (one OFFSET_DATA when DF is set); BLOCK_STATUS answers `base:allocation` from the mapping
// tree. Engine errors map to NBD errors in one place, `nbdErrno`.

import Logging
import NIOCore
import StrataCore

struct NBDRequestExecutor {
    let pool: Pool
    let export: NBDExport
    let structured: Bool
    let allocationContext: Bool
    /// Failures the client sees only as an errno (EIO) are logged with their message, which
    /// names the damaged page or the unavailable base image and the fix.
    let logger: Logger

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

    func execute(_ request: NBDRequest, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: 32)
        do throws(StrataError) {
            try self.perform(request, into: &out, allocator: allocator)
        } catch {
            if error.code == .io || error.code == .corrupt || error.code == .failed {
                self.logger.warning("\(error.message)")
            }
            out.clear()
            self.writeError(into: &out, cookie: request.cookie, errno: Self.nbdErrno(error), message: error.message)
        }
        return out
    }

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

    private func perform(_ request: NBDRequest, into out: inout ByteBuffer, allocator: ByteBufferAllocator)
        throws(StrataError)
    {
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
            try self.read(request, into: &out, allocator: allocator)
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

    /// One READ, counted once for /metrics however many extents its reply has.
    private func read(_ request: NBDRequest, into out: inout ByteBuffer, allocator: ByteBufferAllocator)
        throws(StrataError)
    {
        try self.pool.counted(self.export.handle, .read, bytes: UInt64(request.length)) { () throws(StrataError) in
            try self.readUncounted(request, into: &out, allocator: allocator)
        }
    }

    private func readUncounted(_ request: NBDRequest, into out: inout ByteBuffer, allocator: ByteBufferAllocator)
        throws(StrataError)
    {
        let handle = self.export.handle.uncounted
        let length = Int(request.length)
        func readData(_ offset: UInt64, _ count: Int, into out: inout ByteBuffer) throws(StrataError) {
            var failure: StrataError?
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { buffer in
                do throws(StrataError) {
                    try self.pool.read(handle, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
                } catch {
                    failure = error
                }
                return count
            }
            if let failure { throw failure }
        }
        if !self.structured {
            out.reserveCapacity(16 + length)
            // Validate before writing the header so an error gets a clean reply.
            try self.checkRange(request, operation: "read")
            NBDWire.writeSimpleReply(into: &out, error: .ok, cookie: request.cookie)
            try readData(request.offset, length, into: &out)
            return
        }
        if length == 0 {
            // Nothing to describe: a content chunk must cover at least one byte.
            try self.checkRange(request, operation: "read")
            self.success(into: &out, cookie: request.cookie)
            return
        }
        if request.flags.contains(.dontFragment) {
            try self.checkRange(request, operation: "read")
            out.reserveCapacity(28 + length)
            NBDWire.writeChunkHeader(into: &out, done: true, type: .offsetData, cookie: request.cookie, length: 8 + length)
            out.writeInteger(request.offset)
            try readData(request.offset, length, into: &out)
            return
        }
        let extents = try self.pool.readExtents(handle, at: request.offset, length: UInt64(length))
        out.reserveCapacity(length + 32 * extents.count)
        for (index, extent) in extents.enumerated() {
            let last = index == extents.count - 1
            if extent.mapped {
                NBDWire.writeChunkHeader(
                    into: &out, done: last, type: .offsetData, cookie: request.cookie, length: 8 + Int(extent.length))
                out.writeInteger(extent.offset)
                try readData(extent.offset, Int(extent.length), into: &out)
            } else {
                NBDWire.writeChunkHeader(into: &out, done: last, type: .offsetHole, cookie: request.cookie, length: 12)
                out.writeInteger(extent.offset)
                out.writeInteger(UInt32(extent.length))
            }
        }
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
