// The engine under many threads: concurrent writers, readers, snapshots and flushes on one
// volume, and reads and writes that proceed while a commit waits for its sync.

import Foundation
import StrataCore
import StrataTesting
import Testing

@Suite struct ConcurrencyTests {
    static let block = 4096

    /// A block stamped with its writer and version, so any block read back names its origin.
    static func stamp(writer: Int, version: Int, block: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: writer &* 31 &+ version), count: Self.block)
        withUnsafeBytes(of: UInt64(writer).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: UInt64(version).littleEndian) { bytes.replaceSubrange(8..<16, with: $0) }
        withUnsafeBytes(of: UInt64(block).littleEndian) { bytes.replaceSubrange(16..<24, with: $0) }
        return bytes
    }

    static func version(of bytes: [UInt8]) -> Int {
        bytes[8..<16].withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
    }

    @Test func writersReadersSnapshotsAndFlushesAgree() throws {
        let device = SimDevice(size: 1024 * 4096 + 8192 * 4096)
        try Pool.format(device: device, chunkSize: 16384, metadataPages: 1024)
        let pool = try Pool(device: device)
        let writers = 6
        let blocksPerWriter = 24
        let rounds = 40
        try pool.createVolume("vm1", size: UInt64(writers * blocksPerWriter * Self.block))
        let handle = try pool.handle("vm1")

        let book = Bookkeeping(writers: writers)
        let done = DispatchGroup()

        for writer in 0..<writers {
            DispatchQueue.global().async(group: done) {
                for version in 1...rounds {
                    book.lock.withLock { book.started[writer] = version }
                    for block in 0..<blocksPerWriter {
                        let index = writer * blocksPerWriter + block
                        do throws(StrataError) {
                            try pool.write(handle, at: UInt64(index * Self.block), Self.stamp(writer: writer, version: version, block: index))
                        } catch {
                            book.fail("writer \(writer): \(error)")
                            return
                        }
                    }
                    book.lock.withLock { book.completed[writer] = version }
                }
            }
        }
        DispatchQueue.global().async(group: done) {
            // Readers: every block read is some version a writer wrote there, or zeros.
            var random = SeededRandom(seed: 5)
            for _ in 0..<400 {
                let index = random.next(below: writers * blocksPerWriter)
                do throws(StrataError) {
                    let bytes = try pool.read(handle, at: UInt64(index * Self.block), count: Self.block)
                    if bytes.allSatisfy({ $0 == 0 }) { continue }
                    let version = Self.version(of: bytes)
                    if bytes != Self.stamp(writer: index / blocksPerWriter, version: version, block: index) {
                        book.fail("read of block \(index) returned a torn or foreign block")
                    }
                } catch {
                    book.fail("reader: \(error)")
                }
            }
        }
        DispatchQueue.global().async(group: done) {
            for snapshot in 0..<12 {
                let low = book.lock.withLock { book.completed }
                do throws(StrataError) {
                    try pool.createSnapshot("vm1", "s\(snapshot)")
                    if snapshot % 3 == 0 { try pool.flush() }
                } catch {
                    book.fail("snapshot: \(error)")
                }
                let high = book.lock.withLock { book.started }
                book.lock.withLock { book.snapshotBounds.append(("s\(snapshot)", low, high)) }
                usleep(2000)
            }
        }
        done.wait()
        #expect(book.failures.isEmpty, "\(book.failures.prefix(5))")
        try pool.flush()

        // The live volume holds every writer's last version.
        for index in 0..<(writers * blocksPerWriter) {
            let bytes = try pool.read(handle, at: UInt64(index * Self.block), count: Self.block)
            #expect(bytes == Self.stamp(writer: index / blocksPerWriter, version: rounds, block: index))
        }
        // Each snapshot holds, per block, a version acknowledged no earlier than the writer's last
        // completed round before the snapshot began, and none begun after it returned.
        for (name, low, high) in book.snapshotBounds {
            let snapshot = try pool.handle("vm1@\(name)")
            for index in 0..<(writers * blocksPerWriter) {
                let writer = index / blocksPerWriter
                let bytes = try pool.read(snapshot, at: UInt64(index * Self.block), count: Self.block)
                let version = bytes.allSatisfy { $0 == 0 } ? 0 : Self.version(of: bytes)
                #expect(version >= low[writer] && version <= high[writer], "\(name) block \(index): version \(version) outside \(low[writer])...\(high[writer])")
                if version > 0 {
                    #expect(bytes == Self.stamp(writer: writer, version: version, block: index), "\(name) block \(index) torn")
                }
            }
        }
        #expect(Pool.check(device: device).clean)
    }

    @Test func readsAndWritesDoNotWaitForACommitsSync() throws {
        let (device, pool) = try SimDevice.formattedPool(metadataPages: 512, dataBytes: 4 << 20)
        try pool.createVolume("vm1", size: 1 << 20)
        let handle = try pool.handle("vm1")
        try pool.write(handle, at: 0, [UInt8](repeating: 7, count: 8192))

        // Hold the commit inside its first sync, and know (not guess) that it is there.
        let gate = DispatchSemaphore(value: 0)
        let syncStarted = DispatchSemaphore(value: 0)
        device.signalSyncStarts(on: syncStarted)
        device.holdSyncs(on: gate)
        let flushed = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            if case .failure(let error) = Result(catching: { () throws(StrataError) in try pool.flush() }) {
                Issue.record("the held flush failed: \(error)")
            }
            flushed.signal()
        }
        try #require(syncStarted.wait(timeout: .now() + 20) == .success, "the flush never reached its sync")
        device.signalSyncStarts(on: nil)
        // While the commit waits, reads and new writes complete.
        let served = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let result = Result { () throws(StrataError) -> Bool in
                let first = try pool.read(handle, at: 0, count: 8192)
                try pool.write(handle, at: 65536, [UInt8](repeating: 9, count: 4096))
                let second = try pool.read(handle, at: 65536, count: 4096)
                return first == [UInt8](repeating: 7, count: 8192) && second == [UInt8](repeating: 9, count: 4096)
            }
            #expect((try? result.get()) == true)
            served.signal()
        }
        let timely = served.wait(timeout: .now() + 20) == .success
        #expect(timely, "reads and writes waited for the commit's sync")
        // Release the commit's two syncs.
        device.holdSyncs(on: nil)
        gate.signal()
        gate.signal()
        #expect(flushed.wait(timeout: .now() + 20) == .success)
        if !timely { served.wait() }
        try pool.flush()
        #expect(Pool.check(device: device).clean)
    }
}

/// Shared bookkeeping of the concurrent test, guarded by `lock`.
private final class Bookkeeping: @unchecked Sendable {
    let lock = NSLock()
    /// Highest version each writer finished (all its blocks).
    var completed: [Int]
    /// Highest version each writer began.
    var started: [Int]
    var failures: [String] = []
    var snapshotBounds: [(name: String, low: [Int], high: [Int])] = []

    init(writers: Int) {
        self.completed = [Int](repeating: 0, count: writers)
        self.started = [Int](repeating: 0, count: writers)
    }

    func fail(_ message: String) { self.lock.withLock { self.failures.append(message) } }
}
