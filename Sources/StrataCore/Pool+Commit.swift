// Commits: the only way metadata becomes durable.
//
// 1. Under `meta` exclusively: encode every node the open transaction wrote, rewrite the
//    changed space-map and volume-table pages to new locations, build the next superblock,
//    and start a new transaction (so writers go on while this one reaches the disk).
// 2. Without `meta`: write those pages, sync (this also makes every completed data write
//    durable), write the superblock into slot generation % 2, sync.
// 3. Wait for reads that may still be copying chunks this transaction freed, then hand the
//    freed pages and chunks back to the allocators.
// Nothing the previous superblock references is written in steps 1–2, so a crash anywhere
// recovers the previous or the new commit whole. A failed write or sync fails the pool: the
// kernel may have dropped dirty pages, so retrying could report success for lost data.
// Flushes that arrive while a commit runs wait for it and share the next one (group commit).

import Foundation
import Synchronization

/// Pool-wide figures for `pool status`.
public struct PoolStatus: Sendable, Codable, Equatable {
    public let capacityBytes: UInt64
    public let dataUsedBytes: UInt64
    public let dataFreeBytes: UInt64
    public let metadataBytes: UInt64
    public let metadataUsedBytes: UInt64
    public let chunkSize: UInt64
    public let volumes: Int
    public let snapshots: Int
    public let generation: UInt64
    public let createdAt: String
    public let uuid: String
    /// Volumes whose base image cannot be read now, each with the reason (filled by the service).
    public var unavailable: [String: String] = [:]
    /// Hydrations the daemon runs now (filled by the service; nil when the CLI opened the pool).
    public var hydrations: [VolumeStatus]? = nil
}

extension Pool {
    /// Makes every write completed before this call durable (NBD FLUSH, FUA, SYNCHRONIZE CACHE).
    /// - Throws: `.failed` when the device failed; the pool then refuses writes until reopened.
    public func flush() throws(StrataError) {
        let ticket = self.flushRequests.add(1, ordering: .sequentiallyConsistent).newValue
        try self.commitMutex.withLock { () throws(StrataError) in
            if self.flushesDurable >= ticket { return }
            let covering = self.flushRequests.load(ordering: .sequentiallyConsistent)
            try self.commitLocked()
            self.flushesDurable = covering
        }
        // Taps (mirrors) make their copies durable too before the flush returns.
        self.taps.flushed()
    }

    /// A front end's FLUSH (NBD) or SYNCHRONIZE CACHE (SCSI) on a handle: `flush()`, counted in
    /// the handle's counters.
    /// - Throws: as `flush()`.
    public func flush(_ handle: VolumeHandle) throws(StrataError) {
        try self.counted(handle, .flush, bytes: 0) { () throws(StrataError) in try self.flush() }
    }

    /// Commits only if the metadata changed; for the daemon's commit timer (StrataServer's
    /// `CommitService`) and a mirror leg pool's. Writes that changed no metadata (overwrites of
    /// chunks a volume already owns) are not synced here: like a file system's overwrites, they
    /// reach the disk with the kernel's writeback, and a flush, a FUA write or the next commit
    /// makes them durable at once. Syncing them every second turned a random-write load into
    /// as much random writeback each second, which slowed the load (bench/README.md).
    public func commitIfNeeded() throws(StrataError) {
        try self.commitMutex.withLock { () throws(StrataError) in try self.commitLocked(syncingOverwrites: false) }
    }

    /// `syncingOverwrites`: whether data writes that changed no metadata are synced when nothing
    /// else is to commit (a flush's promise; not the timer's).
    private func commitLocked(syncingOverwrites: Bool = true) throws(StrataError) {
        if self.readOnly { return }
        let writesBefore = self.dataWrites.load(ordering: .sequentiallyConsistent)
        var pages: [(UInt64, [UInt8])] = []
        var releasingMeta: [UInt64] = []
        var releasingData: [PhysicalChunk] = []
        let superblock = try self.meta.withWriteLock { () throws(StrataError) -> Superblock? in
            if let failure = self.failure {
                throw StrataError(.failed, "commit: pool failed earlier and is read-only until reopened (\(failure.message))")
            }
            guard self.metadataChanged else { return nil }
            return try self.prepareCommit(pages: &pages, releasingMeta: &releasingMeta, releasingData: &releasingData)
        }
        guard let superblock else {
            if syncingOverwrites && writesBefore != self.dataWritesSynced {
                try self.failOnError { () throws(StrataError) in try self.device.sync() }
                self.dataWritesSynced = writesBefore
            }
            return
        }
        let page = UInt64(Limits.pageSize)
        let started = MonotonicClock.nanos()
        try self.failOnError { () throws(StrataError) in
            for (number, bytes) in pages { try self.device.write(bytes, at: number * page) }
            try self.device.sync()
            try self.device.write(superblock.encode(), at: superblock.slot.rawValue * page)
            try self.device.sync()
        }
        self.statistics.commits.record(nanos: MonotonicClock.nanos() &- started)
        self.dataWritesSynced = writesBefore
        if !releasingData.isEmpty { self.readGuard.waitForEarlierReads() }
        for run in PhysicalChunk.runs(releasingData)
        where !self.device.discard(at: self.dataOffset(run.first), length: run.count << self.chunkShift) {
            self.freeChunksAreZero.store(false, ordering: .sequentiallyConsistent)
        }
        self.meta.withWriteLock {
            self.committed = superblock.generation
            for page in releasingMeta { self.metaInUse.remove(Int(page)) }
            for chunk in releasingData { self.dataInUse.remove(Int(chunk.rawValue)) }
        }
    }

    /// Step 1 of a commit; runs under `meta` exclusively.
    private func prepareCommit(
        pages: inout [(UInt64, [UInt8])], releasingMeta: inout [UInt64], releasingData: inout [PhysicalChunk]
    ) throws(StrataError) -> Superblock {
        let generation = Generation(self.committed.rawValue + 1)
        for (number, node) in self.dirtyNodes {
            pages.append((number, node.encode(page: PageNumber(number), generation: generation)))
            self.cache.put(number, node)
        }
        self.dirtyNodes.removeAll(keepingCapacity: true)
        let allocate: () throws(StrataError) -> PageNumber = { () throws(StrataError) in
            guard let page = self.metaInUse.allocate(floor: 2) else {
                let error = StrataError(.noSpace, "commit: metadata region exhausted inside the reserve")
                self.failure = error
                throw error
            }
            return PageNumber(UInt64(page))
        }
        let free: (PageNumber) -> Void = { self.pendingMeta.append($0.rawValue) }
        let emit: (PageNumber, [UInt8]) -> Void = { pages.append(($0.rawValue, $1)) }
        try self.volumes.commit(generation: generation, allocate: allocate, free: free, emit: emit)
        try self.metaRefs.commit(generation: generation, allocate: allocate, free: free, emit: emit)
        try self.dataRefs.commit(generation: generation, allocate: allocate, free: free, emit: emit)
        releasingMeta = self.pendingMeta
        releasingData = self.pendingData
        self.pendingMeta.removeAll()
        self.pendingData.removeAll()
        self.metadataChanged = false
        return Superblock(
            generation: generation, chunkSize: self.chunkSize, metadataPages: self.metadataPages,
            dataStart: self.dataStart, chunkCount: self.chunkCount, epoch: self.epoch, nextVolumeID: self.nextVolumeID,
            volumeTableRoot: self.volumes.rootPage, metadataMapRoot: self.metaRefs.rootPage,
            dataMapRoot: self.dataRefs.rootPage, createdAtNanos: self.createdAtNanos, uuid: self.uuid,
            dataChunksUsed: self.dataChunksReferenced, metadataReservePages: self.metadataReserve,
            incompatibleFeatures: self.incompatibleFeatures)
    }

    private func failOnError(_ body: () throws(StrataError) -> Void) throws(StrataError) {
        do throws(StrataError) {
            try body()
        } catch {
            let failed = StrataError(.failed, "commit: \(error.message); pool is read-only until reopened")
            self.meta.withWriteLock { self.failure = failed }
            throw failed
        }
    }

    /// Commits, then checks the committed state while holding commits off, so the pages it
    /// reads cannot change under it (reads and writes go on meanwhile). When the commit fails,
    /// or the pool failed earlier, the report carries the failure and is not clean: the last
    /// durable commit may be intact, but writes acknowledged since may be lost.
    public func checkDurable() -> CheckReport {
        let flushed = Result { () throws(StrataError) in try self.flush() }
        var report = self.commitMutex.withLock { Pool.check(device: self.device) }
        if case .failure(let error) = flushed { report.failure = error.message }
        return report
    }

    /// The last durable generation.
    public var committedGeneration: Generation { self.meta.withReadLock { self.committed } }

    /// Capacity and usage.
    /// Tree nodes the metadata cache holds now (at most `Limits.nodeCachePagesMax`).
    public var metadataCachePages: Int { self.cache.count }

    public func status() -> PoolStatus {
        self.meta.withReadLock {
            let snapshots = self.snapshotIDs.keys.reduce(0) { $0 + self.visibleSnapshotCount($1) }
            let used = UInt64(self.dataInUse.setCount)
            return PoolStatus(
                capacityBytes: self.chunkCount * self.chunkSize, dataUsedBytes: used * self.chunkSize,
                dataFreeBytes: (self.chunkCount - used) * self.chunkSize,
                metadataBytes: self.metadataPages * UInt64(Limits.pageSize),
                metadataUsedBytes: UInt64(self.metaInUse.setCount) * UInt64(Limits.pageSize), chunkSize: self.chunkSize,
                volumes: self.volumeIDByName.count, snapshots: snapshots, generation: self.committed.rawValue,
                createdAt: Self.timestamp(self.createdAtNanos), uuid: Self.guidString(self.uuid))
        }
    }
}
