// Writes around the page cache (`PoolDevice.writeUncached`, O_DIRECT on a pool file): whatever
// the alignment of the memory, the offset and the length, the file then reads exactly what was
// written, through the cache too (a range read into the cache before reads the new bytes), and
// the aligned ones really went around the cache.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct UncachedWriteTests {
    @Test func uncachedWritesReadBackWhateverTheirAlignment() throws {
        let path = NSTemporaryDirectory() + "strata-uncached-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).pool"
        defer { unlink(path) }
        let device = try FileDevice.create(path: path, size: 16 << 20)
        var random = SeededRandom(seed: 3)
        var image = [UInt8](repeating: 0, count: 16 << 20)
        // A range first written and read through the cache, so its old bytes are in memory.
        let cached = random.bytes(256 << 10)
        try device.write(cached, at: 1 << 20)
        image.replaceSubrange((1 << 20)..<((1 << 20) + cached.count), with: cached)
        #expect(try device.read(count: cached.count, at: 1 << 20) == cached)
        // (offset, length, memory misalignment): aligned in every way, in unaligned memory,
        // longer than the bounce buffer, over the cached range, and unaligned offset or length.
        let cases: [(UInt64, Int, Int)] = [
            (0, 64 << 10, 0), (64 << 10, 192 << 10, 8), ((1 << 20) + (64 << 10), 128 << 10, 0),
            (4 << 20, (3 << 20) + 4096, 24), (9 << 20, 4096, 512), ((10 << 20) + 512, 8192, 0), (11 << 20, 4000, 0),
        ]
        for (offset, length, misalignment) in cases {
            let bytes = random.bytes(length)
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: length + misalignment, alignment: 4096)
            defer { memory.deallocate() }
            let target = UnsafeMutableRawBufferPointer(rebasing: memory[misalignment...])
            target.copyBytes(from: bytes)
            try device.writeUncached(UnsafeRawBufferPointer(target), at: offset)
            image.replaceSubrange(Int(offset)..<(Int(offset) + length), with: bytes)
        }
        // Every aligned case: all but the last two.
        let aligned = cases.dropLast(2).reduce(0) { $0 + $1.1 }
        #expect(device.bytesWrittenUncached == UInt64(aligned), "the aligned writes went around the cache")
        #expect(try device.read(count: image.count, at: 0) == image)
        try device.sync()
        // A second descriptor, as the next open of the pool sees the file.
        let reopened = try FileDevice(path: path, readOnly: true)
        #expect(try reopened.read(count: image.count, at: 0) == image)
    }
}
