// A snapshot in a remote as a volume's base image (docs/OBJECTSTORE.md "Phase 2"): what
// `volume create NEW --from REMOTE:VOL@SNAP` reads through, so NEW is usable at once and its
// data arrives as it is read.
//
// `allocation` answers from the manifest alone: an object with no entry is a hole and reads
// as zeros without a request. A read of an object that is neither cached nor being fetched,
// when the manifest has part hashes (version 2), GETs only the 256 KiB parts it covers and
// verifies each against its part hash before use: the first read waits for a small request,
// not a whole object; the engine then stores the whole object (fill-on-read, which the daemon
// defers until after the reply). That holds while few such reads are in progress (at most
// `Limits.remoteBaseRangedReadsMax`, counting this one): a burst of reads (a guest reading at
// depth 8) takes whole objects instead, each fetched once and joined by every read of it, since
// a ranged GET per read plus the whole object after it cost the store more requests and bytes
// than the whole objects alone (a 64 MiB boot-like read made ~1 ranged GET per 2 reads on top of
// every whole object; Swift spends ~2.5 ms of CPU per request), and on a 2-core machine the
// store's CPU is the reads' bottleneck. Otherwise `read` takes each object it covers from the fetch table
// (ObjectFetchTable.swift: one fetch per object at a time, a bounded cache), which GETs the
// whole object into an `ObjectBytes` (ObjectBytes.swift) that every reader of the object gets
// at once: each part is checked against its part hash as soon as it is in (an object of a
// version 1 manifest, against the object's SHA-256 once whole), a read waits only until the
// parts it covers are checked, and its length must be the manifest's. No byte is used before
// the SHA-256 that covers it matched: every byte of an object with part hashes is covered by
// one, so its whole-object hash is not computed again (that would hash every byte twice); a
// mismatch is an error naming the object (and part), never data. A store that cannot be
// reached fails only reads of objects not cached (and not yet filled into the volume by the
// engine), with one log line naming the object; the next read tries again.
//
// Opening reads and verifies the manifest; reopening (after a daemon restart) also checks that
// its bytes hash to the SHA-256 recorded at creation, so a manifest deleted and pushed again
// under the same name is refused rather than read as the same base.
//
// Calls arrive on thread-pool threads (the engine is synchronous); the network work goes
// through `Blocking` (Blocking.swift): `run` for ranged GETs and the manifest, `start` for a
// whole object, whose readers wait on the object itself.

import Crypto
import Foundation
import Logging
import NIOCore
import StrataCore
import Synchronization

/// A read-only base image backed by a remote snapshot's manifest and objects.
public final class RemoteBase: BaseImage {
    /// What the pool records about this base.
    public let reference: RemoteBaseReference
    public let manifest: Manifest
    private let store: any ObjectStore
    private let entries: [UInt64: ManifestEntry]
    /// Objects arriving or fetched, checked part by part; `fetches` counts GETs of whole objects.
    public let objects: ObjectFetchTable<ObjectBytes>
    private let logger = Logger(label: "strata.remote-base")
    private let fetched = Atomic<UInt64>(0)
    private let rangedFetches = Atomic<Int>(0)
    /// Reads of less than half an object in progress (`read`), for the ranged-or-whole choice.
    private let smallReads = Atomic<Int>(0)

    /// Ranged GETs of parts served so far (reads of never-fetched ranges).
    public var partFetches: Int { self.rangedFetches.load(ordering: .relaxed) }

    /// Bytes of verified objects fetched from the store since this base was opened.
    public var bytesFetched: UInt64 { self.fetched.load(ordering: .relaxed) }

    /// A base over `manifest` read from `store`, which it owns (and shuts down when released).
    public init(reference: RemoteBaseReference, manifest: Manifest, store: any ObjectStore, cacheObjects: Int) {
        self.reference = reference
        self.manifest = manifest
        self.store = store
        self.entries = Dictionary(uniqueKeysWithValues: manifest.objects.map { ($0.index, $0) })
        self.objects = ObjectFetchTable(capacity: cacheObjects)
    }

    deinit {
        // The store's HTTP client must be shut down before it is released; the task holds it
        // until then. Nothing waits for it: no request of this base is in flight any more.
        let store = self.store
        Task.detached { await store.shutdown() }
    }

    /// Opens `VOL@SNAP` in `remote`. With `expectedSHA256` (a reopen), the manifest's bytes
    /// must hash to it.
    /// - Throws: the store's errors naming the manifest; `.corrupt` for an unreadable manifest;
    ///   `.failed` when the manifest changed since the volume was created.
    public static func open(
        remote: RemoteConfig, volume: String, snapshot: String, expectedSHA256: String?
    ) throws(StrataError) -> RemoteBase {
        let key = RemoteLayout.manifestKey(volume: volume, snapshot: snapshot)
        let store = try remote.open()
        let outcome = Result { () throws(StrataError) -> RemoteBase in
            let bytes = try Blocking.run { () throws(StrataError) in try await store.get(key, range: nil) }
            let data = Data(bytes.readableBytesView)
            let digest = SigV4Signer.hex(SHA256.hash(data: data))
            if let expectedSHA256, digest != expectedSHA256 {
                throw StrataError(
                    .failed,
                    "open remote base \(remote.name):\(volume)@\(snapshot): manifest \(key) changed since the volume was created (recorded sha256=\(expectedSHA256) now=\(digest)); the snapshot was deleted and pushed again"
                )
            }
            let manifest = try Manifest.decode(data, key: key)
            let reference = RemoteBaseReference(
                remote: remote.name, volume: volume, snapshot: snapshot, manifestKey: key, manifestSHA256: digest)
            return RemoteBase(
                reference: reference, manifest: manifest, store: store, cacheObjects: Limits.remoteBaseCachedObjects)
        }
        if case .failure = outcome {
            let done = DispatchSemaphore(value: 0)
            Task.detached {
                await store.shutdown()
                done.signal()
            }
            done.wait()
        }
        return try outcome.get()
    }

    /// Opens the base a pool recorded, with the remote from the pool's remotes.json.
    /// - Throws: as `open`, and `.notFound` when the remote was removed.
    public static func reopen(_ reference: RemoteBaseReference, remotes: RemoteTable) throws(StrataError) -> RemoteBase {
        try Self.open(
            remote: try remotes.remote(reference.remote), volume: reference.volume, snapshot: reference.snapshot,
            expectedSHA256: reference.manifestSHA256)
    }

    public var virtualSize: UInt64 { self.manifest.sizeBytes }

    /// One object: a read that fetched it has the engine store all of it into the volume.
    public var fillUnitBytes: UInt64? { self.manifest.objectSizeBytes }

    public var layers: [BaseLayer] {
        [BaseLayer(path: self.reference.label, format: "remote", virtualSize: self.manifest.sizeBytes)]
    }

    public func allocation(at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        self.manifest.allocation(at: offset, length: length)
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
        let objectSize = self.manifest.objectSizeBytes
        // A burst of small reads (a guest reading at depth 8) fetches whole objects; a lone
        // one (or two) is served from a ranged GET (see the file's header).
        let small = UInt64(buffer.count) * 2 < objectSize
        var ranged = true
        if small {
            ranged = self.smallReads.wrappingAdd(1, ordering: .relaxed).newValue <= Limits.remoteBaseRangedReadsMax
        }
        defer { if small { self.smallReads.wrappingSubtract(1, ordering: .relaxed) } }
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let inside = position % objectSize
            let count = Int(min(UInt64(buffer.count - done), objectSize - inside))
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
            if let entry = self.entries[position / objectSize] {
                if ranged, try self.readParts(entry, inside: inside, into: target) {
                    done += count
                    continue
                }
                let object = self.object(entry)
                // The last object may be short; bytes past the volume's end read as zeros.
                let available = max(0, min(count, object.count - Int(inside)))
                if available > 0 {
                    try object.withBytes(Int(inside)..<(Int(inside) + available)) { source throws(StrataError) in
                        target.copyMemory(from: source)
                    }
                }
                if available < count {
                    UnsafeMutableRawBufferPointer(rebasing: target[available...]).initializeMemory(as: UInt8.self, repeating: 0)
                }
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += count
        }
    }

    /// Lends the fetched object's own bytes when the range lies inside one object that holds
    /// them all (a fill of a whole object: no copy); otherwise reads into `scratch` as `read` does.
    public func withBytes<T>(
        at offset: UInt64, length: Int, scratch: inout [UInt8],
        _ body: (UnsafeRawBufferPointer) throws(StrataError) -> T
    ) throws(StrataError) -> T {
        let objectSize = self.manifest.objectSizeBytes
        let inside = Int(offset % objectSize)
        guard length > 0, UInt64(inside + length) <= objectSize, let entry = self.entries[offset / objectSize],
            UInt64(inside + length) <= entry.bytes
        else { return try self.readCopy(at: offset, length: length, scratch: &scratch, body) }
        return try self.object(entry).withBytes(inside..<(inside + length), body)
    }

    /// `entry`'s object: cached, arriving, or its fetch started now (one GET of the whole object,
    /// its bytes checked part by part as they arrive, ObjectBytes.swift). Returns at once; the
    /// caller waits on the object for the bytes it needs (`ObjectBytes.withBytes`).
    public func object(_ entry: ManifestEntry) -> ObjectBytes {
        let label = "read \(self.reference.label) object \(entry.index) (\(entry.key)) on \(self.store.label)"
        return self.objects.arriving(entry.index) {
            ObjectBytes(entry, partSize: self.manifest.partSizeBytes, label: label)
        } start: { object, ended in
            let store = self.store
            Blocking.start {
                do throws(StrataError) {
                    try await store.get(entry.key, into: object)
                    self.fetched.wrappingAdd(UInt64(object.count), ordering: .relaxed)
                    ended(true)
                } catch {
                    // Dropped from the table before its readers hear of it: the next read fetches again.
                    ended(false)
                    object.fail(with: error)
                    self.logger.error("read \(self.reference.label) object \(entry.index) (\(entry.key)): \(error.message)")
                }
            }
        }
    }

    /// Serves [inside, inside + target.count) of `entry`'s object from one ranged GET of the
    /// parts it covers, each verified against the manifest's part hash before any byte is used.
    /// Returns false, serving nothing, when the whole object should be read instead: the
    /// manifest has no part hashes for it (version 1), the object is cached or being fetched
    /// (join that fetch: never two at once), or the parts would be half the object or more.
    /// - Throws: the store's error or `.corrupt`, both naming the object (and the part).
    private func readParts(
        _ entry: ManifestEntry, inside: UInt64, into target: UnsafeMutableRawBufferPointer
    ) throws(StrataError) -> Bool {
        guard let parts = entry.parts, let partSize = self.manifest.partSizeBytes, !self.objects.holds(entry.index)
        else { return false }
        let end = min(inside + UInt64(target.count), entry.bytes)
        guard end > inside else { return false }
        let first = inside / partSize
        let range = (first * partSize)..<min(((end - 1) / partSize + 1) * partSize, entry.bytes)
        guard (range.upperBound - range.lowerBound) * 2 < entry.bytes else { return false }
        let store = self.store
        let outcome = Result { () throws(StrataError) -> [UInt8] in
            let body = try Blocking.run { () throws(StrataError) in try await store.get(entry.key, range: range) }
            let bytes = Array(body.readableBytesView)
            try self.verifyParts(bytes, entry, parts: parts, first: Int(first), partSize: Int(partSize), range: range)
            return bytes
        }
        if case .failure(let error) = outcome {
            self.logger.error("read \(self.reference.label) object \(entry.index) (\(entry.key)): \(error.message)")
        }
        let bytes = try outcome.get()
        self.fetched.wrappingAdd(UInt64(bytes.count), ordering: .relaxed)
        self.rangedFetches.wrappingAdd(1, ordering: .relaxed)
        let used = Int(end - inside)
        let from = Int(inside - range.lowerBound)
        bytes.withUnsafeBytes { source in
            UnsafeMutableRawBufferPointer(rebasing: target[0..<used])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[from..<(from + used)]))
        }
        if used < target.count {
            UnsafeMutableRawBufferPointer(rebasing: target[used...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        return true
    }

    /// Throws unless `bytes` are exactly the parts of `entry` in `range`, part `first` onwards.
    private func verifyParts(
        _ bytes: [UInt8], _ entry: ManifestEntry, parts: [String], first: Int, partSize: Int, range: Range<UInt64>
    ) throws(StrataError) {
        let label = "read \(self.reference.label) object \(entry.index) (\(entry.key)) on \(self.store.label)"
        guard UInt64(bytes.count) == range.upperBound - range.lowerBound else {
            throw StrataError(
                .corrupt,
                "\(label): the store returned \(bytes.count) bytes for range \(range.lowerBound)-\(range.upperBound - 1), expected \(range.upperBound - range.lowerBound); the object is damaged: push the snapshot again from a pool that holds it"
            )
        }
        for (number, start) in stride(from: 0, to: bytes.count, by: partSize).enumerated() {
            let digest = SigV4Signer.hex(SHA256.hash(data: bytes[start..<min(start + partSize, bytes.count)]))
            let expected = parts[first + number]
            guard digest == expected else {
                throw StrataError(
                    .corrupt,
                    "\(label) part \(first + number): SHA-256 mismatch (expected=\(expected) actual=\(digest)); the object is damaged: push the snapshot again from a pool that holds it"
                )
            }
        }
    }
}

extension Manifest {
    /// The extents of [offset, offset + length) in order, merged, covering the whole range:
    /// mapped where an object holds data, unmapped over holes and past the end.
    public func allocation(at offset: UInt64, length: UInt64) -> [MappingExtent] {
        var result: [MappingExtent] = []
        func add(_ start: UInt64, _ count: UInt64, _ mapped: Bool) {
            guard count > 0 else { return }
            if let last = result.last, last.mapped == mapped, last.offset + last.length == start {
                result[result.count - 1] = MappingExtent(offset: last.offset, length: last.length + count, mapped: mapped)
            } else {
                result.append(MappingExtent(offset: start, length: count, mapped: mapped))
            }
        }
        let end = offset + length
        var position = offset
        // Binary search for the first entry that can overlap the range.
        var low = 0
        var high = self.objects.count
        let firstIndex = offset / self.objectSizeBytes
        while low < high {
            let middle = (low + high) / 2
            if self.objects[middle].index < firstIndex { low = middle + 1 } else { high = middle }
        }
        var next = low
        while position < end {
            guard next < self.objects.count else {
                add(position, end - position, false)
                break
            }
            let entry = self.objects[next]
            let start = entry.index * self.objectSizeBytes
            let stop = start + entry.bytes
            if start >= end {
                add(position, end - position, false)
                break
            }
            if start > position { add(position, start - position, false) }
            let from = max(position, start)
            let to = min(end, stop)
            add(from, to - from, true)
            position = max(position, to)
            next += 1
        }
        return result
    }
}
