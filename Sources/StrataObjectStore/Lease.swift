// Leases keep gc and push apart (docs/OBJECTSTORE.md "Garbage collection and concurrent
// pushes"). A push writes `leases/push-<owner>-<volume>` before it uploads anything and deletes
// it after its manifest is stored; gc writes `leases/gc-<owner>` before it lists anything. Each
// then lists the other kind: a push that sees a live gc lease, or a gc that sees a live push
// lease, withdraws its own and stops. Because each writes before it reads, and the store reads
// its own writes, at least one of two that overlap sees the other: they never both go on.
//
// A lease is live while younger than `Limits.leaseExpirySeconds` (by the store's modification
// time); its holder rewrites it every `Limits.leaseRefreshSeconds`. A killed push leaves a lease
// that dies on its own; pushing the same volume from the same pool again takes it over.

import Crypto
import Foundation
import NIOCore
import StrataCore

/// A push's or a gc's lease on a remote.
struct Lease: Sendable {
    enum Kind: String { case push, gc }
    let key: String
    let kind: Kind
    private(set) var writtenAt = Date.distantPast

    /// The lease of this pool (`owner` identifies host and pool directory) for `kind`.
    init(kind: Kind, owner: String, volume: String?) {
        let digest = SigV4Signer.hex(SHA256.hash(data: Data(owner.utf8))).prefix(16)
        self.kind = kind
        self.key = RemoteLayout.leasePrefix + "\(kind.rawValue)-\(digest)" + (volume.map { "-\($0)" } ?? "")
    }

    /// `host:directory` for this process's pool.
    static func owner(directory: String) -> String {
        "\(ProcessInfo.processInfo.hostName):\(directory)"
    }

    /// Writes the lease, then fails if a live lease of the other kind exists (withdrawing this one).
    /// - Throws: `.busy` naming the other lease.
    mutating func acquire(_ store: any ObjectStore) throws(StrataError) {
        try self.write(store)
        let other: Kind = self.kind == .push ? .gc : .push
        let key = self.key
        let live = try Blocking.run { () throws(StrataError) in
            try await store.listAll(prefix: RemoteLayout.leasePrefix + other.rawValue + "-")
        }.filter { $0.key != key && Self.isLive($0) }
        guard let blocker = live.first else { return }
        try self.release(store)
        let age = Int(Date().timeIntervalSince(blocker.lastModified ?? Date()))
        let what = other == .gc ? "a gc is running" : "a push is running"
        throw StrataError(
            .busy,
            "\(self.kind.rawValue) on \(store.label): \(what) (lease \(blocker.key), written \(age) s ago); try again when it ends, or after \(Int(Limits.leaseExpirySeconds)) s if its process died"
        )
    }

    /// Rewrites the lease when its last write is older than `Limits.leaseRefreshSeconds`.
    mutating func refresh(_ store: any ObjectStore) throws(StrataError) {
        guard Date().timeIntervalSince(self.writtenAt) >= Limits.leaseRefreshSeconds else { return }
        try self.write(store)
    }

    func release(_ store: any ObjectStore) throws(StrataError) {
        let key = self.key
        try Blocking.run { () throws(StrataError) in try await store.delete(key) }
    }

    static func isLive(_ lease: ObjectInfo) -> Bool {
        guard let written = lease.lastModified else { return true }
        return Date().timeIntervalSince(written) < Limits.leaseExpirySeconds
    }

    private mutating func write(_ store: any ObjectStore) throws(StrataError) {
        let key = self.key
        let text = Array("\(self.kind.rawValue) lease of \(key)\n".utf8)
        let body = ByteBuffer(bytes: text)
        let sha = SigV4Signer.hex(SHA256.hash(data: text))
        try Blocking.run { () throws(StrataError) in try await store.put(key, body: body, sha256: sha) }
        self.writtenAt = Date()
    }
}
