// The object-store seam: what the tier needs from OpenStack Swift or S3, and nothing more. Two
// real clients implement it (`SwiftStore`, the native API with TempAuth; `S3Store`, SigV4), both
// on one `HTTPTransport` (connection reuse, timeouts, bounded retries, a bound on parallel
// requests). Every method throws `StrataError`s that name the remote, the object and the HTTP
// status, with the fix (ObjectStoreError.swift).
//
// Keys are flat strings; the tier's layout (objects/, manifests/, leases/) is in
// docs/OBJECTSTORE.md. Objects are immutable once written: the tier never overwrites an object
// with different bytes (content keys), only manifests and leases by name.

import Foundation
import NIOCore
import StrataCore

/// One object as a listing or a HEAD reports it.
public struct ObjectInfo: Sendable, Equatable {
    public let key: String
    public let sizeBytes: UInt64
    /// The store's modification time; nil when the store did not say.
    public let lastModified: Date?

    public init(key: String, sizeBytes: UInt64, lastModified: Date?) {
        self.key = key
        self.sizeBytes = sizeBytes
        self.lastModified = lastModified
    }
}

/// One page of a listing; `next` is where the next page starts, nil at the end.
public struct ObjectListing: Sendable {
    public let objects: [ObjectInfo]
    public let next: String?

    public init(objects: [ObjectInfo], next: String?) {
        self.objects = objects
        self.next = next
    }
}

/// A container (Swift) or bucket (S3) of objects.
public protocol ObjectStore: Sendable {
    /// What errors call this store: `remote r1 (swift http://…/c)`.
    var label: String { get }
    /// Authenticates (when the API has a login) and checks that the container exists.
    /// - Throws: `StrataError` naming the fix when the credentials or the container are wrong.
    func checkContainer() async throws(StrataError)
    /// Creates the container or bucket; an existing one is fine.
    func createContainer() async throws(StrataError)
    /// Stores `body` under `key`; `sha256` is the body's hex SHA-256 (S3 verifies it).
    func put(_ key: String, body: ByteBuffer, sha256: String) async throws(StrataError)
    /// The object's bytes, or those in `range` (end exclusive).
    func get(_ key: String, range: Range<UInt64>?) async throws(StrataError) -> ByteBuffer
    /// The whole object's bytes into `sink` as they arrive (each attempt from its first byte).
    /// - Throws: the store's errors, or the sink's (then the request stops).
    func get(_ key: String, into sink: any ObjectSink) async throws(StrataError)
    /// The object's size and time, or nil when it does not exist.
    func head(_ key: String) async throws(StrataError) -> ObjectInfo?
    /// Deletes the object; deleting a missing object is not an error.
    func delete(_ key: String) async throws(StrataError)
    /// One page of keys starting with `prefix`, after `marker`.
    func list(prefix: String, after marker: String?) async throws(StrataError) -> ObjectListing
    /// Closes the connections. The store is unusable afterwards.
    func shutdown() async
}

extension ObjectStore {
    /// A store that cannot stream hands the sink the whole body at once.
    public func get(_ key: String, into sink: any ObjectSink) async throws(StrataError) {
        let body = try await self.get(key, range: nil)
        sink.restart()
        var failure: StrataError?
        body.withUnsafeReadableBytes { bytes in
            do throws(StrataError) { try sink.receive(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
        try sink.finish()
    }

    /// Every key starting with `prefix`, following pages up to `Limits.objectStoreListPagesMax`.
    public func listAll(prefix: String) async throws(StrataError) -> [ObjectInfo] {
        var result: [ObjectInfo] = []
        var marker: String?
        for _ in 0..<Limits.objectStoreListPagesMax {
            let page = try await self.list(prefix: prefix, after: marker)
            result += page.objects
            guard let next = page.next else { return result }
            marker = next
        }
        throw StrataError(
            .io, "list \(prefix)* on \(self.label): more than \(Limits.objectStoreListPagesMax) pages; the listing does not end")
    }
}
