// Inflating qcow2's compressed clusters: raw deflate (no zlib header or checksum) with a
// 4 KiB window (windowBits -12), as QEMU writes them. The stored bytes may run past the end
// of the stream into the next cluster's data (sectors are shared), so inflation stops once a
// whole cluster is produced; producing less is the caller's `.corrupt` error.

import CZlib

/// Raw deflate decoding through zlib.
enum RawDeflate {
    /// QEMU's window for qcow2 compressed clusters; negative means raw deflate.
    static let windowBits: Int32 = -12

    /// Inflates `input` into exactly `count` bytes; nil when it does not produce that many.
    /// - Precondition: `count` is a cluster size, bounded by `Limits.qcow2ClusterBitsMax`.
    static func inflate(_ input: [UInt8], count: Int) -> [UInt8]? {
        precondition(count > 0 && count <= 1 << 21, "inflate: cluster size out of range")
        var stream = z_stream()
        guard inflateInit2_(&stream, Self.windowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            return nil
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: count)
        let complete = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
                stream.avail_in = uInt(source.count)
                stream.next_out = target.baseAddress
                stream.avail_out = uInt(target.count)
                let status = CZlib.inflate(&stream, Z_FINISH)
                let finished = status == Z_STREAM_END || status == Z_OK || status == Z_BUF_ERROR
                return finished && stream.avail_out == 0
            }
        }
        return complete ? output : nil
    }
}
