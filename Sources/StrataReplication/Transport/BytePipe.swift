// A bounded pipe of bytes between the engine and a connection. The engine's stream code
// (`StreamSender`, `StreamReceiver`) is synchronous and can block (it reads the pool and fsyncs),
// so it runs on a thread pool, never on an event loop or the cooperative pool; the connection is
// async. A pipe joins the two sides:
//
// - Sending: the engine thread `write`s into the pipe, blocking while `capacity` bytes wait; a task
//   `drain`s it into the connection. The engine never runs ahead of the network by more than
//   `capacity` bytes plus one write.
// - Receiving: the engine thread `read`s from the pipe; each read that finds it empty asks a task
//   (`fill`) for the connection's next bytes. Nothing is read from the connection that the engine
//   did not ask for, so when the stream ends the connection is left at the byte after it, where the
//   reply goes, and no read is left pending to cancel.
//
// Either side can `fail` the pipe (the connection broke, the task was cancelled, the engine gave
// up); the other side then throws that error at its next call. Bytes already in the pipe are still
// read first, so an engine applying a stream stops at the exact byte where the connection broke.

import Foundation
import NIOCore
import StrataCore

/// A bounded byte pipe between a thread that may block and a task. See the file's note.
public final class BytePipe: StreamInput, StreamOutput, @unchecked Sendable {
    // @unchecked: every field is guarded by `condition`'s lock.
    private let condition = NSCondition()
    private let capacity: Int
    private var chunks: [ByteBuffer] = []
    private var buffered = 0
    private var ended = false
    private var failure: StrataError?
    /// The engine waits for bytes (receiving).
    private var demand = false
    /// Counts changes, so a task that saw the state can tell it changed before it waited.
    private var version: UInt64 = 0
    private var waiter: CheckedContinuation<Void, Never>?

    /// - Precondition: `capacity` > 0.
    public init(capacity: Int) {
        precondition(capacity > 0, "a pipe needs room for at least one byte")
        self.capacity = capacity
    }

    // MARK: The engine's side (blocking)

    /// Puts `bytes` in the pipe, blocking while it is full.
    /// - Throws: the pipe's failure.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(StrataError) {
        // An empty chunk would read as the end of the stream.
        guard bytes.count > 0 else { return }
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.buffered >= self.capacity && self.failure == nil { self.condition.wait() }
        if let failure = self.failure { throw failure }
        precondition(!self.ended, "write to a finished pipe")
        self.chunks.append(ByteBuffer(bytes: bytes))
        self.buffered += bytes.count
        self.changed()
    }

    /// Takes up to `buffer.count` bytes, blocking until some arrive; 0 once the pipe has finished.
    /// - Throws: the pipe's failure, once the bytes before it are read.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.chunks.isEmpty && !self.ended && self.failure == nil {
            if !self.demand {
                self.demand = true
                self.changed()
            }
            self.condition.wait()
        }
        guard !self.chunks.isEmpty else {
            if let failure = self.failure { throw failure }
            return 0
        }
        let count = self.chunks[0].readWithUnsafeReadableBytes { source in
            let count = min(source.count, buffer.count)
            buffer.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: count)
            return count
        }
        if self.chunks[0].readableBytes == 0 { self.chunks.removeFirst() }
        self.buffered -= count
        precondition(self.buffered >= 0, "pipe: buffered bytes went negative")
        self.changed()
        return count
    }

    // MARK: Either side

    /// No more bytes will be put in: a reader sees the end once it has read the rest.
    public func finish() {
        self.condition.withLock {
            self.ended = true
            self.changed()
        }
    }

    /// Breaks the pipe: the other side throws `error` at its next call (the first failure wins).
    public func fail(_ error: StrataError) {
        self.condition.withLock {
            if self.failure == nil { self.failure = error }
            self.changed()
        }
    }

    // MARK: The connection's side (async)

    /// Writes what the engine puts in the pipe to `connection` until the pipe finishes, at most
    /// `rateBytesPerSecond` when given (the engine then waits on the full pipe).
    /// - Throws: the pipe's failure, or the connection's error (which then fails the pipe).
    /// - Precondition: `rateBytesPerSecond`, when given, is positive.
    public func drain(to connection: any TransportConnection, rateBytesPerSecond: UInt64? = nil) async throws(StrataError) {
        var limiter = rateBytesPerSecond.map { RateLimiter(bytesPerSecond: $0) }
        do throws(StrataError) {
            while let bytes = try await self.take() {
                if let wait = limiter?.reserve(UInt64(bytes.readableBytes), nowNanos: MonotonicClock.nanos()), wait > 0 {
                    // A cancelled wait ends early; the write then fails on the closed connection.
                    try? await Task.sleep(nanoseconds: wait)
                }
                try await connection.write(bytes)
            }
        } catch {
            self.fail(error)
            throw error
        }
    }

    /// Gives the engine `reader`'s bytes as it asks for them, until the pipe fails (the engine is
    /// done with it) or the connection ends (the pipe then finishes) or breaks (the pipe fails).
    public func fill(from reader: TransportReader) async {
        do throws(StrataError) {
            while await self.awaitDemand() {
                var next = try await reader.next()
                while let bytes = next, bytes.readableBytes == 0 { next = try await reader.next() }
                guard let bytes = next else {
                    self.finish()
                    return
                }
                self.condition.withLock {
                    self.chunks.append(bytes)
                    self.buffered += bytes.readableBytes
                    self.changed()
                }
            }
        } catch {
            self.fail(error)
        }
    }

    /// What a task waiting on the pipe finds.
    private enum Step {
        case bytes(ByteBuffer)
        case end
        case failed(StrataError)
        case demand
        case wait(UInt64)
    }

    /// The next bytes the engine wrote; nil once it finished.
    private func take() async throws(StrataError) -> ByteBuffer? {
        while true {
            let step = self.condition.withLock { () -> Step in
                if !self.chunks.isEmpty {
                    let chunk = self.chunks.removeFirst()
                    self.buffered -= chunk.readableBytes
                    self.changed()
                    return .bytes(chunk)
                }
                if let failure = self.failure { return .failed(failure) }
                return self.ended ? .end : .wait(self.version)
            }
            switch step {
            case .bytes(let chunk): return chunk
            case .end: return nil
            case .failed(let failure): throw failure
            case .demand: preconditionFailure("pipe: demand is not a step of take")
            case .wait(let seen): await self.waitForChange(since: seen)
            }
        }
    }

    /// Waits until the engine asks for bytes: true then, false once the pipe has failed.
    private func awaitDemand() async -> Bool {
        while true {
            let step = self.condition.withLock { () -> Step in
                if let failure = self.failure { return .failed(failure) }
                if self.demand {
                    self.demand = false
                    return .demand
                }
                return .wait(self.version)
            }
            switch step {
            case .demand: return true
            case .failed: return false
            case .wait(let seen): await self.waitForChange(since: seen)
            case .bytes, .end: preconditionFailure("pipe: bytes are not a step of awaiting demand")
            }
        }
    }

    /// Suspends until the state changes after `version`; cancellation fails the pipe.
    private func waitForChange(since version: UInt64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                self.condition.lock()
                defer { self.condition.unlock() }
                precondition(self.waiter == nil, "pipe: two tasks wait on one side")
                if self.version != version {
                    continuation.resume()
                } else {
                    self.waiter = continuation
                }
            }
        } onCancel: {
            self.fail(StrataError(.io, "replication: the transfer was stopped"))
        }
    }

    /// Wakes both sides; called with the lock held.
    private func changed() {
        self.version &+= 1
        self.condition.broadcast()
        if let waiter = self.waiter {
            self.waiter = nil
            waiter.resume()
        }
    }
}
