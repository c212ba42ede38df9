// The S3 client: path-style requests (`ENDPOINT/BUCKET/KEY`) signed with SigV4, within the
// limits of Swift's s3api listed in NOTES.md: no aws-chunked bodies, no conditional PUT, no
// flexible checksums. Each PUT carries the body's real SHA-256 as x-amz-content-sha256, so the
// store refuses a body damaged on the way (400 BadDigest) instead of storing it. Listings use
// ListObjectsV2 with `start-after`, so a page boundary is a key, as in the Swift client.

import Foundation
import NIOCore
import NIOHTTP1
import StrataCore

/// A bucket behind an S3 endpoint.
public final class S3Store: HTTPObjectStore {
    public let label: String
    let endpoint: Endpoint
    let bucket: String
    let signer: SigV4Signer
    let transport = HTTPTransport()

    /// - Throws: `StrataError` when `endpoint` is not an http(s) URL.
    public init(remote: String, endpoint: String, bucket: String, signer: SigV4Signer) throws(StrataError) {
        self.endpoint = try Endpoint(endpoint, remote: remote)
        self.bucket = bucket
        self.signer = signer
        self.label = "remote \(remote) (s3 \(endpoint)/\(bucket))"
    }

    public func checkContainer() async throws(StrataError) {
        let context = self.context("check bucket", self.bucket, isContainer: true)
        let reply = try await self.send(.HEAD, key: nil, context: context)
        try reply.requireSuccess(context)
    }

    public func createContainer() async throws(StrataError) {
        let context = self.context("create bucket", self.bucket, isContainer: true)
        let reply = try await self.send(.PUT, key: nil, context: context)
        // 409 BucketAlreadyOwnedByYou: it exists and is ours, which is what was asked.
        guard reply.isSuccess || (reply.status == 409 && reply.detail == "code=BucketAlreadyOwnedByYou") else {
            throw ObjectStoreError.http(context, status: reply.status, detail: reply.detail, attempts: 1)
        }
    }

    public func put(_ key: String, body: ByteBuffer, sha256: String) async throws(StrataError) {
        let context = self.context("put", key)
        let reply = try await self.send(.PUT, key: key, body: body, payloadHash: sha256, context: context)
        try reply.requireSuccess(context)
    }

    public func list(prefix: String, after marker: String?) async throws(StrataError) -> ObjectListing {
        let context = self.context("list", "\(prefix)*", isContainer: true)
        var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", "\(Limits.objectStoreListPageMax)")]
        if let marker { query.append(("start-after", marker)) }
        let reply = try await self.send(.GET, key: nil, query: query, context: context)
        try reply.requireSuccess(context)
        let text = String(buffer: reply.body)
        var objects: [ObjectInfo] = []
        for entry in XMLScanner.values(of: "Contents", in: text) {
            guard let key = XMLScanner.firstValue(of: "Key", in: entry),
                let size = XMLScanner.firstValue(of: "Size", in: entry).flatMap({ UInt64($0) })
            else {
                throw StrataError(.io, "list \(prefix)* on \(self.label): unreadable listing entry (\(entry.prefix(120)))")
            }
            let modified = XMLScanner.firstValue(of: "LastModified", in: entry).flatMap(StoreDates.iso8601)
            objects.append(ObjectInfo(key: key, sizeBytes: size, lastModified: modified))
        }
        let truncated = XMLScanner.firstValue(of: "IsTruncated", in: text) == "true"
        return ObjectListing(objects: objects, next: truncated ? objects.last?.key : nil)
    }

    func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)], headers: [(String, String)],
        sink: (any ObjectSink)?, context: RequestContext
    ) async throws(StrataError) -> HTTPReply {
        try await self.send(method, key: key, query: query, extra: headers, sink: sink, context: context)
    }

    /// Signs and sends one request; a new signature (and date) per attempt.
    private func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)] = [], body: ByteBuffer? = nil,
        payloadHash: String = SigV4Signer.emptyPayloadHash, extra: [(String, String)] = [], sink: (any ObjectSink)? = nil,
        context: RequestContext
    ) async throws(StrataError) -> HTTPReply {
        let path = "/\(self.bucket)" + (key.map { "/\($0)" } ?? "")
        let encodedQuery = query.map { "\(SigV4Signer.encode($0.0, slash: true))=\(SigV4Signer.encode($0.1, slash: true))" }
            .joined(separator: "&")
        let url = self.endpoint.base + SigV4Signer.encode(path, slash: false) + (query.isEmpty ? "" : "?\(encodedQuery)")
        return try await self.transport.send(context, sink: sink) { () throws(StrataError) in
            let amzDate = SigV4Signer.amzDate(Date())
            let signed = [("host", self.endpoint.hostHeader), ("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash)] + extra
            let authorization = self.signer.authorization(
                method: method.rawValue, path: path, query: query, headers: signed, payloadHash: payloadHash,
                amzDate: amzDate)
            var headers = HTTPHeaders(signed)
            headers.add(name: "authorization", value: authorization)
            return HTTPRequestSpec(method: method, url: url, headers: headers, body: body)
        }
    }
}

/// An endpoint URL split into what requests and signatures need.
struct Endpoint: Sendable {
    /// `scheme://host[:port]` plus the URL's path without a trailing slash.
    let base: String
    /// The Host header exactly as sent: the port included unless it is the scheme's default.
    let hostHeader: String

    init(_ text: String, remote: String) throws(StrataError) {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else {
            throw StrataError(
                .invalidArgument, "remote \(remote): '\(text)' is not an http(s) URL; write http://HOST:PORT[/PATH]")
        }
        var path = components.path
        while path.hasSuffix("/") { path.removeLast() }
        let port = components.port
        let isDefault = port == nil || (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
        self.hostHeader = isDefault ? host : "\(host):\(port!)"
        self.base = "\(scheme)://\(self.hostHeader)\(path)"
    }
}
