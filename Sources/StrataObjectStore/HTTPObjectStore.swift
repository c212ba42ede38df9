// What the two HTTP stores (S3Store, SwiftStore) share: the object requests that differ between
// the APIs only in how a request is addressed and authorized. Each store says how it sends one
// request (`send`); GET, HEAD and DELETE of an object, and the context its errors carry, are
// written once here.

import NIOCore
import NIOHTTP1
import StrataCore

/// An object store spoken to over HTTP, one request per operation.
protocol HTTPObjectStore: ObjectStore {
    var transport: HTTPTransport { get }
    /// Sends one request without a body for `key` (nil: the container), with `headers` added to
    /// the ones the API needs (signature, token), and returns the answer whatever its status.
    /// With `sink`, a successful answer's body goes to it as it arrives (the reply's is empty).
    func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)], headers: [(String, String)],
        sink: (any ObjectSink)?, context: RequestContext
    ) async throws(StrataError) -> HTTPReply
}

extension HTTPObjectStore {
    public func get(_ key: String, range: Range<UInt64>?) async throws(StrataError) -> ByteBuffer {
        let context = self.context("get", key)
        var headers: [(String, String)] = []
        if let range { headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")) }
        let reply = try await self.send(.GET, key: key, query: [], headers: headers, sink: nil, context: context)
        try reply.requireSuccess(context)
        return reply.body
    }

    public func get(_ key: String, into sink: any ObjectSink) async throws(StrataError) {
        let context = self.context("get", key)
        let reply = try await self.send(.GET, key: key, query: [], headers: [], sink: sink, context: context)
        try reply.requireSuccess(context)
    }

    public func head(_ key: String) async throws(StrataError) -> ObjectInfo? {
        let context = self.context("head", key)
        let reply = try await self.send(.HEAD, key: key, query: [], headers: [], sink: nil, context: context)
        return try reply.objectInfo(key, context)
    }

    public func delete(_ key: String) async throws(StrataError) {
        let context = self.context("delete", key)
        let reply = try await self.send(.DELETE, key: key, query: [], headers: [], sink: nil, context: context)
        try reply.requireSuccess(context, orMissing: true)
    }

    public func shutdown() async { await self.transport.shutdown() }

    func context(_ operation: String, _ object: String, isContainer: Bool = false) -> RequestContext {
        RequestContext(operation: operation, object: object, remote: self.label, isContainer: isContainer)
    }
}
