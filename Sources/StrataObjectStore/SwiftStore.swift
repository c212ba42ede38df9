// The OpenStack Swift client: the native API with v1.0 authentication, as TempAuth serves it
// (GET AUTH_URL with X-Auth-User and X-Auth-Key; the answer's X-Storage-Url and X-Auth-Token).
// The token is cached for the session and fetched again once when a request answers 401 (TempAuth
// keeps tokens only in memcached, so a restarted memcached invalidates them all). PUTs carry the
// body's MD5 as ETag, so Swift refuses a body damaged on the way (422) instead of storing it.
// Keystone is not supported (docs/OBJECTSTORE.md says why).

import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import StrataCore
import Synchronization

/// A container behind a Swift proxy.
public final class SwiftStore: HTTPObjectStore {
    public let label: String
    let authURL: String
    let user: String
    let key: String
    let container: String
    let transport = HTTPTransport()
    /// The storage URL and token of the current login; nil before the first request or after a 401.
    private let session = Mutex<(storageURL: String, token: String)?>(nil)

    /// - Throws: `StrataError` when `authURL` is not an http(s) URL.
    public init(remote: String, authURL: String, user: String, key: String, container: String) throws(StrataError) {
        _ = try Endpoint(authURL, remote: remote)
        self.authURL = authURL
        self.user = user
        self.key = key
        self.container = container
        self.label = "remote \(remote) (swift \(authURL) container \(container))"
    }

    public func checkContainer() async throws(StrataError) {
        let context = self.context("check container", self.container, isContainer: true)
        let reply = try await self.send(.HEAD, key: nil, context: context)
        try reply.requireSuccess(context)
    }

    public func createContainer() async throws(StrataError) {
        let context = self.context("create container", self.container, isContainer: true)
        let reply = try await self.send(.PUT, key: nil, context: context)
        try reply.requireSuccess(context)
    }

    public func put(_ key: String, body: ByteBuffer, sha256: String) async throws(StrataError) {
        let context = self.context("put", key)
        let md5 = SigV4Signer.hex(body.withUnsafeReadableBytes { Insecure.MD5.hash(data: $0) })
        let reply = try await self.send(.PUT, key: key, headers: [("etag", md5)], body: body, context: context)
        try reply.requireSuccess(context)
    }

    /// One row of a JSON container listing.
    private struct Row: Decodable {
        let name: String
        let bytes: UInt64
        let last_modified: String?
    }

    public func list(prefix: String, after marker: String?) async throws(StrataError) -> ObjectListing {
        let context = self.context("list", "\(prefix)*", isContainer: true)
        var query = [("format", "json"), ("prefix", prefix), ("limit", "\(Limits.objectStoreListPageMax)")]
        if let marker { query.append(("marker", marker)) }
        let reply = try await self.send(.GET, key: nil, query: query, context: context)
        try reply.requireSuccess(context)
        if reply.status == 204 || reply.body.readableBytes == 0 { return ObjectListing(objects: [], next: nil) }
        let rows: [Row]
        do {
            rows = try JSONDecoder().decode([Row].self, from: Data(reply.body.readableBytesView))
        } catch {
            throw StrataError(.io, "list \(prefix)* on \(self.label): unreadable JSON listing (\(error))")
        }
        let objects = rows.map {
            ObjectInfo(key: $0.name, sizeBytes: $0.bytes, lastModified: $0.last_modified.flatMap(StoreDates.iso8601))
        }
        return ObjectListing(objects: objects, next: rows.count == Limits.objectStoreListPageMax ? rows.last?.name : nil)
    }

    /// The cached login, or a new one.
    private func login() async throws(StrataError) -> (storageURL: String, token: String) {
        if let session = self.session.withLock({ $0 }) { return session }
        let context = self.context("authenticate", "user \(self.user)")
        let reply = try await self.transport.send(context) { () throws(StrataError) in
            HTTPRequestSpec(
                method: .GET, url: self.authURL,
                headers: HTTPHeaders([("x-auth-user", self.user), ("x-auth-key", self.key)]), body: nil)
        }
        try reply.requireSuccess(context)
        guard let storageURL = reply.headers.first(name: "x-storage-url"),
            let token = reply.headers.first(name: "x-auth-token")
        else {
            throw StrataError(
                .io, "authenticate user \(self.user) on \(self.label): the answer has no X-Storage-Url or X-Auth-Token; is \(self.authURL) a v1.0 auth URL?")
        }
        self.session.withLock { $0 = (storageURL, token) }
        return (storageURL, token)
    }

    func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)], headers: [(String, String)],
        sink: (any ObjectSink)?, context: RequestContext
    ) async throws(StrataError) -> HTTPReply {
        try await self.send(method, key: key, query: query, headers: headers, body: nil, sink: sink, context: context)
    }

    /// Sends one request with the session's token; on 401 logs in again once and repeats it.
    private func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers extra: [(String, String)] = [],
        body: ByteBuffer? = nil, sink: (any ObjectSink)? = nil, context: RequestContext
    ) async throws(StrataError) -> HTTPReply {
        var path = "/" + SigV4Signer.encode(self.container, slash: true)
        if let key { path += "/" + SigV4Signer.encode(key, slash: false) }
        let encodedQuery = query.map { "\(SigV4Signer.encode($0.0, slash: true))=\(SigV4Signer.encode($0.1, slash: true))" }
            .joined(separator: "&")
        for attempt in 1...2 {
            let (storageURL, token) = try await self.login()
            let reply = try await self.transport.send(context, sink: sink) { () throws(StrataError) in
                var headers = HTTPHeaders(extra)
                headers.add(name: "x-auth-token", value: token)
                let url = storageURL + path + (query.isEmpty ? "" : "?\(encodedQuery)")
                return HTTPRequestSpec(method: method, url: url, headers: headers, body: body)
            }
            guard reply.status == 401, attempt == 1 else { return reply }
            self.session.withLock { $0 = nil }
        }
        preconditionFailure("the loop returns on its second attempt")
    }
}
