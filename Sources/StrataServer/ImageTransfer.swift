// Raw images in and out of volumes, shared by the CLI's local mode and the daemon. Import skips
// all-zero chunks (trimming them in an existing volume) so volumes stay thin; export writes
// only non-zero data into a sparse file, beside the target, renamed into place on success, so
// a failed export never leaves a plausible image behind nor destroys a file that was there.

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

enum ImageTransfer {
    static func importImage(
        pool: Pool, file: String, volume: String, create: Bool, progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) -> TransferSummary {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw StrataError(.notFound, "import \(file): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        let fileSize = UInt64(info.st_size)
        if create { try pool.createVolume(volume, size: max((fileSize + 511) / 512 * 512, 512)) }
        let handle = try pool.handle(volume)
        let size = try pool.size(of: handle)
        guard fileSize <= size else {
            throw StrataError(
                .invalidArgument,
                "import \(volume): image is \(fileSize) bytes but the volume is \(size); grow it with `strata volume resize \(volume) --size \(fileSize)`"
            )
        }
        let chunk = Int(pool.chunkSize)
        let batch = max(chunk, 4 << 20)
        var buffer = [UInt8](repeating: 0, count: batch)
        var offset: UInt64 = 0
        var written: UInt64 = 0
        var read: UInt64 = 0
        while offset < fileSize {
            // The file's holes (SEEK_DATA) read as zeros without a read: a sparse image imports
            // in the time of its data.
            let data = Self.nextData(fd, from: offset, size: fileSize)
            if data > offset {
                if !create { try pool.trim(handle, at: offset, length: min(data, size) - offset) }
                offset = data
                progress(offset, fileSize)
                continue
            }
            let want = Int(min(UInt64(batch), fileSize - offset))
            var got = 0
            while got < want {
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, want - got, off_t(offset) + off_t(got)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw StrataError(.io, "import \(file): read failed at offset \(offset + UInt64(got))")
                }
                got += n
            }
            read += UInt64(want)
            // A short tail is padded with zeros to a whole sector (volumes are sector-sized).
            let padded = min((want + 511) / 512 * 512, batch)
            for index in want..<padded { buffer[index] = 0 }
            var piece = 0
            while piece < padded {
                let length = min(chunk - Int((offset + UInt64(piece)) % UInt64(chunk)), padded - piece)
                let at = offset + UInt64(piece)
                try buffer.withUnsafeBufferPointer { elements throws(StrataError) in
                    let bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(elements)[piece..<(piece + length)])
                    if Zeros.all(bytes) {
                        if !create { try pool.trim(handle, at: at, length: UInt64(length)) }
                    } else {
                        try pool.write(handle, at: at, bytes)
                        written += UInt64(length)
                    }
                }
                piece += length
            }
            offset += UInt64(want)
            progress(offset, fileSize)
        }
        return TransferSummary(bytesRead: read, bytesWritten: written, sizeBytes: size)
    }

    /// The offset of the first data at or after `offset` (`size` when only a hole follows);
    /// `offset` itself when the file system cannot tell (then everything counts as data).
    static func nextData(_ fd: Int32, from offset: UInt64, size: UInt64) -> UInt64 {
        let data = lseek(fd, off_t(offset), FileSeek.data)
        if data >= 0 { return min(UInt64(data), size) }
        return errno == ENXIO ? size : offset
    }

    static func exportImage(
        pool: Pool, source: String, file: String, progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) -> TransferSummary {
        let handle = try pool.handle(source)
        let size = try pool.size(of: handle)
        let partial = file + ".strata-partial-\(getpid())"
        let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StrataError(.io, "export \(source): cannot create \(file) (\(String(cString: strerror(errno))))")
        }
        var closed = false
        defer {
            if !closed {
                close(fd)
                unlink(partial)
            }
        }
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw StrataError(.io, "export \(source): cannot size \(file) (\(String(cString: strerror(errno))))")
        }
        let step = max(pool.chunkSize, 4 << 20)
        let chunk = Int(pool.chunkSize)
        var written: UInt64 = 0
        let extents = try pool.withContext("export", source) { () throws(StrataError) in
            try pool.mapping(handle, at: 0, length: size)
        }
        for extent in extents where extent.mapped {
            var offset = extent.offset
            while offset < extent.offset + extent.length {
                let count = Int(min(step, extent.offset + extent.length - offset))
                let bytes = try pool.withContext("export", source) { () throws(StrataError) in
                    try pool.read(handle, at: offset, count: count)
                }
                var piece = 0
                while piece < count {
                    let length = min(chunk, count - piece)
                    if !bytes[piece..<(piece + length)].allSatisfy({ $0 == 0 }) {
                        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + piece, length, off_t(offset) + off_t(piece)) }
                        guard n == length else {
                            throw StrataError(.io, "export \(source): write to \(file) failed at offset \(offset + UInt64(piece))")
                        }
                        written += UInt64(length)
                    }
                    piece += length
                }
                offset += UInt64(count)
                progress(offset, size)
            }
        }
        guard fsync(fd) == 0 else { throw StrataError(.io, "export \(source): sync of \(file) failed") }
        close(fd)
        closed = true
        guard rename(partial, file) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(partial)
            throw StrataError(.io, "export \(source): cannot move the image into place at \(file) (\(reason))")
        }
        progress(size, size)
        return TransferSummary(bytesRead: size, bytesWritten: written, sizeBytes: size)
    }
}
