// The engine reaches the disk only through `PoolDevice` (STYLE §1): the file-backed device in
// production, `SimDevice` (StrataTesting) under simulation, where a crash keeps the synced
// writes plus a random, possibly torn, subset of the rest.
//
// Contract: `write` may be reordered with other writes and lost at a crash until `sync`
// returns; after `sync` returns, every write that completed before it started is durable.
// A failed `sync` is never retried (the kernel may have dropped the dirty pages): the pool
// turns failed instead.

/// Byte-addressed storage under a pool: positioned reads and writes, a durability barrier,
/// and a hint that a range is no longer needed.
public protocol PoolDevice: AnyObject, Sendable {
    /// Size in bytes; fixed once the pool exists.
    var size: UInt64 { get }
    /// Reads exactly `buffer.count` bytes at `offset`; bytes never written read as zero.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(StrataError)
    /// Reads as `read` does if that needs no wait (the bytes are all in memory); returns false
    /// otherwise, `buffer` then holding nothing useful. An event loop calls it.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool
    /// Writes all of `bytes` at `offset`; not durable until `sync` returns.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError)
    /// Writes as `write` does (the same durability: not before `sync`), for bytes unlikely to
    /// be read again soon, such as a chunk stored from a base as it was fetched: the file device
    /// writes them around the page cache, which costs the CPU a fraction of a cached write's copy.
    func writeUncached(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError)
    /// Makes every completed write durable.
    func sync() throws(StrataError)
    /// Tells the device the range's contents are no longer needed (hole punching).
    /// - Returns: true when the range now reads as zeros (like a write of zeros, durable at the
    ///   next `sync`); false when the device kept the old bytes.
    @discardableResult
    func discard(at offset: UInt64, length: UInt64) -> Bool
}

extension PoolDevice {
    /// A device that cannot tell what is cached never reads without waiting.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool { false }

    /// A device with no cache to bypass writes as it always does.
    public func writeUncached(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError) {
        try self.write(bytes, at: offset)
    }

    func read(count: Int, at offset: UInt64) throws(StrataError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: StrataError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(StrataError) { try self.read(into: buffer, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws(StrataError) {
        var failure: StrataError?
        bytes.withUnsafeBytes { buffer in
            do throws(StrataError) { try self.write(buffer, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
