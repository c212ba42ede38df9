// What a remote holds, read from its manifests: `remote ls`, `remote delete` and `remote gc`.
//
// GC (docs/OBJECTSTORE.md "Garbage collection and concurrent pushes"): under a gc lease that no
// push lease overlaps (Lease.swift), read every manifest, list every object, and delete the
// objects no manifest names. A manifest that cannot be read stops gc before anything is
// deleted: an object is only ever deleted on the word of every manifest.

import Crypto
import Foundation
import NIOCore
import StrataCore

/// One snapshot in a remote, for `remote ls`.
public struct RemoteSnapshotInfo: Codable, Sendable, Equatable {
    public let volume: String
    public let snapshot: String
    public let guid: String
    public let createdAt: String
    public let sizeBytes: UInt64
    public let objects: Int
    /// Bytes of the distinct objects the manifest names.
    public let storedBytes: UInt64
    /// Bytes of the objects no other manifest names: what deleting this snapshot frees.
    public let uniqueBytes: UInt64
    public let parent: String?
}

/// What gc found (and, unless a dry run, deleted).
public struct GCReport: Codable, Sendable, Equatable {
    public let dryRun: Bool
    public let manifests: Int
    /// Objects kept because a manifest names them.
    public let objectsKept: Int
    /// The unreferenced objects' keys, sorted.
    public let objects: [String]
    public let bytes: UInt64
}

/// Reads and edits a remote's snapshots.
public struct RemoteCatalog: Sendable {
    let store: any ObjectStore

    public init(store: any ObjectStore) {
        self.store = store
    }

    /// Manifest keys of `volume`, or of every volume.
    public func manifestKeys(volume: String?) throws(StrataError) -> [String] {
        let prefix = RemoteLayout.manifestPrefix + (volume.map { "\($0)/" } ?? "")
        let store = self.store
        return try Blocking.run { () throws(StrataError) in try await store.listAll(prefix: prefix) }.map(\.key)
    }

    /// The verified manifest at `key`.
    public func manifest(_ key: String) throws(StrataError) -> Manifest {
        let store = self.store
        let body = try Blocking.run { () throws(StrataError) in try await store.get(key, range: nil) }
        return try Manifest.decode(Data(body.readableBytesView), key: key)
    }

    /// Every manifest (of `volume`, or all), verified.
    public func manifests(volume: String?) throws(StrataError) -> [Manifest] {
        var result: [Manifest] = []
        for key in try self.manifestKeys(volume: volume) { result.append(try self.manifest(key)) }
        return result
    }

    /// `remote ls`: the snapshots (of `volume`) with their stored and unique bytes.
    public func list(volume: String?) throws(StrataError) -> [RemoteSnapshotInfo] {
        let all = try self.manifests(volume: nil)
        var users: [String: Int] = [:]
        for manifest in all {
            for key in Set(manifest.objects.map(\.key)) { users[key, default: 0] += 1 }
        }
        return all.filter { volume == nil || $0.volume == volume }.map { manifest in
            var sizes: [String: UInt64] = [:]
            for entry in manifest.objects { sizes[entry.key] = entry.bytes }
            return RemoteSnapshotInfo(
                volume: manifest.volume, snapshot: manifest.snapshot, guid: manifest.guid, createdAt: manifest.createdAt,
                sizeBytes: manifest.sizeBytes, objects: manifest.objects.count, storedBytes: sizes.values.reduce(0, +),
                uniqueBytes: sizes.filter { users[$0.key] == 1 }.values.reduce(0, +),
                parent: manifest.parent.map { "\(manifest.volume)@\($0.snapshot)" })
        }.sorted { ($0.volume, $0.createdAt, $0.snapshot) < ($1.volume, $1.createdAt, $1.snapshot) }
    }

    /// Deletes the manifest of `volume@snapshot`; its objects stay until gc.
    public func delete(volume: String, snapshot: String) throws(StrataError) {
        let key = RemoteLayout.manifestKey(volume: volume, snapshot: snapshot)
        let store = self.store
        let exists = try Blocking.run { () throws(StrataError) in try await store.head(key) } != nil
        guard exists else {
            throw StrataError(
                .notFound, "remote delete \(volume)@\(snapshot) on \(store.label): no such snapshot; `strata remote ls` shows them")
        }
        try Blocking.run { () throws(StrataError) in try await store.delete(key) }
    }

    /// Deletes (or with `dryRun` only lists) the objects no manifest names.
    /// - Throws: `.busy` while a push runs; any unreadable manifest, before deleting anything.
    public func collect(dryRun: Bool, owner: String) throws(StrataError) -> GCReport {
        var lease = Lease(kind: .gc, owner: owner, volume: nil)
        try lease.acquire(self.store)
        do throws(StrataError) {
            let report = try self.collectLeased(dryRun: dryRun, lease: &lease)
            try lease.release(self.store)
            return report
        } catch {
            // The lease dies on its own if this release fails too; the first error is the news.
            _ = Result { () throws(StrataError) in try lease.release(self.store) }
            throw error
        }
    }

    private func collectLeased(dryRun: Bool, lease: inout Lease) throws(StrataError) -> GCReport {
        let manifests = try self.manifests(volume: nil)
        let referenced = Set(manifests.flatMap { $0.objects.map(\.key) })
        let store = self.store
        let objects = try Blocking.run { () throws(StrataError) in try await store.listAll(prefix: RemoteLayout.objectPrefix) }
        let garbage = objects.filter { !referenced.contains($0.key) }.sorted { $0.key < $1.key }
        if !dryRun {
            var start = 0
            while start < garbage.count {
                let batch = Array(garbage[start..<min(start + Limits.objectStoreParallelRequestsMax, garbage.count)])
                start += batch.count
                try Blocking.run { () throws(StrataError) in try await Self.delete(batch.map(\.key), store: store) }
                try lease.refresh(store)
            }
        }
        return GCReport(
            dryRun: dryRun, manifests: manifests.count, objectsKept: objects.count - garbage.count,
            objects: garbage.map(\.key), bytes: garbage.map(\.sizeBytes).reduce(0, +))
    }

    private static func delete(_ keys: [String], store: any ObjectStore) async throws(StrataError) {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for key in keys { group.addTask { try await store.delete(key) } }
                try await group.waitForAll()
            }
        } catch let error as StrataError {
            throw error
        } catch {
            throw StrataError(.io, "gc on \(store.label): \(error)")
        }
    }
}
