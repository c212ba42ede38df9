// The one test for "all zeros" that import, send and push share: a chunk that reads as zeros is
// a hole, never written or sent. memcmp against a zero page, which libc vectorizes; a byte loop
// in Swift is many times slower in a debug build and no faster in a release one.

#if canImport(Glibc)
import Glibc
#endif

public enum Zeros {
    private static let page = [UInt8](repeating: 0, count: 4096)

    /// True when every byte of `bytes` is zero.
    public static func all(_ bytes: UnsafeRawBufferPointer) -> Bool {
        Self.page.withUnsafeBytes { zero in
            var offset = 0
            while offset < bytes.count {
                let count = min(zero.count, bytes.count - offset)
                if memcmp(bytes.baseAddress! + offset, zero.baseAddress!, count) != 0 { return false }
                offset += count
            }
            return true
        }
    }

    /// True when every byte of `bytes` is zero.
    public static func all(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Self.all($0) }
    }
}
