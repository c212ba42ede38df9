// `strata push VOL@SNAP REMOTE`: uploads a snapshot as fixed-size content-addressed objects and
// then its manifest (docs/OBJECTSTORE.md "Push").
//
// Which objects are read: on a first push, those the allocation map shows data in (every object
// of a volume over a base image, whose holes read through the base); later, only those the
// engine's diff from the newest snapshot of the volume already in the remote touches (plus the
// last object when the size changed). Every other index takes its parent's entry unread. An
// object read as all zeros is a hole. Each object read is hashed; its key is its SHA-256, so an
// object already stored (from another snapshot, another volume, or a killed push of this one)
// need not be uploaded again: that is also how a killed push resumes.
//
// Which objects are asked about (HEAD) before their PUT. A HEAD costs a round trip and a
// request of the store's CPU per object, as much as a small PUT. The push first lists the keys
// under objects/ (when that listing is short: at most `Limits.pushListingKeysPerObject` keys
// per object to push, so a fresh container costs one request, and a huge shared one is not
// listed at all). A key the listing shows is asked about, and skipped when the HEAD finds it;
// a key the listing does not show is uploaded without asking. Why that is safe:
//   - A skip is decided only by a HEAD, never by the listing alone: a listing may be stale (a
//     Swift container listing is updated after the object write), and a manifest must never
//     name an object that is not there.
//   - A listing that misses an object (stale, or another push stored it since) costs one
//     upload of bytes already stored, never data: a content key is only ever written with its
//     own bytes, so writing it again stores the same object.
//   - A gc cannot delete what the listing showed while this push runs: the push holds its
//     lease from before the listing to after its manifest (Lease.swift).
//   - Resume after kill -9: the killed push's objects are in the listing, asked about and
//     skipped; the manifest was never written, since it goes last. Without a listing (too
//     many keys) every object is asked about, as before.
// Within one push a key is sent once (`UploadWindow.claim`): equal objects are skipped.
//
// The pool is read on the calling thread, up to `Limits.pushReadAheadObjects` objects ahead of
// `Limits.objectStoreParallelRequestsMax` upload threads; each thread hashes its object (the
// whole object's SHA-256 and its part hashes in one walk) and sends it, and takes the next one
// as soon as it is done (a sliding window, UploadWindow.swift), so reading, hashing and
// uploading overlap and a slow PUT holds back one thread, not a batch. Memory stays bounded by
// the window: (8 + 2) objects, 80 MiB at the default object size. The manifest goes last, so
// the snapshot appears in the remote only once all its objects are there.
//
// Before the objects, the push reads the remote's manifests of the volume (is the snapshot
// there already, which parent to diff against) on a thread of its own while it writes and
// checks its lease: the two are independent, and doing them one after the other cost an
// incremental push four round trips in a row before its first PUT. The objects listing still
// comes after the lease (see above).

import Crypto
import Foundation
import NIOCore
import StrataCore
import Synchronization

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
public struct Pusher: Sendable {
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
        // What the remote holds of the volume does not depend on the lease: it is read on a
        // thread of its own while the lease is written and checked (a few round trips each).
        let catalog = RemoteCatalog(store: self.store)
        let read = Mutex<Result<RemoteState, StrataError>?>(nil)
        var lease = Lease(kind: .push, owner: self.owner, volume: volume)
        let pusher = self
        try ParallelThreads.run(count: 1, name: "strata-push-catalog") { _ in
            let state = Result { () throws(StrataError) -> RemoteState in
                try pusher.remoteState(snapshots: snapshots, target: target, manifestKey: manifestKey, catalog: catalog)
            }
            read.withLock { $0 = state }
        } alongside: { () throws(StrataError) in
            try lease.acquire(self.store)
        }
        let state: RemoteState
        do throws(StrataError) {
            guard let result = read.withLock({ $0 }) else { preconditionFailure("the catalog's thread ended without a result") }
            state = try result.get()
        } catch {
            _ = Result { () throws(StrataError) in try lease.release(self.store) }
            throw error
        }
        if let existing = state.existing {
            try lease.release(self.store)
            summary.upToDate = true
            summary.objects = existing.objects.count
            summary.holes = Int(existing.objectCount) - existing.objects.count
            return summary
        }
        let parent = state.parent
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

    /// What the remote holds of a push's volume: the target's own manifest when it is there
    /// already, else the parent to push against (nil: a full push).
    struct RemoteState: Sendable {
        var existing: Manifest?
        var parent: Manifest?
    }

    /// Reads the remote's manifests of the target's volume.
    /// - Throws: `.alreadyExists` when the remote holds another snapshot by the target's name;
    ///   the store's errors.
    private func remoteState(
        snapshots: [SnapshotInfo], target: SnapshotInfo, manifestKey: String, catalog: RemoteCatalog
    ) throws(StrataError) -> RemoteState {
        let stored = Set(try catalog.manifestKeys(volume: target.volume))
        if stored.contains(manifestKey) {
            let existing = try catalog.manifest(manifestKey)
            guard existing.guid == target.guid else {
                throw StrataError(
                    .alreadyExists,
                    "push \(target.volume)@\(target.name) to remote \(self.remote.name): the remote holds another snapshot by this name (guid=\(existing.guid), local guid=\(target.guid)); delete it with `strata remote delete \(self.remote.name) \(target.volume)@\(target.name)` or push under another name"
                )
            }
            return RemoteState(existing: existing, parent: nil)
        }
        return RemoteState(
            existing: nil, parent: try self.parentManifest(snapshots: snapshots, target: target, stored: stored, catalog: catalog))
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

    /// Reads, hashes and (when missing from the store) uploads the objects at `indices`: the
    /// pool is read on this thread, up to `Limits.pushReadAheadObjects` objects ahead of the
    /// `Limits.objectStoreParallelRequestsMax` upload threads, each of which hashes its object
    /// and sends it (UploadWindow.swift).
    private func upload(
        _ indices: [UInt64], handle: VolumeHandle, manifest: Manifest, lease: inout Lease, summary: inout PushSummary,
        fresh: inout [UInt64: ManifestEntry], progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) {
        let total = UInt64(indices.count)
        progress(0, total)
        guard !indices.isEmpty else { return }
        let listed = try self.storedKeys(candidates: indices.count)
        let threads = min(Limits.objectStoreParallelRequestsMax, indices.count)
        let window = UploadWindow(capacity: threads + Limits.pushReadAheadObjects)
        let store = self.store
        let partSize = manifest.partSizeBytes ?? Limits.manifestPartBytes
        try ParallelThreads.run(count: threads, name: "strata-push") { _ in
            while let object = window.take() {
                do throws(StrataError) {
                    window.finish(object.index, try Self.send(object, store: store, listed: listed, partSize: partSize, window: window))
                } catch {
                    window.fail(error)
                }
            }
        } alongside: { () throws(StrataError) in
            // Closing wakes the upload threads to return, whether reading ends or throws.
            defer { window.close(threads: threads) }
            for index in indices {
                progress(UInt64(window.finished), total)
                guard window.reserve() else { return }
                let body: ByteBuffer
                do throws(StrataError) {
                    body = try self.read(handle, index: index, manifest: manifest)
                    try lease.refresh(self.store)
                } catch {
                    window.unreserve()
                    throw error
                }
                guard window.submit(PendingObject(index: index, body: body)) else { return }
            }
        }
        if let failure = window.failure { throw failure }
        for (index, outcome) in window.outcomes {
            switch outcome {
            case .hole:
                break
            case .uploaded(let entry):
                fresh[index] = entry
                summary.objectsUploaded += 1
                summary.bytesUploaded += entry.bytes
            case .skipped(let entry):
                fresh[index] = entry
                summary.objectsSkipped += 1
                summary.bytesSkipped += entry.bytes
            }
        }
        progress(total, total)
    }

    /// Object `index` of the snapshot, read into a new buffer.
    /// - Throws: the pool's errors.
    private func read(_ handle: VolumeHandle, index: UInt64, manifest: Manifest) throws(StrataError) -> ByteBuffer {
        let length = Int(manifest.length(ofObject: index))
        var body = ByteBufferAllocator().buffer(capacity: length)
        var failure: StrataError?
        body.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            do throws(StrataError) {
                try self.pool.read(
                    handle, at: index * manifest.objectSizeBytes,
                    into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<length]))
            } catch {
                failure = error
            }
            return length
        }
        if let failure { throw failure }
        return body
    }

    /// The keys under `objects/` when listing them costs less than the HEADs it saves (at most
    /// `Limits.pushListingKeysPerObject` keys per object to push); nil when there are more.
    /// - Throws: the store's errors.
    private func storedKeys(candidates: Int) throws(StrataError) -> Set<String>? {
        let store = self.store
        let keysMax = candidates * Limits.pushListingKeysPerObject
        return try Blocking.run { () throws(StrataError) -> Set<String>? in
            var keys = Set<String>()
            var marker: String?
            repeat {
                let page = try await store.list(prefix: RemoteLayout.objectPrefix, after: marker)
                keys.formUnion(page.objects.map(\.key))
                guard keys.count <= keysMax else { return nil }
                marker = page.next
            } while marker != nil
            return keys
        }
    }

    /// Hashes `object` and sends it unless it is all zeros, this push already claimed its key, or
    /// the store holds it. The store is asked (HEAD) only about keys `listed` shows or when there
    /// is no listing: a key absent from a listing is sent without asking (see the file's header).
    /// - Throws: the store's errors.
    private static func send(
        _ object: PendingObject, store: any ObjectStore, listed: Set<String>?, partSize: UInt64, window: UploadWindow
    ) throws(StrataError) -> UploadOutcome {
        let body = object.body
        guard !body.withUnsafeReadableBytes({ Zeros.all($0) }) else { return .hole }
        let (sha256, parts) = body.withUnsafeReadableBytes { Manifest.hashes($0, partSize: partSize) }
        let entry = ManifestEntry(index: object.index, sha256: sha256, bytes: UInt64(body.readableBytes), parts: parts)
        guard window.claim(entry.key) else { return .skipped(entry) }
        let ask = listed.map { $0.contains(entry.key) } ?? true
        return try Blocking.run { () throws(StrataError) -> UploadOutcome in
            if ask, let existing = try await store.head(entry.key), existing.sizeBytes == entry.bytes {
                return .skipped(entry)
            }
            try await store.put(entry.key, body: body, sha256: entry.sha256)
            return .uploaded(entry)
        }
    }
}
