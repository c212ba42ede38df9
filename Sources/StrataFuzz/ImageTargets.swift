// qcow2 base images (Sources/StrataImage): the header and its extensions, the L1 table, L2
// tables and compressed clusters, opened through `BaseImages.open` as `strata volume create
// --base` opens them, then read. The input is the image file (scripts/fuzz-corpus.sh makes them
// with qemu-img). qcow2 carries no checksums. A backing file name, which could name any file on
// the machine (a FIFO would hang the run), is rewritten to `backing.raw`, a small raw image
// beside it, so backing chains are still followed; where the name does not fit, the backing
// fields are cleared.

import Foundation
import StrataCore
import StrataImage

enum ImageTargets {
    /// A private directory holding `image` (each input in turn) and `backing.raw`.
    static let directory: String = {
        let path = NSTemporaryDirectory() + "strata-fuzz-qcow2-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let backing = [UInt8](repeating: 0x5a, count: 64 << 10)
        precondition(
            FileManager.default.createFile(atPath: path + "/backing.raw", contents: Data(backing)),
            "qcow2 target: cannot create \(path)/backing.raw")
        return path
    }()

    static let qcow2 = FuzzTarget(
        name: "qcow2",
        summary: "qcow2 images: header, extensions, L1/L2 tables, compressed clusters (BaseImages.open, read)"
    ) { input in
        var bytes = input
        Self.fixBackingName(&bytes)
        let path = Self.directory + "/image"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            preconditionFailure("fuzz: cannot write \(path)")
        }
        do throws(StrataError) {
            let image = try BaseImages.open(path: path)
            let size = image.virtualSize
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
            defer { buffer.deallocate() }
            // The first and last 64 KiB, and the middle: each touches a different L1 entry.
            for offset in [0, size / 2, size > 65536 ? size - 65536 : 0] where offset < size {
                let count = Int(min(UInt64(buffer.count), size - offset))
                try image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
            }
            let extents = try image.allocation(at: 0, length: min(size, 1 << 30))
            for extent in extents { FuzzCheck.require(extent.length > 0, "empty allocation extent") }
        } catch {
            return
        }
    }

    /// Points a backing file name at `backing.raw` when the name lies inside the input.
    static func fixBackingName(_ bytes: inout [UInt8]) {
        guard bytes.count >= 20 else { return }
        let offset = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let length = bytes[16..<20].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard offset > 0 || length > 0 else { return }
        let name = Array("backing.raw".utf8)
        guard offset >= 20, offset <= UInt64(bytes.count - name.count) else {
            // No room for the new name: no backing file at all, rather than whatever the bytes name.
            for index in 8..<20 { bytes[index] = 0 }
            return
        }
        let start = Int(offset)
        bytes.replaceSubrange(start..<(start + name.count), with: name)
        bytes[16] = 0
        bytes[17] = 0
        bytes[18] = 0
        bytes[19] = UInt8(name.count)
    }
}
