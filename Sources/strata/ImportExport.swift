// `strata import` and `strata export`: raw images in and out without a network. Import skips
// (or, into an existing volume, trims) every all-zero chunk so the volume stays thin; export
// writes only mapped, non-zero data into a sparse file of the volume's size.

import ArgumentParser
import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    let total: UInt64
    let label: String
    let enabled = isatty(2) == 1
    let start = Date()
    var lastDraw = Date.distantPast

    init(total: UInt64, label: String) {
        self.total = total
        self.label = label
    }

    mutating func update(_ done: UInt64, force: Bool = false) {
        guard self.enabled, force || Date().timeIntervalSince(self.lastDraw) > 0.1 else { return }
        self.lastDraw = Date()
        let fraction = self.total == 0 ? 1 : Double(done) / Double(self.total)
        let width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = max(Date().timeIntervalSince(self.start), 0.001)
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Double(self.total - min(done, self.total)) / rate : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(
            format: "\r%@ [%@] %3.0f%% %@ %@/s ETA %.0fs ", self.label, bar, fraction * 100,
            SizeParser.format(done), SizeParser.format(UInt64(rate)), eta)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard self.enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Copy a raw image file into a volume (all-zero chunks stay unallocated).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Raw image file.") var file: String
    @Argument(help: "Volume name.") var volume: String
    @Flag(help: "Create the volume with the image's size (rounded up to 512 bytes).") var create = false

    func run() throws {
        let fd = open(self.file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            printError("import \(self.file): cannot open (\(String(cString: strerror(errno))))")
            throw ExitCode(1)
        }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        let fileSize = UInt64(info.st_size)
        let written = try self.options.withPool { pool throws(StrataError) -> UInt64 in
            if self.create {
                try pool.createVolume(self.volume, size: max(fileSize.alignedUp512, 512))
            }
            let handle = try pool.handle(self.volume)
            let size = try pool.size(of: handle)
            guard fileSize <= size else {
                throw StrataError(
                    .invalidArgument,
                    "import \(self.volume): image is \(fileSize) bytes but the volume is \(size); grow it with `strata volume resize \(self.volume) --size \(fileSize)`"
                )
            }
            return try self.copy(fd: fd, fileSize: fileSize, into: handle, pool: pool, trimZeros: !self.create)
        }
        print("imported \(self.file) into \(self.volume): \(SizeParser.format(fileSize)) read, \(SizeParser.format(written)) allocated")
    }

    private func copy(fd: Int32, fileSize: UInt64, into handle: VolumeHandle, pool: Pool, trimZeros: Bool)
        throws(StrataError) -> UInt64
    {
        let chunk = Int(pool.chunkSize)
        let batch = max(chunk, 4 << 20)
        var buffer = [UInt8](repeating: 0, count: batch)
        var progress = Progress(total: fileSize, label: "import")
        var offset: UInt64 = 0
        var allocated: UInt64 = 0
        while offset < fileSize {
            let want = Int(min(UInt64(batch), fileSize - offset))
            var got = 0
            while got < want {
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, want - got, off_t(offset) + off_t(got)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw StrataError(.io, "import \(self.file): read failed at offset \(offset + UInt64(got))")
                }
                got += n
            }
            // Round a short tail up to a whole sector with zeros (the volume is sector-sized).
            let padded = min((want + 511) / 512 * 512, batch)
            for index in want..<padded { buffer[index] = 0 }
            var piece = 0
            while piece < padded {
                let length = min(chunk - Int((offset + UInt64(piece)) % UInt64(chunk)), padded - piece)
                let isZero = buffer[piece..<(piece + length)].allSatisfy { $0 == 0 }
                let at = offset + UInt64(piece)
                if isZero {
                    if trimZeros { try pool.trim(handle, at: at, length: UInt64(length)) }
                } else {
                    try buffer.withUnsafeBufferPointer { raw throws(StrataError) in
                        try pool.write(handle, at: at, UnsafeRawBufferPointer(start: raw.baseAddress! + piece, count: length))
                    }
                    allocated += UInt64(length)
                }
                piece += length
            }
            offset += UInt64(want)
            progress.update(offset)
        }
        progress.update(fileSize, force: true)
        progress.finish()
        return allocated
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Copy a volume or snapshot into a sparse raw image file.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME or VOLUME@SNAPSHOT") var source: String
    @Argument(help: "Output file (created or replaced).") var file: String

    func run() throws {
        // Write beside the target and rename on success: a failed export never leaves a
        // plausible-looking image behind, nor destroys a file that was there.
        let partial = self.file + ".strata-partial-\(getpid())"
        let size: UInt64
        do {
            size = try self.options.withPool(readOnly: true) { pool throws(StrataError) -> UInt64 in
                try self.export(pool: pool, to: partial)
            }
        } catch {
            unlink(partial)
            throw error
        }
        guard rename(partial, self.file) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(partial)
            printError("export \(self.source): cannot move the image into place at \(self.file) (\(reason))")
            throw ExitCode(1)
        }
        print("exported \(self.source) to \(self.file) (\(SizeParser.format(size)))")
    }

    private func export(pool: Pool, to path: String) throws(StrataError) -> UInt64 {
        let handle = try pool.handle(self.source)
        let size = try pool.size(of: handle)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StrataError(.io, "export \(self.source): cannot create \(self.file) (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw StrataError(.io, "export \(self.source): cannot size \(self.file) (\(String(cString: strerror(errno))))")
        }
        var progress = Progress(total: size, label: "export")
        let step = max(pool.chunkSize, 4 << 20)
        let chunk = Int(pool.chunkSize)
        let extents = try pool.withContext("export", self.source) { () throws(StrataError) in
            try pool.mapping(handle, at: 0, length: size)
        }
        for extent in extents where extent.mapped {
            var offset = extent.offset
            while offset < extent.offset + extent.length {
                let count = Int(min(step, extent.offset + extent.length - offset))
                let bytes = try pool.withContext("export", self.source) { () throws(StrataError) in
                    try pool.read(handle, at: offset, count: count)
                }
                var piece = 0
                while piece < count {
                    let length = min(chunk, count - piece)
                    if !bytes[piece..<(piece + length)].allSatisfy({ $0 == 0 }) {
                        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + piece, length, off_t(offset) + off_t(piece)) }
                        guard n == length else {
                            throw StrataError(
                                .io, "export \(self.source): write to \(self.file) failed at offset \(offset + UInt64(piece))")
                        }
                    }
                    piece += length
                }
                offset += UInt64(count)
                progress.update(offset)
            }
        }
        guard fsync(fd) == 0 else {
            throw StrataError(.io, "export \(self.source): sync of \(self.file) failed")
        }
        progress.update(size, force: true)
        progress.finish()
        return size
    }
}

extension UInt64 {
    var alignedUp512: UInt64 { (self + 511) / 512 * 512 }
}
