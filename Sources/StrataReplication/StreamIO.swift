// Byte sources and sinks for streams: a file descriptor (a pipe, a file, a socket) with
// blocking POSIX I/O, and memory for tests. `StreamReader` counts every byte it hands out, so
// a reader's error can name the byte offset where the stream went wrong.

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

/// Where a stream's bytes go.
public protocol StreamOutput: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws(StrataError)
}

/// Where a stream's bytes come from. Returns 0 at the end of the input.
public protocol StreamInput: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int
}

extension StreamOutput {
    public func write(_ bytes: [UInt8]) throws(StrataError) {
        try bytes.withUnsafeBufferPointer { buffer throws(StrataError) in try self.write(UnsafeRawBufferPointer(buffer)) }
    }
}

/// A file descriptor used as a stream; it does not own (close) the descriptor.
public final class FileDescriptorStream: StreamInput, StreamOutput {
    public let fd: Int32
    let name: String

    public init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(StrataError) {
        var done = 0
        while done < bytes.count {
            let count = Glibc.write(self.fd, bytes.baseAddress! + done, bytes.count - done)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw StrataError(.io, "write stream to \(self.name): \(String(cString: strerror(errno)))")
            }
            done += count
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
        while true {
            let count = Glibc.read(self.fd, buffer.baseAddress, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw StrataError(.io, "read stream from \(self.name): \(String(cString: strerror(errno)))")
            }
            return count
        }
    }
}

/// A stream in memory, for tests: writes append, reads consume from the front.
public final class MemoryStream: StreamInput, StreamOutput {
    public var bytes: [UInt8]
    var position = 0

    public init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    public func write(_ buffer: UnsafeRawBufferPointer) throws(StrataError) { self.bytes.append(contentsOf: buffer) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
        let count = min(buffer.count, self.bytes.count - self.position)
        self.bytes.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + self.position, byteCount: count)
        }
        self.position += count
        return count
    }
}

/// Reads exact byte counts from a `StreamInput`, counting the position.
public final class StreamReader {
    let input: any StreamInput
    let context: String
    /// Bytes consumed so far: the offset of the next byte.
    public private(set) var position: UInt64 = 0
    private var buffer = [UInt8](repeating: 0, count: 256 << 10)
    private var start = 0
    private var end = 0

    public init(_ input: any StreamInput, context: String) {
        self.input = input
        self.context = context
    }

    /// Fills the buffer; false at the end of the input.
    private func refill() throws(StrataError) -> Bool {
        if self.start == self.end {
            self.start = 0
            self.end = 0
        }
        let count = try self.buffer.withUnsafeMutableBufferPointer { raw throws(StrataError) in
            try self.input.read(into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(raw)[self.end...]))
        }
        self.end += count
        return count > 0
    }

    /// Exactly `count` bytes, or nil if the input ends first (having consumed what there was).
    public func readUpTo(_ count: Int) throws(StrataError) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            if self.start == self.end, !(try self.refill()) {
                self.position += UInt64(result.count)
                return nil
            }
            let take = min(count - result.count, self.end - self.start)
            result.append(contentsOf: self.buffer[self.start..<(self.start + take)])
            self.start += take
            if self.start == self.end { (self.start, self.end) = (0, 0) }
        }
        self.position += UInt64(count)
        return result
    }

    /// Exactly `count` bytes; a short input is a truncation error naming `what` and the offset.
    public func read(_ count: Int, what: String) throws(StrataError) -> [UInt8] {
        let at = self.position
        guard let bytes = try self.readUpTo(count) else {
            throw StrataError(
                .corrupt,
                "\(self.context): truncated stream at byte offset \(self.position): \(what) at byte offset \(at) needs \(count) bytes").at(byteOffset: self.position)
        }
        return bytes
    }

    /// True when the input has no more bytes.
    public func atEnd() throws(StrataError) -> Bool {
        if self.start < self.end { return false }
        return !(try self.refill())
    }
}
