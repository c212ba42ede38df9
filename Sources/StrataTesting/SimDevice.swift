// A simulated pool device for tests: memory-backed, sparse, with the crash semantics of a
// real disk. Writes since the last `sync` are volatile; `crashImage` returns the device as
// it could look after power loss: every synced write, plus each later write either lost,
// kept, or torn at 512-byte sector granularity (SQLite's crash VFS, redb's CrashBackend).
// A device can also be told to fail after N more operations, which is how a crash "at any
// point" is placed; later operations then throw EIO, as a dead disk would. A single sync can
// be made to fail instead (`failNextSync`): it drops the writes it was to make durable, as
// Linux does when fsync reports EIO, and the device then works again, so a caller that
// retried the sync would wrongly see success. `signalSyncStarts` lets a test know that a
// sync has begun (and `holdSyncs` keeps it there) without guessing with a sleep.

import Foundation
import StrataCore

/// A memory-backed `PoolDevice` that can simulate crashes and faults.
public final class SimDevice: PoolDevice, @unchecked Sendable {
    public static let sectorSize = 512
    static let pageSize = 4096

    public let size: UInt64
    private let lock = NSLock()
    private var current: [UInt64: [UInt8]] = [:]
    private var durable: [UInt64: [UInt8]] = [:]
    private var pending: [(offset: UInt64, bytes: [UInt8])] = []
    private var operationsLeft: Int?
    private var syncHold: DispatchSemaphore?
    private var syncStarted: DispatchSemaphore?
    private var syncFailuresLeft = 0
    public private(set) var crashed = false
    public private(set) var writes = 0
    public private(set) var syncs = 0
    /// Syncs that failed through `failNextSync`.
    public private(set) var syncsFailed = 0

    public init(size: UInt64) {
        self.size = size
    }

    /// Fail every operation after `count` more writes or syncs (a crash at that point).
    public func crash(afterOperations count: Int) {
        self.lock.withLock { self.operationsLeft = count }
    }

    /// Makes the next syncs wait until `semaphore` is signalled (one signal per sync).
    public func holdSyncs(on semaphore: DispatchSemaphore?) {
        self.lock.withLock { self.syncHold = semaphore }
    }

    /// Signals `semaphore` once as each later sync starts (before any hold), until set to nil.
    public func signalSyncStarts(on semaphore: DispatchSemaphore?) {
        self.lock.withLock { self.syncStarted = semaphore }
    }

    /// Makes the next sync fail with EIO, dropping the unsynced writes from what is durable (the
    /// kernel marks the pages clean after a failed fsync); later operations work again.
    public func failNextSync() {
        self.lock.withLock { self.syncFailuresLeft = 1 }
    }

    private func tick() throws(StrataError) {
        let failed: Bool = self.lock.withLock {
            if self.crashed { return true }
            if let left = self.operationsLeft {
                if left <= 0 {
                    self.crashed = true
                    return true
                }
                self.operationsLeft = left - 1
            }
            return false
        }
        if failed { throw StrataError(.io, "simulated device: crashed (errno=5)") }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(StrataError) {
        self.lock.withLock {
            Self.forEachPage(offset: offset, count: buffer.count) { page, inside, done, count in
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                if let bytes = self.current[page] {
                    bytes.withUnsafeBytes { target.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[inside..<(inside + count)])) }
                } else {
                    target.initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StrataError) {
        try self.tick()
        precondition(offset + UInt64(bytes.count) <= self.size, "simulated write past the device end")
        self.lock.withLock {
            let copy = [UInt8](bytes)
            Self.apply(copy, at: offset, to: &self.current)
            self.pending.append((offset, copy))
            self.writes += 1
        }
    }

    public func sync() throws(StrataError) {
        try self.tick()
        let (started, hold) = self.lock.withLock { (self.syncStarted, self.syncHold) }
        started?.signal()
        hold?.wait()
        let failing: Bool = self.lock.withLock {
            guard self.syncFailuresLeft > 0 else { return false }
            self.syncFailuresLeft -= 1
            self.syncsFailed += 1
            self.pending.removeAll()
            return true
        }
        if failing { throw StrataError(.io, "simulated device: sync failed (errno=5)") }
        self.lock.withLock {
            for write in self.pending { Self.apply(write.bytes, at: write.offset, to: &self.durable) }
            self.pending.removeAll()
            self.syncs += 1
        }
    }

    /// When true, `discard` zeroes the range (as a volatile write, like a hole punch before
    /// the next sync); when false it keeps the old bytes, as a filesystem without punching does.
    public var discardZeroes = false

    @discardableResult
    public func discard(at offset: UInt64, length: UInt64) -> Bool {
        guard self.discardZeroes, !self.crashed else { return false }
        self.lock.withLock {
            let zeros = [UInt8](repeating: 0, count: Int(length))
            Self.apply(zeros, at: offset, to: &self.current)
            self.pending.append((offset, zeros))
        }
        return true
    }

    /// Splits [offset, offset + count) at page boundaries: body(page, offset in page, bytes done, length).
    private static func forEachPage(offset: UInt64, count: Int, _ body: (UInt64, Int, Int, Int) -> Void) {
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let inside = Int(position % UInt64(Self.pageSize))
            let length = min(Self.pageSize - inside, count - done)
            body(position / UInt64(Self.pageSize), inside, done, length)
            done += length
        }
    }

    private static func apply(_ bytes: [UInt8], at offset: UInt64, to pages: inout [UInt64: [UInt8]]) {
        Self.forEachPage(offset: offset, count: bytes.count) { page, inside, done, count in
            var target = pages[page] ?? [UInt8](repeating: 0, count: Self.pageSize)
            target.replaceSubrange(inside..<(inside + count), with: bytes[done..<(done + count)])
            pages[page] = target
        }
    }

    /// How unsynced writes fare in a crash image.
    public enum CrashMode: Sendable {
        /// Every unsynced write is lost.
        case dropUnsynced
        /// Each unsynced write is lost, kept, or torn per sector, chosen by the generator.
        case random
    }

    /// The device as it could be after a power loss now.
    public func crashImage(mode: CrashMode, using random: inout SeededRandom) -> SimDevice {
        self.lock.withLock {
            let image = SimDevice(size: self.size)
            image.discardZeroes = self.discardZeroes
            image.current = self.durable
            guard case .random = mode else {
                image.durable = image.current
                return image
            }
            for write in self.pending {
                switch random.next(below: 3) {
                case 0:
                    continue
                case 1:
                    Self.apply(write.bytes, at: write.offset, to: &image.current)
                default:
                    var sector = 0
                    while sector < write.bytes.count {
                        let end = min(sector + Self.sectorSize, write.bytes.count)
                        if random.next(below: 2) == 0 {
                            Self.apply(Array(write.bytes[sector..<end]), at: write.offset + UInt64(sector), to: &image.current)
                        }
                        sector = end
                    }
                }
            }
            image.durable = image.current
            return image
        }
    }

    /// A byte-for-byte copy of the current contents (for corruption tests).
    public func copy() -> SimDevice {
        self.lock.withLock {
            let image = SimDevice(size: self.size)
            image.discardZeroes = self.discardZeroes
            image.current = self.current
            image.durable = self.current
            return image
        }
    }

    /// Overwrites bytes directly, bypassing crash accounting (corruption injection).
    public func poke(_ bytes: [UInt8], at offset: UInt64) {
        self.lock.withLock {
            Self.apply(bytes, at: offset, to: &self.current)
            Self.apply(bytes, at: offset, to: &self.durable)
        }
    }
}

/// A small, fast, seeded generator (SplitMix64) so every failure replays from its seed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var value = self.state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }

    /// A value in 0 ..< bound.
    public mutating func next(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        return Int(self.next() % UInt64(bound))
    }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = self.next()
            for _ in 0..<8 where index < count {
                result[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return result
    }
}

/// Seeds for the test tiers: the environment's `STRATA_SEED` replays one; `STRATA_LONG`
/// multiplies the count for the long mode.
public enum SimSeeds {
    public static func list(count: Int, salt: UInt64) -> [UInt64] {
        let environment = ProcessInfo.processInfo.environment
        if let text = environment["STRATA_SEED"], let seed = UInt64(text) { return [seed] }
        let factor = Int(environment["STRATA_LONG"] ?? "") ?? 1
        return (0..<UInt64(count * max(factor, 1))).map { $0 &* 0x2545_F491_4F6C_DD1D ^ salt }
    }
}

extension SimDevice {
    /// A simulated device with a freshly formatted pool on it, and the pool opened.
    /// - Parameters:
    ///   - metadataPages: the metadata region, in 4 KiB pages.
    ///   - dataBytes: room after the metadata region (the data region is what of it fits whole chunks).
    public static func formattedPool(metadataPages: UInt64, dataBytes: UInt64, chunkSize: UInt64 = 4096)
        throws(StrataError) -> (SimDevice, Pool)
    {
        let device = SimDevice(size: metadataPages * UInt64(Self.pageSize) + dataBytes)
        try Pool.format(device: device, chunkSize: chunkSize, metadataPages: metadataPages)
        return (device, try Pool(device: device))
    }
}
