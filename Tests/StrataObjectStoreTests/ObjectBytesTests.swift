// An object of a remote base as it arrives: a read of it is served once the parts it covers are
// in and checked, while the rest is still on its way; a damaged part fails the reads that need
// it (naming the object and the part) and never theirs that it does not cover; a retried GET
// never rewrites bytes already checked; and a failed fetch leaves nothing cached, so the next
// read fetches again.

import Crypto
import Dispatch
import Foundation
import NIOCore
import StrataCore
@testable import StrataObjectStore
import Synchronization
import Testing

/// A store that hands each object's body to the sink in `piece`-byte pieces, stopping before
/// the piece at `pauseAt` until `resume` is signalled.
final class PacedStore: ObjectStore {
    let objects = Mutex<[String: [UInt8]]>([:])
    let gets = Atomic<Int>(0)
    let piece: Int
    let pauseAt: Int
    let paused = DispatchSemaphore(value: 0)
    let resume = DispatchSemaphore(value: 0)

    init(piece: Int, pauseAt: Int) {
        self.piece = piece
        self.pauseAt = pauseAt
    }

    var label: String { "remote paced" }
    func checkContainer() async throws(StrataError) {}
    func createContainer() async throws(StrataError) {}
    func put(_ key: String, body: ByteBuffer, sha256: String) async throws(StrataError) {}
    func get(_ key: String, range: Range<UInt64>?) async throws(StrataError) -> ByteBuffer {
        throw StrataError(.io, "get \(key) on \(self.label): only whole objects into a sink")
    }
    func get(_ key: String, into sink: any ObjectSink) async throws(StrataError) {
        self.gets.wrappingAdd(1, ordering: .relaxed)
        guard let bytes = self.objects.withLock({ $0[key] }) else {
            throw StrataError(.notFound, "get \(key) on \(self.label): no such object")
        }
        sink.restart()
        for start in stride(from: 0, to: bytes.count, by: self.piece) {
            if start == self.pauseAt {
                self.paused.signal()
                await withCheckedContinuation { continuation in
                    Thread.detachNewThread {
                        self.resume.wait()
                        continuation.resume()
                    }
                }
            }
            try ObjectBytesTests.feed(sink, Array(bytes[start..<min(start + self.piece, bytes.count)]))
        }
        try sink.finish()
    }
    func head(_ key: String) async throws(StrataError) -> ObjectInfo? { nil }
    func delete(_ key: String) async throws(StrataError) {}
    func list(prefix: String, after marker: String?) async throws(StrataError) -> ObjectListing {
        ObjectListing(objects: [], next: nil)
    }
    func shutdown() async {}
}

@Suite struct ObjectBytesTests {
    static let part = 4096

    /// One 64 KiB object of random bytes in 4 KiB parts, as a version 2 manifest has it.
    static func object(seed: UInt8) -> ([UInt8], ManifestEntry) {
        let bytes = (0..<(16 * Self.part)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) ^ UInt8(truncatingIfNeeded: $0 >> 12) }
        let parts = stride(from: 0, to: bytes.count, by: Self.part).map { RemoteBaseTests.sha(Array(bytes[$0..<($0 + Self.part)])) }
        return (bytes, ManifestEntry(index: 0, sha256: RemoteBaseTests.sha(bytes), bytes: UInt64(bytes.count), parts: parts))
    }

    static func base(_ entry: ManifestEntry, _ store: PacedStore) -> RemoteBase {
        let manifest = Manifest(
            volume: "vm1", snapshot: "s1", guid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", createdAt: "2026-01-01T00:00:00Z",
            sizeBytes: entry.bytes, objectSizeBytes: entry.bytes, parent: nil, objects: [entry],
            partSizeBytes: UInt64(Self.part))
        return RemoteBase(
            reference: RemoteBaseReference(
                remote: "r1", volume: "vm1", snapshot: "s1", manifestKey: "manifests/vm1/s1", manifestSHA256: "00"),
            manifest: manifest, store: store, cacheObjects: 4)
    }

    /// `count` bytes of `base` at `offset` (the whole-object path: a fill's), or the error.
    static func bytes(_ base: RemoteBase, at offset: UInt64, count: Int) -> Result<[UInt8], StrataError> {
        var scratch: [UInt8] = []
        return Result { () throws(StrataError) in
            try base.withBytes(at: offset, length: count, scratch: &scratch) { Array($0) }
        }
    }

    @Test func aReadIsServedOnceItsPartsAreInWhileTheRestArrives() async throws {
        let (bytes, entry) = Self.object(seed: 1)
        // Pieces of 3 KiB, paused before the piece that starts at 9 KiB: parts 0 and 1 are in.
        let store = PacedStore(piece: 3072, pauseAt: 9216)
        store.objects.withLock { $0[entry.key] = bytes }
        let base = Self.base(entry, store)
        // On a thread of its own: the waits below must not hold a thread of the cooperative
        // pool, where the fetch runs.
        let (early, waited, late, whole) = try await onThread {
            () -> (Result<[UInt8], StrataError>, Bool, Result<[UInt8], StrataError>?, Result<[UInt8], StrataError>) in
            let early = Self.bytes(base, at: 4096, count: 4096)
            store.paused.wait()
            // The end of the object is not in: a read of it waits until the fetch goes on.
            let late = Mutex<Result<[UInt8], StrataError>?>(nil)
            let lateDone = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                late.withLock { $0 = Self.bytes(base, at: 12 * 4096, count: 4096) }
                lateDone.signal()
            }
            let waited = lateDone.wait(timeout: .now() + .milliseconds(200)) == .timedOut
            store.resume.signal()
            lateDone.wait()
            return (early, waited, late.withLock { $0 }, Self.bytes(base, at: 0, count: bytes.count))
        }
        #expect(try early.get() == Array(bytes[4096..<8192]))
        #expect(waited, "the read of a part not in waited")
        #expect(try late?.get() == Array(bytes[(12 * 4096)..<(13 * 4096)]))
        #expect(try whole.get() == bytes)
        #expect(store.gets.load(ordering: .relaxed) == 1)
    }

    @Test func aDamagedPartFailsOnlyTheReadsItCoversAndNothingIsCached() async throws {
        var (bytes, entry) = Self.object(seed: 2)
        let good = bytes
        bytes[3 * 4096 + 100] ^= 0x40
        let store = PacedStore(piece: 8192, pauseAt: -1)
        store.objects.withLock { $0[entry.key] = bytes }
        let base = Self.base(entry, store)
        // Parts 0 and 1 are checked before part 3 fails: the first read has its bytes whatever
        // the second finds (this fetch failing, or a fetch of its own failing the same way).
        let (before, damaged) = try await onThread {
            (Self.bytes(base, at: 0, count: 8192), Self.bytes(base, at: 2 * 4096, count: 8192))
        }
        #expect(try before.get() == Array(good[0..<8192]))
        guard case .failure(let error) = damaged else {
            Issue.record("a damaged part was served")
            return
        }
        #expect(error.code == .corrupt)
        #expect(error.message.contains(entry.key) && error.message.contains("part 3: SHA-256 mismatch"))
        // Dropped: once the store holds the right bytes, the next read fetches and succeeds.
        for _ in 0..<100 where base.objects.holds(0) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!base.objects.holds(0))
        let failedGets = store.gets.load(ordering: .relaxed)
        store.objects.withLock { $0[entry.key] = good }
        let again = try await onThread { Self.bytes(base, at: 2 * 4096, count: 8192) }
        #expect(try again.get() == Array(good[(2 * 4096)..<(4 * 4096)]))
        #expect(store.gets.load(ordering: .relaxed) == failedGets + 1)
    }

    /// Hands `bytes` to `sink` as one piece of the body.
    static func feed(_ sink: any ObjectSink, _ bytes: [UInt8]) throws(StrataError) {
        var failure: StrataError?
        bytes.withUnsafeBytes { buffer in
            do throws(StrataError) { try sink.receive(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// A second attempt repeats the body from its first byte: what the first one checked is
    /// kept as it was (a reader may hold it), even if the repeat differs, and the rest is taken.
    @Test func aRetryNeverRewritesCheckedBytes() throws {
        let (bytes, entry) = Self.object(seed: 3)
        let object = ObjectBytes(entry, partSize: UInt64(Self.part), label: "object under test")
        object.restart()
        try Self.feed(object, Array(bytes[0..<10000]))
        // Two parts checked; the attempt breaks off. The next one's first 8 KiB are garbage.
        var repeated = bytes
        for index in 0..<8192 { repeated[index] = 0xee }
        object.restart()
        try Self.feed(object, repeated)
        try object.finish()
        #expect(object.isComplete)
        let whole = Result { () throws(StrataError) -> [UInt8] in try object.withBytes(0..<bytes.count) { Array($0) } }
        #expect((try? whole.get()) == bytes)
        // Too long and too short are errors naming the object.
        let short = ObjectBytes(entry, partSize: UInt64(Self.part), label: "object under test")
        short.restart()
        try Self.feed(short, Array(bytes[0..<4096]))
        let finished = Result { () throws(StrataError) in try short.finish() }
        #expect((try? finished.get()) == nil, "a short body is an error")
        let past = Result { () throws(StrataError) -> [UInt8] in try short.withBytes(0..<8192) { Array($0) } }
        #expect((try? past.get()) == nil, "bytes the short body never held are an error, not a wait")
        let held = Result { () throws(StrataError) -> [UInt8] in try short.withBytes(0..<4096) { Array($0) } }
        #expect((try? held.get()) == Array(bytes[0..<4096]))
    }
}
