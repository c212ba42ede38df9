// `strata push VOL@SNAP REMOTE`: uploads a snapshot as fixed-size content-addressed objects and
// then its manifest (docs/OBJECTSTORE.md "Push").
//
// Which objects are read: on a first push, those the allocation map shows data in (every object
// of a volume over a base image, whose holes read through the base); later, only those the
// engine's diff from the newest snapshot of the volume already in the remote touches (plus the
// last object when the size changed). Every other index takes its parent's entry unread. An
// object read as all zeros is a hole. Each object read is hashed; its key is its SHA-256, and
// a HEAD finds it already stored (from another snapshot, another volume, or a killed push of
// this one), so it is uploaded only when missing: that is also how a killed push resumes.
//
// The pool is read on the calling thread in batches of `Limits.objectStoreParallelRequestsMax`
// objects; each batch's HEADs and PUTs run in parallel through `Blocking.run`. The manifest
// goes last, so the snapshot appears in the remote only once all its objects are there.

import Crypto
import Foundation
import NIOCore
import StrataCore

/// A push's totals, for `--json` and the summary line.
public struct PushSummary: Codable, Sendable, Equatable {
    public var remote: String
    public var volume: String
    public var snapshot: String
    public var manifest: String
    /// `VOL@SNAP` the push was incremental from, nil for a full push.
    public var parent: String?
    /// True when the remote already held this snapshot: nothing was uploaded.
    public var upToDate = false
    public var objectsUploaded = 0
    public var bytesUploaded: UInt64 = 0
    /// Objects read and hashed but already in the store (dedup, or a resumed push).
    public var objectsSkipped = 0
    public var bytesSkipped: UInt64 = 0
    /// Objects taken from the parent's manifest without reading them.
    public var objectsUnchanged = 0
    /// Non-hole objects the manifest lists, and holes.
    public var objects = 0
    public var holes = 0
    public var seconds = 0.0
}

/// Pushes snapshots of one pool to one remote.
public struct Pusher {
    let pool: Pool
    let remote: RemoteConfig
    let store: any ObjectStore
    let owner: String

    public init(pool: Pool, remote: RemoteConfig, store: any ObjectStore, owner: String) {
        self.pool = pool
        self.remote = remote
        self.store = store
        self.owner = owner
    }

    /// Pushes `volume@snapshot`. `progress(done, total)` counts objects read.
    /// - Throws: `StrataError` from the pool or the store; nothing local changes either way.
    public func push(volume: String, snapshot: String, progress: (UInt64, UInt64) -> Void) throws(StrataError)
        -> PushSummary
    {
        let started = Date()
        let snapshots = try self.pool.listSnapshots(of: volume)
        guard let target = snapshots.first(where: { $0.name == snapshot }) else {
            throw StrataError(.notFound, "push \(volume)@\(snapshot): no such snapshot; `strata snapshot list \(volume)` shows them")
        }
        let manifestKey = RemoteLayout.manifestKey(volume: volume, snapshot: snapshot)
        var summary = PushSummary(remote: self.remote.name, volume: volume, snapshot: snapshot, manifest: manifestKey)
        let catalog = RemoteCatalog(store: self.store)
        let stored = Set(try catalog.manifestKeys(volume: volume))
        if stored.contains(manifestKey) {
            let existing = try catalog.manifest(manifestKey)
            guard existing.guid == target.guid else {
                throw StrataError(
                    .alreadyExists,
                    "push \(volume)@\(snapshot) to remote \(self.remote.name): the remote holds another snapshot by this name (guid=\(existing.guid), local guid=\(target.guid)); delete it with `strata remote delete \(self.remote.name) \(volume)@\(snapshot)` or push under another name"
                )
            }
            summary.upToDate = true
            summary.objects = existing.objects.count
            summary.holes = Int(existing.objectCount) - existing.objects.count
            return summary
        }
        let parent = try self.parentManifest(snapshots: snapshots, target: target, stored: stored, catalog: catalog)
        var lease = Lease(kind: .push, owner: self.owner, volume: volume)
        try lease.acquire(self.store)
        do throws(StrataError) {
            try self.uploadAndCommit(target: target, parent: parent, lease: &lease, summary: &summary, progress: progress)
        } catch {
            // A failed release leaves a lease that expires on its own; the push's error is the news.
            _ = Result { () throws(StrataError) in try lease.release(self.store) }
            throw error
        }
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    /// Steps 4-7 of a push, under its lease: the changed objects, the manifest, the release.
    private func uploadAndCommit(
        target: SnapshotInfo, parent: Manifest?, lease: inout Lease, summary: inout PushSummary,
        progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) {
        let (volume, snapshot) = (target.volume, target.name)
        var manifest = Manifest(
            volume: volume, snapshot: snapshot, guid: target.guid, createdAt: target.createdAt, sizeBytes: target.sizeBytes,
            objectSizeBytes: self.remote.objectSizeBytes, parent: parent.map { ManifestParent(snapshot: $0.snapshot, guid: $0.guid) },
            objects: [], partSizeBytes: Limits.manifestPartBytes)
        summary.parent = parent.map { "\(volume)@\($0.snapshot)" }
        let candidates = try self.candidates(volume: volume, target: target, parent: parent, objectCount: manifest.objectCount)
        var fresh: [UInt64: ManifestEntry] = [:]
        try self.upload(
            candidates, handle: try self.pool.handle("\(volume)@\(snapshot)"), manifest: manifest, lease: &lease,
            summary: &summary, fresh: &fresh, progress: progress)
        let inherited = Dictionary(uniqueKeysWithValues: (parent?.objects ?? []).map { ($0.index, $0) })
        let candidateSet = Set(candidates)
        for index in 0..<manifest.objectCount {
            if candidateSet.contains(index) {
                if let entry = fresh[index] { manifest.objects.append(entry) }
            } else if let entry = inherited[index] {
                // Part hashes of another part size (or none, from a version-1 parent) are not ours.
                let sameParts = parent?.partSizeBytes == manifest.partSizeBytes
                manifest.objects.append(
                    sameParts ? entry : ManifestEntry(index: entry.index, sha256: entry.sha256, bytes: entry.bytes))
                summary.objectsUnchanged += 1
            }
        }
        let encoded = manifest.encode()
        let body = ByteBuffer(bytes: encoded)
        let sha = SigV4Signer.hex(SHA256.hash(data: encoded))
        let store = self.store
        let manifestKey = summary.manifest
        try Blocking.run { () throws(StrataError) in try await store.put(manifestKey, body: body, sha256: sha) }
        try lease.release(self.store)
        summary.objects = manifest.objects.count
        summary.holes = Int(manifest.objectCount) - manifest.objects.count
    }

    /// The manifest of the newest local snapshot of the volume (other than `target`) that the
    /// remote holds with the same GUID and object size; nil for a full push.
    private func parentManifest(
        snapshots: [SnapshotInfo], target: SnapshotInfo, stored: Set<String>, catalog: RemoteCatalog
    ) throws(StrataError) -> Manifest? {
        for candidate in snapshots.reversed() where candidate.name != target.name {
            let key = RemoteLayout.manifestKey(volume: candidate.volume, snapshot: candidate.name)
            guard stored.contains(key) else { continue }
            let manifest = try catalog.manifest(key)
            if manifest.guid == candidate.guid && manifest.objectSizeBytes == self.remote.objectSizeBytes {
                return manifest
            }
        }
        return nil
    }

    /// The object indices to read: changed since `parent`, or every one holding data.
    private func candidates(volume: String, target: SnapshotInfo, parent: Manifest?, objectCount: UInt64)
        throws(StrataError) -> [UInt64]
    {
        let objectSize = self.remote.objectSizeBytes
        var indices = Set<UInt64>()
        func cover(_ offset: UInt64, _ length: UInt64) {
            guard length > 0 else { return }
            for index in (offset / objectSize)...((offset + length - 1) / objectSize) where index < objectCount {
                indices.insert(index)
            }
        }
        if let parent {
            for extent in try self.pool.diff(from: "\(volume)@\(parent.snapshot)", to: "\(volume)@\(target.name)") {
                cover(extent.offset, extent.length)
            }
            if parent.sizeBytes != target.sizeBytes {
                // The last object changes length, and objects past the parent's end are new.
                let shared = min(parent.objectCount, objectCount)
                let from = shared == 0 ? 0 : (shared - 1) * objectSize
                cover(from, target.sizeBytes - from)
            }
        } else if try self.pool.listVolumes().first(where: { $0.name == volume })?.base != nil {
            // Holes of a volume over a base image read the base: every object may hold data.
            return Array(0..<objectCount)
        } else {
            let handle = try self.pool.handle("\(volume)@\(target.name)")
            for extent in try self.pool.mapping(handle, at: 0, length: target.sizeBytes) where extent.mapped {
                cover(extent.offset, extent.length)
            }
        }
        return indices.sorted()
    }

    /// Reads, hashes and (when missing from the store) uploads the objects at `indices`.
    private func upload(
        _ indices: [UInt64], handle: VolumeHandle, manifest: Manifest, lease: inout Lease, summary: inout PushSummary,
        fresh: inout [UInt64: ManifestEntry], progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) {
        let total = UInt64(indices.count)
        var done: UInt64 = 0
        progress(0, total)
        var start = 0
        while start < indices.count {
            let batch = indices[start..<min(start + Limits.objectStoreParallelRequestsMax, indices.count)]
            start += batch.count
            var pending: [(ManifestEntry, ByteBuffer)] = []
            for index in batch {
                let length = manifest.length(ofObject: index)
                let bytes = try self.pool.read(handle, at: index * manifest.objectSizeBytes, count: Int(length))
                guard !Zeros.all(bytes) else { continue }
                let entry = ManifestEntry(
                    index: index, sha256: SigV4Signer.hex(SHA256.hash(data: bytes)), bytes: length,
                    parts: Manifest.partHashes(bytes, partSize: Limits.manifestPartBytes))
                fresh[index] = entry
                pending.append((entry, ByteBuffer(bytes: bytes)))
            }
            let store = self.store
            let batchObjects = pending
            let uploaded = try Blocking.run { () throws(StrataError) -> [Bool] in
                try await Self.uploadMissing(batchObjects, store: store)
            }
            for (wasUploaded, (entry, _)) in zip(uploaded, pending) {
                if wasUploaded {
                    summary.objectsUploaded += 1
                    summary.bytesUploaded += entry.bytes
                } else {
                    summary.objectsSkipped += 1
                    summary.bytesSkipped += entry.bytes
                }
            }
            done += UInt64(batch.count)
            progress(done, total)
            try lease.refresh(self.store)
        }
    }

    /// HEADs each object and PUTs those missing, in parallel; true where an object was uploaded.
    private static func uploadMissing(_ objects: [(ManifestEntry, ByteBuffer)], store: any ObjectStore)
        async throws(StrataError) -> [Bool]
    {
        do {
            return try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for (position, (entry, body)) in objects.enumerated() {
                    group.addTask {
                        if let existing = try await store.head(entry.key), existing.sizeBytes == entry.bytes {
                            return (position, false)
                        }
                        try await store.put(entry.key, body: body, sha256: entry.sha256)
                        return (position, true)
                    }
                }
                var result = [Bool](repeating: false, count: objects.count)
                for try await (position, uploaded) in group { result[position] = uploaded }
                return result
            }
        } catch let error as StrataError {
            throw error
        } catch {
            throw StrataError(.io, "push to \(store.label): \(error)")
        }
    }
}
