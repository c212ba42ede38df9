// A base image for engine tests: a real file read with pread, with holes wherever a 4 KiB
// block is all zeros (so a test controls allocation by what it writes). StrataImage's decoders
// are tested against qemu-img in their own suite; this double lets the engine's tests run
// without them, on the same `BaseImage` seam.

import Foundation
import StrataCore

/// A raw file as a base image, with zero blocks reported as holes.
public final class TestBaseImage: BaseImage, @unchecked Sendable {
    public let path: String
    public let virtualSize: UInt64
    let fd: Int32
    /// Reads made through this image, for tests that check what was read from the base.
    public let reads = Counter()

    public final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        public var value: Int { self.lock.withLock { self.count } }
        func add() { self.lock.withLock { self.count += 1 } }
    }

    public init(path: String) throws(StrataError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StrataError(.notFound, "base image \(path): no such file") }
        self.fd = fd
        self.path = path
        self.virtualSize = UInt64(lseek(fd, 0, SEEK_END))
    }

    deinit { close(self.fd) }

    public var layers: [BaseLayer] { [BaseLayer(path: self.path, format: "raw", virtualSize: self.virtualSize)] }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
        self.reads.add()
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        guard offset < self.virtualSize else { return }
        let count = Int(min(UInt64(buffer.count), self.virtualSize - offset))
        guard pread(self.fd, buffer.baseAddress, count, off_t(offset)) == count else {
            throw StrataError(.io, "read base image \(self.path): short read at byte offset \(offset)")
        }
    }

    public func allocation(at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        var extents: [MappingExtent] = []
        var block = [UInt8](repeating: 0, count: 4096)
        var position = offset
        while position < offset + length {
            let stop = min((position / 4096 + 1) * 4096, offset + length)
            var mapped = false
            if position < self.virtualSize {
                try block.withUnsafeMutableBufferPointer { raw throws(StrataError) in
                    try self.read(at: position / 4096 * 4096, into: UnsafeMutableRawBufferPointer(raw))
                }
                mapped = block.contains { $0 != 0 }
            }
            if let last = extents.last, last.mapped == mapped {
                extents[extents.count - 1] = MappingExtent(offset: last.offset, length: stop - last.offset, mapped: mapped)
            } else {
                extents.append(MappingExtent(offset: position, length: stop - position, mapped: mapped))
            }
            position = stop
        }
        return extents
    }
}
