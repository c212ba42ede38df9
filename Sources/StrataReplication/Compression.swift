// Optional compression of data records (`strata send --compress`): zlib's deflate at level 1,
// the fastest, per record. A record is stored compressed only when that makes it smaller, so
// random data costs nothing but the attempt. The payload CRC covers the stored (compressed)
// bytes; the receiver inflates to exactly the record's length or refuses the stream.

import CZlib
import StrataCore

enum RecordCompression {
    static let level: Int32 = 1

    /// The deflated bytes, or nil when they would not be smaller.
    static func compress(_ bytes: [UInt8]) -> [UInt8]? {
        var length = compressBound(uLong(bytes.count))
        var output = [UInt8](repeating: 0, count: Int(length))
        let status = output.withUnsafeMutableBufferPointer { target in
            bytes.withUnsafeBufferPointer { source in
                compress2(target.baseAddress, &length, source.baseAddress, uLong(source.count), Self.level)
            }
        }
        guard status == Z_OK, Int(length) < bytes.count else { return nil }
        return Array(output[0..<Int(length)])
    }

    /// Inflates `bytes` to exactly `length` bytes; nil when they do not inflate to that.
    /// `length` above `Limits.streamRecordBytesMax` is refused before anything is allocated.
    static func decompress(_ bytes: [UInt8], length: Int) -> [UInt8]? {
        guard length >= 0, length <= Limits.streamRecordBytesMax else { return nil }
        var produced = uLong(length)
        var output = [UInt8](repeating: 0, count: length)
        let status = output.withUnsafeMutableBufferPointer { target in
            bytes.withUnsafeBufferPointer { source in
                uncompress(target.baseAddress, &produced, source.baseAddress, uLong(source.count))
            }
        }
        guard status == Z_OK, Int(produced) == length else { return nil }
        return output
    }
}
