// The remote base's pieces without a network: allocation answered from the manifest alone
// (holes cost no request), the in-flight table (one fetch per object however many readers
// wait, a failed fetch retried by the next read, a bounded cache), and reads through an
// in-memory store that count GETs and refuse an object whose bytes do not match the manifest.

import Crypto
import Dispatch
import Foundation
import NIOCore
import StrataCore
import StrataObjectStore
import Synchronization
import Testing

/// An object store in memory that counts GETs per key.
final class MemoryStore: ObjectStore {
    let objects = Mutex<[String: [UInt8]]>([:])
    let gets = Mutex<[String: Int]>([:])
    let failing = Atomic<Bool>(false)

    var label: String { "remote memory" }
    func checkContainer() async throws(StrataError) {}
    func createContainer() async throws(StrataError) {}
    func put(_ key: String, body: ByteBuffer, sha256: String) async throws(StrataError) {
        self.objects.withLock { $0[key] = Array(body.readableBytesView) }
    }
    func get(_ key: String, range: Range<UInt64>?) async throws(StrataError) -> ByteBuffer {
        self.gets.withLock { $0[key, default: 0] += 1 }
        guard !self.failing.load(ordering: .relaxed) else {
            throw StrataError(.io, "get \(key) on \(self.label): no answer")
        }
        guard let bytes = self.objects.withLock({ $0[key] }) else {
            throw StrataError(.notFound, "get \(key) on \(self.label): no such object")
        }
        return ByteBuffer(bytes: bytes)
    }
    func head(_ key: String) async throws(StrataError) -> ObjectInfo? { nil }
    func delete(_ key: String) async throws(StrataError) { self.objects.withLock { $0[key] = nil } }
    func list(prefix: String, after marker: String?) async throws(StrataError) -> ObjectListing {
        ObjectListing(objects: [], next: nil)
    }
    func shutdown() async {}

    var totalGets: Int { self.gets.withLock { $0.values.reduce(0, +) } }
}

/// Runs `body` on a thread outside Swift concurrency's pool, as the engine's callers are
/// (Blocking.run must never wait on a cooperative thread).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// 4 KiB read from `base` at `offset`, or the error.
func readResult(_ base: RemoteBase, at offset: UInt64) -> Result<[UInt8], StrataError> {
    var bytes = [UInt8](repeating: 0, count: 4096)
    var failure: StrataError?
    bytes.withUnsafeMutableBytes { buffer in
        do throws(StrataError) { try base.read(at: offset, into: buffer) } catch { failure = error }
    }
    if let failure { return .failure(failure) }
    return .success(bytes)
}

@Suite struct RemoteBaseTests {
    static let MiB: UInt64 = 1 << 20

    static func sha(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    /// A 20 MiB volume in 8 MiB objects: object 0 full of 0x11, object 1 a hole, object 2
    /// (4 MiB, the last) full of 0x22. Returns the manifest and a store holding its objects.
    static func fixture() -> (Manifest, MemoryStore) {
        let first = [UInt8](repeating: 0x11, count: Int(8 * Self.MiB))
        let last = [UInt8](repeating: 0x22, count: Int(4 * Self.MiB))
        let manifest = Manifest(
            volume: "vm1", snapshot: "s1", guid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", createdAt: "2026-01-01T00:00:00Z",
            sizeBytes: 20 * Self.MiB, objectSizeBytes: 8 * Self.MiB, parent: nil,
            objects: [
                ManifestEntry(index: 0, sha256: Self.sha(first), bytes: 8 * Self.MiB),
                ManifestEntry(index: 2, sha256: Self.sha(last), bytes: 4 * Self.MiB),
            ])
        let store = MemoryStore()
        store.objects.withLock {
            $0[manifest.objects[0].key] = first
            $0[manifest.objects[1].key] = last
        }
        return (manifest, store)
    }

    static func base(_ manifest: Manifest, _ store: MemoryStore, cache: Int = 4) -> RemoteBase {
        RemoteBase(
            reference: RemoteBaseReference(
                remote: "r1", volume: "vm1", snapshot: "s1", manifestKey: "manifests/vm1/s1", manifestSHA256: "00"),
            manifest: manifest, store: store, cacheObjects: cache)
    }

    @Test func allocationComesFromTheManifest() {
        let (manifest, _) = Self.fixture()
        let MiB = Self.MiB
        #expect(
            manifest.allocation(at: 0, length: 20 * MiB) == [
                MappingExtent(offset: 0, length: 8 * MiB, mapped: true),
                MappingExtent(offset: 8 * MiB, length: 8 * MiB, mapped: false),
                MappingExtent(offset: 16 * MiB, length: 4 * MiB, mapped: true),
            ])
        #expect(
            manifest.allocation(at: 4 * MiB, length: 8 * MiB) == [
                MappingExtent(offset: 4 * MiB, length: 4 * MiB, mapped: true),
                MappingExtent(offset: 8 * MiB, length: 4 * MiB, mapped: false),
            ])
        #expect(manifest.allocation(at: 9 * MiB, length: MiB) == [MappingExtent(offset: 9 * MiB, length: MiB, mapped: false)])
        // Past the end reads as zeros: unmapped.
        #expect(
            manifest.allocation(at: 18 * MiB, length: 10 * MiB) == [
                MappingExtent(offset: 18 * MiB, length: 2 * MiB, mapped: true),
                MappingExtent(offset: 20 * MiB, length: 8 * MiB, mapped: false),
            ])
        // Two adjacent data objects merge into one extent.
        let dense = Manifest(
            volume: "vm1", snapshot: "s1", guid: manifest.guid, createdAt: manifest.createdAt, sizeBytes: 16 * MiB,
            objectSizeBytes: 8 * MiB, parent: nil,
            objects: [
                ManifestEntry(index: 0, sha256: Self.sha([1]), bytes: 8 * MiB),
                ManifestEntry(index: 1, sha256: Self.sha([2]), bytes: 8 * MiB),
            ])
        #expect(dense.allocation(at: MiB, length: 14 * MiB) == [MappingExtent(offset: MiB, length: 14 * MiB, mapped: true)])
    }

    @Test func holesCostNoRequest() async throws {
        let (manifest, store) = Self.fixture()
        let base = Self.base(manifest, store)
        let bytes = try await onThread { () throws -> [UInt8] in
            var bytes = [UInt8](repeating: 0xff, count: Int(Self.MiB))
            try bytes.withUnsafeMutableBytes { try base.read(at: 9 * Self.MiB, into: $0) }
            _ = try base.allocation(at: 0, length: 20 * Self.MiB)
            return bytes
        }
        #expect(bytes.allSatisfy { $0 == 0 })
        #expect(store.totalGets == 0)
    }

    @Test func readsFetchOnlyTheCoveringObjectsOnce() async throws {
        let (manifest, store) = Self.fixture()
        let base = Self.base(manifest, store)
        // 1 MiB across the end of object 0 and the hole; then again; then across 2's end.
        let (first, again, tail) = try await onThread { () throws -> ([UInt8], [UInt8], [UInt8]) in
            var first = [UInt8](repeating: 0, count: Int(Self.MiB))
            try first.withUnsafeMutableBytes { try base.read(at: 7 * Self.MiB + Self.MiB / 2, into: $0) }
            var again = first
            try again.withUnsafeMutableBytes { try base.read(at: 7 * Self.MiB + Self.MiB / 2, into: $0) }
            var tail = [UInt8](repeating: 0xff, count: Int(2 * Self.MiB))
            try tail.withUnsafeMutableBytes { try base.read(at: 19 * Self.MiB, into: $0) }
            return (first, again, tail)
        }
        let half = Int(Self.MiB / 2)
        #expect(first[..<half].allSatisfy { $0 == 0x11 })
        #expect(first[half...].allSatisfy { $0 == 0 })
        #expect(again == first)
        #expect(tail[..<Int(Self.MiB)].allSatisfy { $0 == 0x22 })
        #expect(tail[Int(Self.MiB)...].allSatisfy { $0 == 0 })
        #expect(store.gets.withLock { $0 } == [manifest.objects[0].key: 1, manifest.objects[1].key: 1])
        #expect(base.objects.fetches == 2)
    }

    /// A fill's whole-object read borrows the fetched object's bytes (one GET, no copy into the
    /// scratch buffer); a range the object cannot cover alone (past the last object's end, or
    /// across a hole) is read into the scratch buffer as `read` gives it.
    @Test func withBytesLendsAFetchedObjectAndCopiesOtherwise() async throws {
        let (manifest, store) = Self.fixture()
        let base = Self.base(manifest, store)
        let MiB = Self.MiB
        let (whole, scratchAfterWhole, tail, hole) = try await onThread {
            () throws -> ([UInt8], Int, [UInt8], [UInt8]) in
            var scratch: [UInt8] = []
            let whole = try base.withBytes(at: 0, length: Int(8 * MiB), scratch: &scratch) { Array($0) }
            let scratchAfterWhole = scratch.count
            // Object 2 holds 4 MiB: 6 MiB from its start runs past the volume's end into zeros.
            let tail = try base.withBytes(at: 16 * MiB, length: Int(6 * MiB), scratch: &scratch) { Array($0) }
            let hole = try base.withBytes(at: 8 * MiB, length: Int(MiB), scratch: &scratch) { Array($0) }
            return (whole, scratchAfterWhole, tail, hole)
        }
        #expect(whole.count == Int(8 * MiB) && whole.allSatisfy { $0 == 0x11 })
        #expect(scratchAfterWhole == 0)
        #expect(tail.count == Int(6 * MiB))
        #expect(tail[..<Int(4 * MiB)].allSatisfy { $0 == 0x22 } && tail[Int(4 * MiB)...].allSatisfy { $0 == 0 })
        #expect(hole.count == Int(MiB) && hole.allSatisfy { $0 == 0 })
        #expect(store.gets.withLock { $0 } == [manifest.objects[0].key: 1, manifest.objects[1].key: 1])
    }

    @Test func aDamagedObjectIsAnErrorNamingItNeverData() async throws {
        let (manifest, store) = Self.fixture()
        let key = manifest.objects[0].key
        store.objects.withLock { $0[key]![4096] ^= 0xff }
        let base = Self.base(manifest, store)
        let outcome = try await onThread { readResult(base, at: 0) }
        guard case .failure(let error) = outcome else {
            Issue.record("a damaged object was served")
            return
        }
        #expect(error.code == .corrupt)
        #expect(error.message.contains(key))
        #expect(error.message.contains("SHA-256 mismatch"))
        #expect(base.objects.cachedIndices.isEmpty)
    }

    @Test func anUnreachableStoreFailsOnlyUnfetchedObjectsAndIsRetried() async throws {
        let (manifest, store) = Self.fixture()
        let base = Self.base(manifest, store)
        @Sendable func read(_ offset: UInt64) -> Result<[UInt8], StrataError> { readResult(base, at: offset) }
        let results = try await onThread { () -> [Result<[UInt8], StrataError>] in
            let cached = read(0)
            store.failing.store(true, ordering: .relaxed)
            let stillCached = read(4096)
            let unfetched = read(16 * Self.MiB)
            store.failing.store(false, ordering: .relaxed)
            let retried = read(16 * Self.MiB)
            return [cached, stillCached, unfetched, retried]
        }
        #expect((try? results[0].get())?.allSatisfy { $0 == 0x11 } == true)
        #expect((try? results[1].get())?.allSatisfy { $0 == 0x11 } == true)
        guard case .failure(let error) = results[2] else {
            Issue.record("a read of an unfetched object succeeded with the store down")
            return
        }
        #expect(error.code == .io)
        #expect((try? results[3].get())?.allSatisfy { $0 == 0x22 } == true)
    }
}

/// What concurrent readers got, in arrival order.
final class Results: Sendable {
    let list = Mutex<[[UInt8]]>([])
}

@Suite struct ObjectFetchTableTests {
    @Test func concurrentReadersShareOneFetch() {
        let table = ObjectFetchTable<[UInt8]>(capacity: 4)
        let started = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let readers = 8
        let results = Results()
        let group = DispatchGroup()
        for reader in 0..<readers {
            DispatchQueue.global().async(group: group) {
                let bytes = try? table.object(7) { () throws(StrataError) -> [UInt8] in
                    started.signal()
                    // Hold the fetch until every other reader has had time to join it.
                    release.wait()
                    return [7, 7, 7]
                }
                results.list.withLock { $0.append(bytes ?? [UInt8(reader)]) }
            }
        }
        started.wait()
        Thread.sleep(forTimeInterval: 0.2)
        release.signal()
        group.wait()
        #expect(table.fetches == 1)
        #expect(results.list.withLock { $0 } == Array(repeating: [7, 7, 7], count: readers))
    }

    @Test func aFailedFetchReachesItsWaitersAndTheNextReadRetries() {
        let table = ObjectFetchTable<[UInt8]>(capacity: 4)
        let first = Result { () throws(StrataError) -> [UInt8] in
            try table.object(1) { () throws(StrataError) -> [UInt8] in throw StrataError(.io, "get objects/x: no answer") }
        }
        guard case .failure(let error) = first else {
            Issue.record("a failed fetch returned data")
            return
        }
        #expect(error.message == "get objects/x: no answer")
        #expect(table.cachedIndices.isEmpty)
        let second = try? table.object(1) { () throws(StrataError) -> [UInt8] in [1] }
        #expect(second == [1])
        #expect(table.fetches == 2)
    }

    @Test func theCacheIsBoundedOldestFirst() throws {
        let table = ObjectFetchTable<[UInt8]>(capacity: 2)
        for index: UInt64 in [0, 1, 2] {
            _ = try table.object(index) { () throws(StrataError) -> [UInt8] in [UInt8(index)] }
        }
        #expect(table.cachedIndices == [1, 2])
        #expect(table.fetches == 3)
        // 2 is cached: no fetch. 0 was evicted: fetched again.
        #expect(try table.object(2) { () throws(StrataError) -> [UInt8] in [99] } == [2])
        #expect(try table.object(0) { () throws(StrataError) -> [UInt8] in [0] } == [0])
        #expect(table.fetches == 4)
        #expect(table.cachedIndices == [2, 0])
    }
}
