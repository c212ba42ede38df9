// HTTP for both object-store clients, on async-http-client: one `HTTPClient` per remote session
// (its connection pool reuses connections across requests), a connect timeout and a per-request
// deadline, bounded retries with exponential backoff on 5xx, timeouts and connection errors, and
// a bound on requests in flight (`AsyncLimiter`). All bounds are in Limits+ObjectStore.swift.
//
// A request is built by a closure so every attempt is built afresh: an S3 signature carries the
// attempt's time, and a Swift token may have been refreshed between attempts.

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import StrataCore
import Synchronization

/// One request as a client builds it.
struct HTTPRequestSpec: Sendable {
    var method: HTTPMethod
    var url: String
    var headers: HTTPHeaders
    var body: ByteBuffer?
}

/// A final answer: status, headers, and the body (bounded by `Limits.objectStoreResponseBytesMax`).
struct HTTPReply: Sendable {
    let status: UInt
    let headers: HTTPHeaders
    let body: ByteBuffer

    var isSuccess: Bool { (200..<300).contains(self.status) }

    /// Throws the request's error unless the answer is a success (or, with `orMissing`, a 404).
    func requireSuccess(_ context: RequestContext, orMissing: Bool = false) throws(StrataError) {
        guard self.isSuccess || (orMissing && self.status == 404) else {
            throw ObjectStoreError.http(context, status: self.status, detail: self.detail, attempts: 1)
        }
    }

    /// A HEAD answer as the object it describes, nil for 404.
    func objectInfo(_ key: String, _ context: RequestContext) throws(StrataError) -> ObjectInfo? {
        if self.status == 404 { return nil }
        try self.requireSuccess(context)
        return ObjectInfo(key: key, headers: self.headers)
    }

    /// The body as text, shortened for an error message (HTML tags and XML left as they are).
    var detail: String {
        let text = String(buffer: self.body).trimmingCharacters(in: .whitespacesAndNewlines)
        if let code = XMLScanner.firstValue(of: "Code", in: text) { return "code=\(code)" }
        return text.isEmpty ? "" : "body=\(text.prefix(120))"
    }
}

/// The HTTP client a remote session uses; shut it down when done.
final class HTTPTransport: Sendable {
    let client: HTTPClient
    let limiter = AsyncLimiter(permits: Limits.objectStoreParallelRequestsMax)

    init() {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(
            connect: .seconds(Limits.objectStoreConnectTimeoutSeconds),
            read: .seconds(Limits.objectStoreRequestTimeoutSeconds))
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: Limits.objectStoreParallelRequestsMax)
        configuration.httpVersion = .http1Only
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func shutdown() async {
        // A failed shutdown leaves nothing to undo: the connections are closed either way.
        do { try await self.client.shutdown() } catch {}
    }

    /// Sends the request `build` makes, retrying 5xx answers and transport failures with
    /// exponential backoff up to `Limits.objectStoreAttemptsMax` attempts. Any other answer,
    /// success or not, is returned for the caller to judge.
    /// - Throws: the transport error after the last attempt, or the caller's own from `build`.
    /// With `sink`, a successful answer's body goes to it as it arrives, each attempt from its
    /// first byte (the reply's body is then empty); a sink's error ends the request, unretried.
    func send(
        _ context: RequestContext, sink: (any ObjectSink)? = nil, _ build: () async throws(StrataError) -> HTTPRequestSpec
    ) async throws(StrataError) -> HTTPReply {
        do {
            try await self.limiter.acquire()
        } catch {
            throw StrataError(.failed, "\(context.operation) \(context.object) on \(context.remote): stopped while waiting for a request slot")
        }
        defer { self.limiter.release() }
        var delay = Limits.objectStoreBackoffMillisecondsInitial
        var failure = ""
        var url = ""
        for attempt in 1...Limits.objectStoreAttemptsMax {
            let spec = try await build()
            url = spec.url
            do {
                let reply = try await self.execute(spec, sink: sink)
                if reply.status < 500 || attempt == Limits.objectStoreAttemptsMax {
                    if reply.status >= 500 {
                        throw ObjectStoreError.http(context, status: reply.status, detail: reply.detail, attempts: attempt)
                    }
                    return reply
                }
                failure = "status=\(reply.status)"
            } catch let error as StrataError {
                throw error
            } catch is CancellationError {
                throw StrataError(.io, "\(context.operation) \(context.object) on \(context.remote): cancelled")
            } catch {
                failure = "\(error)"
            }
            guard attempt < Limits.objectStoreAttemptsMax else { break }
            do {
                try await Task.sleep(for: .milliseconds(delay))
            } catch {
                throw StrataError(.io, "\(context.operation) \(context.object) on \(context.remote): cancelled")
            }
            delay = min(delay * 2, Limits.objectStoreBackoffMillisecondsMax)
        }
        throw ObjectStoreError.transport(context, url: url, failure: failure, attempts: Limits.objectStoreAttemptsMax)
    }

    /// One attempt. The body is gathered on the connection's event loop (`ReplyAccumulator`)
    /// and handed over once, complete: reading it as an async sequence cost a hop between the
    /// event loop and a task per 64 KiB received (128 for one object), which showed as ~2 ms on
    /// a 256 KiB ranged GET, the wait of a first read.
    private func execute(_ spec: HTTPRequestSpec, sink: (any ObjectSink)?) async throws -> HTTPReply {
        let request = try HTTPClient.Request(
            url: spec.url, method: spec.method, headers: spec.headers, body: spec.body.map { .byteBuffer($0) })
        return try await self.client.execute(
            request: request, delegate: ReplyAccumulator(sink: sink),
            deadline: .now() + .seconds(Limits.objectStoreRequestTimeoutSeconds)
        ).futureResult.get()
    }
}

/// Gathers one answer into an `HTTPReply`, its body in one buffer allocated at the first body
/// part for the whole announced `content-length`: an 8 MiB object is then copied once, as it
/// arrives, where growing a buffer part by part copied it again at every doubling (freed
/// buffers stay in the heap, so a large realloc copies rather than remaps). A body longer than
/// `Limits.objectStoreResponseBytesMax`, announced or received, fails the request. With a sink,
/// a successful answer's body goes to the sink part by part instead (ObjectBytes.swift: an
/// object readers use as it arrives), and the sink's error fails the request.
final class ReplyAccumulator: HTTPClientResponseDelegate, Sendable {
    typealias Response = HTTPReply

    struct TooLong: Error, CustomStringConvertible {
        let limit: Int
        var description: String { "the answer's body is longer than \(self.limit) bytes" }
    }

    private struct State {
        var head: HTTPResponseHead?
        var body = ByteBuffer()
        var started = false
    }

    private let state = Mutex(State())
    private let limit = Limits.objectStoreResponseBytesMax
    /// Where a successful answer's body goes, if not into the reply.
    private let sink: (any ObjectSink)?
    private let sinking = Atomic<Bool>(false)

    init(sink: (any ObjectSink)? = nil) {
        self.sink = sink
    }

    func didReceiveHead(task: HTTPClient.Task<HTTPReply>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.state.withLock { $0.head = head }
        if let sink = self.sink, (200..<300).contains(head.status.code) {
            self.sinking.store(true, ordering: .relaxed)
            sink.restart()
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<HTTPReply>, _ part: ByteBuffer) -> EventLoopFuture<Void> {
        if let sink = self.sink, self.sinking.load(ordering: .relaxed) {
            var failure: StrataError?
            part.withUnsafeReadableBytes { bytes in
                do throws(StrataError) { try sink.receive(bytes) } catch { failure = error }
            }
            if let failure { return task.eventLoop.makeFailedFuture(failure) }
            return task.eventLoop.makeSucceededVoidFuture()
        }
        let fits = self.state.withLock { state -> Bool in
            if !state.started {
                state.started = true
                // A HEAD answer announces a length but has no body, so nothing is reserved
                // before the first part arrives.
                let announced = state.head?.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
                if announced > self.limit { return false }
                if announced > part.readableBytes {
                    state.body = ByteBufferAllocator().buffer(capacity: announced)
                }
            }
            guard state.body.readableBytes + part.readableBytes <= self.limit else { return false }
            if state.body.capacity == 0 {
                state.body = part
            } else {
                var part = part
                state.body.writeBuffer(&part)
            }
            return true
        }
        return fits ? task.eventLoop.makeSucceededVoidFuture() : task.eventLoop.makeFailedFuture(TooLong(limit: self.limit))
    }

    func didFinishRequest(task: HTTPClient.Task<HTTPReply>) throws -> HTTPReply {
        if let sink = self.sink, self.sinking.load(ordering: .relaxed) { try sink.finish() }
        return try self.state.withLock { state in
            guard let head = state.head else { throw HTTPClientError.remoteConnectionClosed }
            return HTTPReply(status: head.status.code, headers: head.headers, body: state.body)
        }
    }
}
