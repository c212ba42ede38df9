// The push pipeline without a network (Push.swift, UploadWindow.swift): which objects are asked
// about before their PUT, which are sent, and what a failure leaves behind. A store in memory
// counts every request; a pool on a simulated device holds a 10 MiB volume in 1 MiB objects.
//
// The story behind these tests: a push used to HEAD every object and wait for a whole batch of
// eight before reading the next, which made it half the speed of a plain client. It now lists
// the container once, sends what the listing does not show without asking, asks about what it
// shows, and keeps eight uploads in flight. These tests pin the rules that keep that correct:
// a fresh container costs no HEAD, a resumed push asks about exactly what the killed one
// stored and skips it, a listing too long to be worth reading falls back to a HEAD per object,
// equal objects are sent once, and a failed PUT stops the push with no manifest written.

import Crypto
import Foundation
import NIOCore
import StrataCore
import StrataObjectStore
import StrataTesting
import Synchronization
import Testing

/// An object store in memory that counts requests and can fail PUTs after a number of them.
final class CountingStore: ObjectStore {
    struct Counts {
        var heads = 0
        var puts = 0
        var lists = 0
    }

    let objects = Mutex<[String: [UInt8]]>([:])
    let counts = Mutex(Counts())
    /// PUTs of objects/ that succeed before every further one fails; nil never fails.
    let putsBeforeFailure: Int?
    /// Keys one listing page returns.
    let pageSize: Int

    init(putsBeforeFailure: Int? = nil, pageSize: Int = 1000) {
        self.putsBeforeFailure = putsBeforeFailure
        self.pageSize = pageSize
    }

    var label: String { "remote counting" }
    func checkContainer() async throws(StrataError) {}
    func createContainer() async throws(StrataError) {}
    func put(_ key: String, body: ByteBuffer, sha256: String) async throws(StrataError) {
        let refused = self.counts.withLock { counts -> Bool in
            guard key.hasPrefix(RemoteLayout.objectPrefix) else { return false }
            counts.puts += 1
            return self.putsBeforeFailure.map { counts.puts > $0 } ?? false
        }
        if refused { throw StrataError(.io, "put \(key) on \(self.label): status=503") }
        self.objects.withLock { $0[key] = Array(body.readableBytesView) }
    }
    func get(_ key: String, range: Range<UInt64>?) async throws(StrataError) -> ByteBuffer {
        guard let bytes = self.objects.withLock({ $0[key] }) else {
            throw StrataError(.notFound, "get \(key) on \(self.label): no such object")
        }
        return ByteBuffer(bytes: bytes)
    }
    func head(_ key: String) async throws(StrataError) -> ObjectInfo? {
        if key.hasPrefix(RemoteLayout.objectPrefix) { self.counts.withLock { $0.heads += 1 } }
        return self.objects.withLock { $0[key] }.map { ObjectInfo(key: key, sizeBytes: UInt64($0.count), lastModified: Date()) }
    }
    func delete(_ key: String) async throws(StrataError) { self.objects.withLock { $0[key] = nil } }
    func list(prefix: String, after marker: String?) async throws(StrataError) -> ObjectListing {
        if prefix == RemoteLayout.objectPrefix { self.counts.withLock { $0.lists += 1 } }
        let keys = self.objects.withLock { objects in
            objects.filter { entry in entry.key.hasPrefix(prefix) && (marker.map { entry.key > $0 } ?? true) }
                .sorted { $0.key < $1.key }.prefix(self.pageSize).map { ($0.key, $0.value.count) }
        }
        let infos = keys.map { ObjectInfo(key: $0.0, sizeBytes: UInt64($0.1), lastModified: Date()) }
        return ObjectListing(objects: infos, next: infos.count == self.pageSize ? infos.last?.key : nil)
    }
    func shutdown() async {}

    var objectKeys: [String] { self.objects.withLock { $0.keys.filter { $0.hasPrefix(RemoteLayout.objectPrefix) } } }
}

@Suite struct PushTests {
    static let MiB: UInt64 = 1 << 20

    /// A pool holding vm1@s1: 10 MiB in 1 MiB objects, object 3 never written (a hole), objects
    /// 5 and 7 equal, the others distinct: 8 distinct objects to store, 9 manifest entries.
    static func pool() throws -> Pool {
        let device = SimDevice(size: 2048 * 4096 + 4096 * 4096)
        try Pool.format(device: device, chunkSize: 4096, metadataPages: 2048)
        let pool = try Pool(device: device)
        try pool.createVolume("vm1", size: 10 * Self.MiB)
        let handle = try pool.handle("vm1")
        for object in [0, 1, 2, 4, 5, 6, 7, 8, 9] as [UInt64] {
            let fill = UInt8(object == 7 ? 5 : object + 1)
            try pool.write(handle, at: object * Self.MiB, [UInt8](repeating: fill, count: Int(Self.MiB)))
        }
        try pool.createSnapshot("vm1", "s1")
        return pool
    }

    static func push(_ pool: Pool, _ store: CountingStore) async throws -> PushSummary {
        let remote = RemoteConfig(
            name: "r1", kind: .swift, endpoint: "http://127.0.0.1:1/auth/v1.0", container: "c", user: "u", secret: "k",
            region: nil, objectSizeBytes: Self.MiB)
        return try await onThread {
            try Pusher(pool: pool, remote: remote, store: store, owner: "test:pool").push(volume: "vm1", snapshot: "s1") { _, _ in }
        }
    }

    @Test func aFreshContainerIsListedOnceAndAskedNothing() async throws {
        let store = CountingStore()
        let summary = try await Self.push(try Self.pool(), store)
        let counts = store.counts.withLock { $0 }
        #expect(counts.heads == 0)
        #expect(counts.lists == 1)
        #expect(counts.puts == 8)
        #expect(summary.objectsUploaded == 8)
        #expect(summary.objectsSkipped == 1, "object 7 equals object 5: sent once")
        #expect(summary.objects == 9)
        #expect(summary.holes == 1)
        #expect(store.objectKeys.count == 8)
        let manifest = try Manifest.decode(Data(try #require(store.objects.withLock { $0[summary.manifest] })), key: summary.manifest)
        #expect(manifest.objects.map(\.index) == [0, 1, 2, 4, 5, 6, 7, 8, 9])
        for entry in manifest.objects {
            let bytes = try #require(store.objects.withLock { $0[entry.key] })
            #expect(SigV4Hex.of(SHA256.hash(data: bytes)) == entry.sha256)
            #expect(bytes.allSatisfy { $0 == UInt8(entry.index == 7 ? 5 : entry.index + 1) })
            #expect(entry.parts == Manifest.partHashes(bytes, partSize: Limits.manifestPartBytes))
        }
    }

    /// The remote's manifests are read while the lease is written: a push of a snapshot the
    /// remote holds already, and one refused for a name the remote holds with another guid,
    /// each release the lease they wrote meanwhile.
    @Test func aPushThatEndsBeforeItsObjectsLeavesNoLease() async throws {
        let store = CountingStore()
        let pool = try Self.pool()
        _ = try await Self.push(pool, store)
        let leases = { store.objects.withLock { $0.keys.filter { $0.hasPrefix(RemoteLayout.leasePrefix) } } }
        #expect(leases().isEmpty)
        let again = try await Self.push(pool, store)
        #expect(again.upToDate)
        #expect(leases().isEmpty)
        // Another pool's vm1@s1 has another guid: refused, by name.
        await #expect(throws: StrataError.self) { try await Self.push(try Self.pool(), store) }
        #expect(leases().isEmpty)
        #expect(store.counts.withLock { $0.puts } == 8, "nothing uploaded after the first push")
    }

    @Test func aFailedPutStopsThePushAndTheNextOneResumes() async throws {
        let pool = try Self.pool()
        let failing = CountingStore(putsBeforeFailure: 3)
        await #expect(throws: StrataError.self) { try await Self.push(pool, failing) }
        #expect(failing.objects.withLock { $0.keys.filter { $0.hasPrefix("manifests/") } }.isEmpty)
        let stored = failing.objectKeys
        #expect(stored.count == 3)

        // The next push, against what the failed one left, asks about exactly those and skips them.
        let store = CountingStore()
        store.objects.withLock { objects in
            for key in stored { objects[key] = failing.objects.withLock { $0[key] } }
        }
        let summary = try await Self.push(pool, store)
        let counts = store.counts.withLock { $0 }
        #expect(counts.heads == 3)
        #expect(counts.puts == 5)
        #expect(summary.objectsUploaded == 5)
        #expect(summary.objectsSkipped == 4, "three stored before, and object 7 equal to object 5")
        #expect(store.objectKeys.count == 8)
    }

    @Test func aLongListingIsNotReadAndEveryObjectIsAskedAbout() async throws {
        // More keys than the listing budget of the 9 objects to push: one page, then HEADs.
        let store = CountingStore(pageSize: 100)
        store.objects.withLock { objects in
            for number in 0..<(9 * Limits.pushListingKeysPerObject + 1) {
                objects[RemoteLayout.objectPrefix + String(format: "%064x", number)] = [1]
            }
        }
        let summary = try await Self.push(try Self.pool(), store)
        let counts = store.counts.withLock { $0 }
        #expect(counts.lists == (9 * Limits.pushListingKeysPerObject) / 100 + 1)
        #expect(counts.heads == 8)
        #expect(counts.puts == 8)
        #expect(summary.objectsUploaded == 8)
    }
}

/// Lower-case hex, as the manifest writes digests.
enum SigV4Hex {
    static func of<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
