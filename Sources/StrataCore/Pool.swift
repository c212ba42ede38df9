// The pool: one device holding superblocks, a metadata region of 4 KiB pages, and a data
// region of fixed-size chunks. This file holds the pool's state, open and format, the
// allocators and the reference-count primitives; the tree, volume, I/O, commit, diff and
// check operations live in `Pool+*.swift`.
//
// Invariants (checked by `check`):
// - A page or chunk referenced by the last durable superblock is never written until a later
//   commit stops referencing it and that commit is durable (pending-free lists).
// - metadata refcount[p] = number of references to tree node p (record roots and interior
//   slots of distinct referencing nodes); data refcount[c] = number of leaf entries naming c.
// - A leaf entry with epoch ≥ its volume's shared-before epoch is reachable from that volume
//   only, through nodes of refcount 1, and its chunk has refcount 1: it may be overwritten in
//   place. Anything older may be shared and is copied on write (dm-thin's time-based test).
//
// Locking: `meta` (readers-writer) guards every mutable field below; lookups take it shared,
// mutations exclusive, and no device I/O happens under it except loading a tree page on a
// cache miss. Data I/O happens outside it. Writers of one logical chunk serialize on a
// striped lock; snapshot, rollback, resize and delete drain a volume's I/O through its gate.

import Foundation
import Synchronization

/// A thin pool of volumes, snapshots and clones. Thread-safe: any number of threads may read,
/// write and manage volumes at once.
public final class Pool: @unchecked Sendable {
    /// Name of the pool file inside a pool directory.
    public static let fileName = "pool.strata"

    let device: any PoolDevice
    let lock: PoolLock?
    public let directory: String?
    public let readOnly: Bool

    // Geometry, fixed at format time.
    public let chunkSize: UInt64
    let chunkShift: UInt64
    let metadataPages: UInt64
    let dataStart: UInt64
    public let chunkCount: UInt64
    let createdAtNanos: Int64
    let uuid: (UInt64, UInt64)

    let meta = RWLock()
    let commitMutex = BlockingMutex()
    let chunkLocks = StripedLocks(count: Limits.chunkLockStripes)
    let gates = GateTable()
    let cache = NodeCache()
    let readGuard = ReadGuard()
    /// The base images that based volumes' holes read from (`BaseTable.swift`).
    public let bases: BaseTable
    /// What sees every change to a volume's contents, such as a mirror (`Pool+Tap.swift`).
    public let taps = TapTable()
    /// Front-end I/O and commit statistics for /metrics; off unless the daemon turns them on.
    public let statistics = IOStatistics()
    /// Where reads hand the objects they fetched to be stored later (the daemon's filler, so a
    /// reply does not wait for the fill); nil, or an answer of false, fills before the read returns.
    let fillDeferral = Mutex<(@Sendable (VolumeHandle, [UInt64]) -> Bool)?>(nil)

    // Guarded by `meta`.
    var epoch: UInt64
    var nextVolumeID: UInt64
    var volumes: PagedArray<VolumeRecord>
    var metaRefs: PagedArray<UInt32>
    var dataRefs: PagedArray<UInt32>
    var metaInUse: Bitmap
    var dataInUse: Bitmap
    var dataChunksReferenced: UInt64
    var dirtyNodes: [UInt64: TreeNode] = [:]
    var pendingMeta: [UInt64] = []
    var pendingData: [PhysicalChunk] = []
    var slotByID: [UInt64: Int] = [:]
    /// Empty volume-table slots, so creating a record never scans the table.
    var freeSlots: [Int] = []
    var volumeIDByName: [String: UInt64] = [:]
    var snapshotIDs: [UInt64: [String: UInt64]] = [:]
    /// Staging records (receives in progress) by target volume name; hidden from listings.
    var stagingIDByName: [String: UInt64] = [:]
    var metadataChanged = false
    var committed: Generation
    var failure: StrataError?
    /// What the next commit's superblock lists (FormatFeatures.swift); only ever grows.
    var incompatibleFeatures: IncompatibleFeatures

    /// Counts data writes, so a flush with nothing new to make durable costs nothing.
    let dataWrites = Atomic<UInt64>(0)
    /// True while every free data chunk reads as zeros (the device punches holes), so a first
    /// write into a fresh chunk writes only its own bytes instead of zero-filling the chunk.
    let freeChunksAreZero = Atomic<Bool>(false)
    /// Flush requests; a commit covers every request made before it started.
    let flushRequests = Atomic<UInt64>(0)
    // Guarded by `commitMutex`.
    var dataWritesSynced: UInt64 = 0
    var flushesDurable: UInt64 = 0

    // MARK: Open

    /// Opens the pool in `directory`, taking its lock.
    /// - Throws: `.notFound` when there is no pool, `.busy` naming the holder's PID when locked,
    ///   `.corrupt` naming the page when the metadata is damaged.
    public static func open(directory: String, readOnly: Bool = false) throws(StrataError) -> Pool {
        try Self.requirePool(directory)
        let lock = try PoolLock.acquire(directory: directory, exclusive: !readOnly)
        let file = try FileDevice(path: directory + "/" + Self.fileName, readOnly: readOnly)
        // Testing only (WriteLogDevice.swift): a log of every write for the power-loss test.
        var device: any PoolDevice = file
        if !readOnly, let logPath = WriteLogDevice.requestedPath {
            device = try WriteLogDevice(logging: file, to: logPath)
        }
        do throws(StrataError) {
            return try Pool(device: device, readOnly: readOnly, lock: lock, directory: directory)
        } catch where error.code == .corrupt {
            throw StrataError(
                .corrupt, "open pool \(directory): \(error.message); run `strata check --pool \(directory)` for a full report")
        } catch where error.code == .unsupported {
            throw StrataError(.unsupported, "open pool \(directory): \(error.message)")
        }
    }

    /// Throws `.notFound` with the fix unless `directory` holds a pool file.
    static func requirePool(_ directory: String) throws(StrataError) {
        var info = stat()
        guard stat(directory + "/" + Self.fileName, &info) == 0 else {
            let code = errno
            guard code == ENOENT || code == ENOTDIR else {
                throw StrataError.io("open pool", directory, errno: code)
            }
            throw StrataError(
                .notFound,
                "open pool \(directory): no pool there; create one with `strata pool init --pool \(directory)`")
        }
    }

    /// Opens a pool on any device (simulation and tests).
    public convenience init(device: any PoolDevice, readOnly: Bool = false) throws(StrataError) {
        try self.init(device: device, readOnly: readOnly, lock: nil, directory: nil)
    }

    init(device: any PoolDevice, readOnly: Bool, lock: PoolLock?, directory: String?) throws(StrataError) {
        let superblock = try Self.readSuperblock(device: device)
        self.device = device
        self.lock = lock
        self.directory = directory
        self.readOnly = readOnly
        self.bases = BaseTable(directory: directory)
        self.chunkSize = superblock.chunkSize
        self.chunkShift = UInt64(superblock.chunkSize.trailingZeroBitCount)
        self.metadataPages = superblock.metadataPages
        self.dataStart = superblock.dataStart
        self.chunkCount = superblock.chunkCount
        self.createdAtNanos = superblock.createdAtNanos
        self.uuid = superblock.uuid
        self.epoch = superblock.epoch
        self.nextVolumeID = superblock.nextVolumeID
        self.committed = superblock.generation
        self.incompatibleFeatures = superblock.incompatibleFeatures

        let limit = superblock.metadataPages
        let read: (PageNumber) throws(StrataError) -> [UInt8] = { page throws(StrataError) in
            try device.read(count: Limits.pageSize, at: page.rawValue * UInt64(Limits.pageSize))
        }
        self.volumes = try PagedArray.load(id: .volumeTable, root: superblock.volumeTableRoot, pageLimit: limit, readPage: read)
        self.metaRefs = try PagedArray.load(id: .metadataMap, root: superblock.metadataMapRoot, pageLimit: limit, readPage: read)
        self.dataRefs = try PagedArray.load(id: .dataMap, root: superblock.dataMapRoot, pageLimit: limit, readPage: read)
        guard UInt64(self.metaRefs.count) == limit, UInt64(self.dataRefs.count) == superblock.chunkCount else {
            throw StrataError.corrupt(page: superblock.slot, "space map sizes do not match the pool geometry")
        }
        self.metaInUse = Bitmap(count: Int(limit))
        self.dataInUse = Bitmap(count: Int(superblock.chunkCount))
        self.dataChunksReferenced = 0
        try self.rebuildAllocationState()
        try self.adoptFeatures(superblock)
        guard self.dataChunksReferenced == superblock.dataChunksUsed else {
            throw StrataError.corrupt(
                page: superblock.slot,
                "data chunks in use (expected=\(superblock.dataChunksUsed) actual=\(self.dataChunksReferenced))")
        }
        if !readOnly { self.punchFreeChunks() }
    }

    /// Punches every run of free chunks, so free chunks read as zeros whatever a crash left in
    /// them (a chunk freed by a commit may not have been punched before the crash). One call
    /// per run: the cost follows the number of allocated extents, not the pool size.
    ///
    /// Free chunks read as zeros only once the device has proven it punches: a pool opened full
    /// (no free chunk to punch) on a device that cannot punch would otherwise claim it, and the
    /// chunks its next commit frees would keep their old bytes under a first write that writes
    /// only its own (found by ShareTests' model: a copy, then a write to a hole of a full pool).
    private func punchFreeChunks() {
        var allZero = true
        var punchedAny = false
        var chunk = 0
        while chunk < self.dataRefs.count {
            guard self.dataRefs[chunk] == 0 else {
                chunk += 1
                continue
            }
            let start = chunk
            while chunk < self.dataRefs.count && self.dataRefs[chunk] == 0 { chunk += 1 }
            let punched = self.device.discard(
                at: self.dataOffset(PhysicalChunk(UInt64(start))), length: UInt64(chunk - start) << self.chunkShift)
            if !punched {
                allZero = false
                break
            }
            punchedAny = true
        }
        self.freeChunksAreZero.store(allZero && punchedAny, ordering: .sequentiallyConsistent)
    }

    /// Reads both superblock slots and returns the valid one with the higher generation.
    /// - Throws: `.unsupported` when the newest intact slot is from a newer strata than `reader`
    ///   (never falling back to the older slot, which would undo a commit); `.corrupt` when
    ///   neither slot is valid.
    static func readSuperblock(device: any PoolDevice, reader: FormatReader = .current) throws(StrataError) -> Superblock {
        var best: Superblock?
        var newer: (generation: Generation, error: StrataError)?
        var problems: [String] = []
        for slot in [PageNumber(0), PageNumber(1)] {
            do throws(StrataError) {
                let bytes = try device.read(count: Limits.pageSize, at: slot.rawValue * UInt64(Limits.pageSize))
                do throws(StrataError) {
                    let block = try Superblock.decode(bytes, slot: slot, deviceSize: device.size, reader: reader)
                    if best == nil || block.generation > best!.generation { best = block }
                } catch where error.code == .unsupported {
                    let generation = try PageHeader.verify(bytes, kind: .superblock, number: slot).generation
                    if newer == nil || generation > newer!.generation { newer = (generation, error) }
                }
            } catch {
                problems.append(error.message)
            }
        }
        if let newer, best.map({ newer.generation > $0.generation }) ?? true { throw newer.error }
        guard let best else {
            throw StrataError(
                .corrupt, "no valid superblock (\(problems.joined(separator: "; "))); not a Strata pool, or damaged")
        }
        return best
    }

    /// Marks pages and chunks in use from the space maps and the volume table; indexes names.
    private func rebuildAllocationState() throws(StrataError) {
        self.metaInUse.insert(0)
        self.metaInUse.insert(1)
        for array in [self.volumes.pages, self.metaRefs.pages, self.dataRefs.pages] {
            for page in array { self.metaInUse.insert(Int(page.rawValue)) }
        }
        for page in 0..<self.metaRefs.count where self.metaRefs[page] != 0 {
            guard page >= 2 else {
                throw StrataError.corrupt(page: PageNumber(UInt64(page)), "superblock slot has a reference count")
            }
            self.metaInUse.insert(page)
        }
        for chunk in 0..<self.dataRefs.count where self.dataRefs[chunk] != 0 {
            self.dataInUse.insert(chunk)
            self.dataChunksReferenced += 1
        }
        for slot in (0..<self.volumes.count).reversed() {
            let record = self.volumes[slot]
            guard !record.isZero else {
                self.freeSlots.append(slot)
                continue
            }
            if let problem = record.decodeProblem {
                throw StrataError(.corrupt, "volume table: \(problem)")
            }
            self.slotByID[record.id] = slot
        }
        for (id, slot) in self.slotByID {
            let record = self.volumes[slot]
            switch record.kind {
            case .volume:
                self.volumeIDByName[record.name] = id
            case .snapshot:
                self.snapshotIDs[record.parent, default: [:]][record.name] = id
            case .staging:
                self.stagingIDByName[record.name] = id
            }
        }
    }

    /// Commits and releases the pool. Further calls fail.
    public func close() throws(StrataError) {
        if !self.readOnly { try self.flush() }
    }

    // MARK: Format

    /// Writes an empty pool onto `device`.
    /// - Parameters:
    ///   - chunkSize: power of two from 4 KiB to 1 MiB.
    ///   - metadataPages: size of the metadata region; nil chooses from the capacity.
    /// - Throws: `.invalidArgument` when the geometry is impossible.
    public static func format(
        device: any PoolDevice, chunkSize: UInt64 = Limits.chunkSizeDefault, metadataPages: UInt64? = nil
    ) throws(StrataError) {
        guard chunkSize.nonzeroBitCount == 1, chunkSize >= Limits.chunkSizeMin, chunkSize <= Limits.chunkSizeMax else {
            throw StrataError(
                .invalidArgument,
                "init pool: invalid chunk size \(chunkSize); use a power of two from 4K to 1M (default 64K)")
        }
        let page = UInt64(Limits.pageSize)
        let pages = metadataPages ?? Self.defaultMetadataPages(capacity: device.size, chunkSize: chunkSize)
        let dataStart = (pages * page).alignedUp(to: chunkSize)
        guard device.size > dataStart + chunkSize * 16 else {
            throw StrataError(
                .invalidArgument,
                "init pool: size \(SizeParser.format(device.size)) leaves no room for data after \(SizeParser.format(dataStart)) of metadata; use a larger --size"
            )
        }
        let chunkCount = (device.size - dataStart) / chunkSize
        guard chunkCount <= UInt64(PagedArray<UInt32>.capacityMax), pages <= UInt64(PagedArray<UInt32>.capacityMax) else {
            throw StrataError(.invalidArgument, "init pool: too many chunks (\(chunkCount)); use a larger --chunk-size")
        }
        var volumes = PagedArray<VolumeRecord>(id: .volumeTable, count: 0)
        var metaRefs = PagedArray<UInt32>(id: .metadataMap, count: Int(pages))
        var dataRefs = PagedArray<UInt32>(id: .dataMap, count: Int(chunkCount))
        var next: UInt64 = 2
        let generation = Generation(1)
        var writes: [(PageNumber, [UInt8])] = []
        let allocate: () throws(StrataError) -> PageNumber = {
            next += 1
            return PageNumber(next - 1)
        }
        let emit: (PageNumber, [UInt8]) -> Void = { writes.append(($0, $1)) }
        try volumes.commit(generation: generation, allocate: allocate, free: { _ in }, emit: emit)
        try metaRefs.commit(generation: generation, allocate: allocate, free: { _ in }, emit: emit)
        try dataRefs.commit(generation: generation, allocate: allocate, free: { _ in }, emit: emit)
        let now = Date()
        let superblock = Superblock(
            generation: generation, chunkSize: chunkSize, metadataPages: pages, dataStart: dataStart,
            chunkCount: chunkCount, epoch: 1, nextVolumeID: 1, volumeTableRoot: volumes.rootPage,
            metadataMapRoot: metaRefs.rootPage, dataMapRoot: dataRefs.rootPage,
            createdAtNanos: Int64(now.timeIntervalSince1970 * 1e9),
            uuid: (UInt64.random(in: 0...UInt64.max), UInt64.random(in: 0...UInt64.max)), dataChunksUsed: 0,
            metadataReservePages: 0)
        // Zero slot 0 so no stale pool's superblock survives a re-format of a reused file.
        try device.write([UInt8](repeating: 0, count: Limits.pageSize), at: 0)
        for (number, bytes) in writes { try device.write(bytes, at: number.rawValue * page) }
        try device.sync()
        try device.write(superblock.encode(), at: superblock.slot.rawValue * page)
        try device.sync()
    }

    /// The metadata region for a data capacity. It is sparse like the rest, so sizing it
    /// generously costs nothing until it is used. Writes scattered over a thin volume can take a
    /// 4 KiB leaf per chunk, so there is room for a page per chunk, capped at 1/16 of the
    /// capacity (which small chunks reach first), plus the space maps and their reserve.
    static func defaultMetadataPages(capacity: UInt64, chunkSize: UInt64) -> UInt64 {
        let chunks = capacity / chunkSize
        let mapPages = chunks / 1000 + 16
        return max(Limits.metadataPagesMin, min(chunks, capacity / 16 / UInt64(Limits.pageSize)) + 4 * mapPages)
    }

    /// Creates a pool directory with a sparse pool file holding `size` bytes of data capacity
    /// (the file is larger by its metadata region).
    public static func create(
        directory: String, size: UInt64, chunkSize: UInt64 = Limits.chunkSizeDefault, metadataSize: UInt64? = nil
    ) throws(StrataError) {
        if let metadataSize {
            guard metadataSize >= Limits.metadataPagesMin * UInt64(Limits.pageSize), metadataSize < size / 2 else {
                throw StrataError(
                    .invalidArgument,
                    "init pool \(directory): invalid metadata size \(SizeParser.format(metadataSize)); use from \(SizeParser.format(Limits.metadataPagesMin * UInt64(Limits.pageSize))) to half the pool size"
                )
            }
        }
        let file = directory + "/" + Self.fileName
        if FileManager.default.fileExists(atPath: file) {
            throw StrataError(
                .alreadyExists, "init pool \(directory): a pool already exists there; choose another --pool")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw StrataError(.io, "init pool \(directory): cannot create the directory (\(error.localizedDescription))")
        }
        guard chunkSize.nonzeroBitCount == 1, chunkSize >= Limits.chunkSizeMin, chunkSize <= Limits.chunkSizeMax else {
            throw StrataError(
                .invalidArgument,
                "init pool \(directory): invalid chunk size \(chunkSize); use a power of two from 4K to 1M (default 64K)")
        }
        let pages = metadataSize.map { $0 / UInt64(Limits.pageSize) }
            ?? Self.defaultMetadataPages(capacity: size, chunkSize: chunkSize)
        let lock = try PoolLock.acquire(directory: directory, exclusive: true)
        let fileSize = (pages * UInt64(Limits.pageSize)).alignedUp(to: chunkSize) + size / chunkSize * chunkSize
        let device = try FileDevice.create(path: file, size: fileSize)
        do throws(StrataError) {
            try format(device: device, chunkSize: chunkSize, metadataPages: pages)
        } catch {
            unlink(file)
            throw error
        }
        withExtendedLifetime(lock) {}
    }

    // MARK: Allocation (callers hold `meta` exclusively)

    /// Pages that must stay free so a commit can always rewrite the space maps and the table.
    var metadataReserve: UInt64 {
        PagedArray<VolumeRecord>.pagesToRewriteAll(count: self.volumes.count + PagedArray<VolumeRecord>.perLeaf)
            + PagedArray<UInt32>.pagesToRewriteAll(count: self.metaRefs.count)
            + PagedArray<UInt32>.pagesToRewriteAll(count: self.dataRefs.count) + Limits.metadataReserveSlackPages
    }

    var metadataPagesFree: UInt64 { self.metadataPages - UInt64(self.metaInUse.setCount) }

    /// A free page for a tree node. Ordinary writes stop at the reserve; operations that free
    /// space (`forRelease`) may dig into half of it, so deletes work on a full pool.
    func allocateNodePage(forRelease: Bool = false) throws(StrataError) -> UInt64 {
        let keep = forRelease ? self.metadataReserve / 2 : self.metadataReserve
        guard self.metadataPagesFree > keep, let page = self.metaInUse.allocate(floor: 2) else {
            throw StrataError(
                .noSpace,
                "allocate metadata: pool metadata full (free pages=\(self.metadataPagesFree) reserve=\(keep)); delete snapshots or volumes, or create the pool with a larger --metadata-size"
            )
        }
        return UInt64(page)
    }

    func allocateDataChunk() -> PhysicalChunk? {
        guard let chunk = self.dataInUse.allocate() else { return nil }
        return PhysicalChunk(UInt64(chunk))
    }

    // MARK: Nodes and reference counts (callers hold `meta`; mutators exclusively)

    /// The node at `page`, from the open transaction, the cache, or the device.
    func node(_ page: UInt64, level: UInt8) throws(StrataError) -> TreeNode {
        guard let node = try self.node(page, level: level, waiting: .allowed) else {
            preconditionFailure("a node read that may wait always ends with the node")
        }
        return node
    }

    /// The node at `page`; with `.never`, only from memory (the open transaction or the cache),
    /// nil when that would need the device or a wait on the cache.
    func node(_ page: UInt64, level: UInt8, waiting: Waiting) throws(StrataError) -> TreeNode? {
        if let node = self.dirtyNodes[page] ?? self.cache.get(page, waiting) {
            guard node.level == level else {
                throw StrataError.corrupt(page: PageNumber(page), "tree node at the wrong level (expected=\(level) actual=\(node.level))")
            }
            return node
        }
        if waiting == .never { return nil }
        guard page >= 2, page < self.metadataPages else {
            throw StrataError.corrupt(page: PageNumber(page), "tree pointer outside the metadata region")
        }
        let bytes = try self.device.read(count: Limits.pageSize, at: page * UInt64(Limits.pageSize))
        let node = try TreeNode.decode(
            bytes, page: PageNumber(page), level: level, pageLimit: self.metadataPages, chunkLimit: self.chunkCount,
            epochLimit: self.epoch)
        self.cache.put(page, node)
        return node
    }

    /// A new, empty node owned by the open transaction.
    func newNode(level: UInt8, forRelease: Bool = false) throws(StrataError) -> (UInt64, TreeNode) {
        let page = try self.allocateNodePage(forRelease: forRelease)
        let node = TreeNode(level: level)
        self.dirtyNodes[page] = node
        self.metaRefs[Int(page)] = 1
        self.metadataChanged = true
        return (page, node)
    }

    /// Makes the node at `page` writable by the open transaction: itself when it is already
    /// the transaction's and unshared, else a copy (breaking sharing lazily, as dm-thin does:
    /// the copy takes a reference on each child and the original loses one).
    func shadow(_ page: UInt64, level: UInt8, forRelease: Bool = false) throws(StrataError) -> (UInt64, TreeNode) {
        let references = self.metaRefs[Int(page)]
        guard references > 0 else {
            throw StrataError.corrupt(page: PageNumber(page), "tree node in use has reference count 0")
        }
        if references == 1, let node = self.dirtyNodes[page] {
            guard node.level == level else {
                throw StrataError.corrupt(page: PageNumber(page), "tree node at the wrong level")
            }
            return (page, node)
        }
        let original = try self.node(page, level: level)
        let (copyPage, copy) = try self.newNode(level: level, forRelease: forRelease)
        copy.slots = original.slots
        copy.times = original.times
        if references > 1 {
            self.metaRefs[Int(page)] = references - 1
            for slot in copy.slots where slot != 0 {
                if level == 0 {
                    self.retainChunk(PhysicalChunk(slot - 1))  // a leaf slot holds chunk + 1 (LeafEntry)
                } else {
                    try self.retainNode(slot)
                }
            }
        } else {
            self.metaRefs[Int(page)] = 0
            self.releasePage(page)
        }
        return (copyPage, copy)
    }

    func retainNode(_ page: UInt64) throws(StrataError) {
        let references = self.metaRefs[Int(page)]
        guard references > 0 else {
            throw StrataError.corrupt(page: PageNumber(page), "shared tree node has reference count 0")
        }
        self.metaRefs[Int(page)] = references + 1
        self.metadataChanged = true
    }

    /// Reads, changing nothing, every node that releasing the trees at `roots` one after the
    /// other would free, and checks the counts that release would drop, so the release that
    /// follows cannot stop half done on a damaged page or a count already at zero (and leave the
    /// open transaction freeing chunks a tree still maps): it throws first, naming the page.
    /// Mutations call it before they change anything; `releaseNode` then only meets what this
    /// has read.
    func checkReleasable(_ roots: [(page: PageNumber, level: UInt8)]) throws(StrataError) {
        var dropped: [UInt64: UInt32] = [:]
        for root in roots where root.page != .none {
            try self.checkReleasable(root.page.rawValue, level: root.level, dropped: &dropped)
        }
    }

    private func checkReleasable(_ page: UInt64, level: UInt8, dropped: inout [UInt64: UInt32]) throws(StrataError) {
        guard page >= 2, page < self.metadataPages else {
            throw StrataError.corrupt(page: PageNumber(page), "tree pointer outside the metadata region")
        }
        let references = self.metaRefs[Int(page)] - min(dropped[page] ?? 0, self.metaRefs[Int(page)])
        guard references > 0 else {
            throw StrataError.corrupt(page: PageNumber(page), "released tree node has reference count 0")
        }
        dropped[page, default: 0] += 1
        guard references == 1 else { return }
        let node = try self.checkedNode(page, level: level)
        guard level > 0 else { return }
        for slot in node.slots where slot != 0 {
            try self.checkReleasable(slot, level: level - 1, dropped: &dropped)
        }
    }

    /// The node at `page`, with a reference count above zero and, for a leaf, only chunks inside
    /// the pool that are referenced: what a release of it may rely on.
    func checkedNode(_ page: UInt64, level: UInt8) throws(StrataError) -> TreeNode {
        guard page >= 2, page < self.metadataPages, self.metaRefs[Int(page)] > 0 else {
            throw StrataError.corrupt(
                page: PageNumber(page), "tree pointer outside the metadata region or to a page with reference count 0")
        }
        let node = try self.node(page, level: level)
        if level == 0 {
            for slot in node.slots where slot != 0 {
                guard let chunk = LeafEntry(slot: slot, time: 0).chunk, chunk.rawValue < self.chunkCount,
                    self.dataRefs[Int(chunk.rawValue)] > 0
                else {
                    throw StrataError.corrupt(
                        page: PageNumber(page),
                        "tree leaf maps data chunk \(slot - 1), which is outside the pool or has reference count 0")
                }
            }
        }
        return node
    }

    /// Drops one reference to a node; at zero, drops its children's and frees its page.
    /// - Precondition: `checkReleasable` passed for the tree this node belongs to, in this
    ///   transaction, before anything changed.
    func releaseNode(_ page: UInt64, level: UInt8) throws(StrataError) {
        let references = self.metaRefs[Int(page)]
        guard references > 0 else {
            throw StrataError.corrupt(page: PageNumber(page), "released tree node has reference count 0")
        }
        self.metadataChanged = true
        if references > 1 {
            self.metaRefs[Int(page)] = references - 1
            return
        }
        let node = try self.node(page, level: level)
        for slot in node.slots where slot != 0 {
            if level == 0 {
                self.releaseChunk(PhysicalChunk(slot - 1))  // a leaf slot holds chunk + 1 (LeafEntry)
            } else {
                try self.releaseNode(slot, level: level - 1)
            }
        }
        self.metaRefs[Int(page)] = 0
        self.releasePage(page)
    }

    /// Queues a page whose count reached zero; reusable once the open transaction commits.
    private func releasePage(_ page: UInt64) {
        self.dirtyNodes[page] = nil
        self.cache.remove(page)
        self.pendingMeta.append(page)
        self.metadataChanged = true
    }

    func retainChunk(_ chunk: PhysicalChunk) {
        let references = self.dataRefs[Int(chunk.rawValue)]
        precondition(references < UInt32.max, "chunk \(chunk): reference count overflow")
        if references == 0 { self.dataChunksReferenced += 1 }
        self.dataRefs[Int(chunk.rawValue)] = references + 1
        self.metadataChanged = true
    }

    func releaseChunk(_ chunk: PhysicalChunk) {
        let references = self.dataRefs[Int(chunk.rawValue)]
        precondition(references > 0, "chunk \(chunk): released with reference count 0")
        self.dataRefs[Int(chunk.rawValue)] = references - 1
        if references == 1 {
            self.dataChunksReferenced -= 1
            self.pendingData.append(chunk)
        }
        self.metadataChanged = true
    }

    /// Byte offset of a data chunk on the device.
    @inline(__always)
    func dataOffset(_ chunk: PhysicalChunk) -> UInt64 { self.dataStart + chunk.rawValue << self.chunkShift }

    /// Throws if the pool has failed or is read-only.
    func checkWritable(_ operation: String, _ object: String) throws(StrataError) {
        if let failure = self.failure {
            throw StrataError(.failed, "\(operation) \(object): pool failed earlier and is read-only until reopened (\(failure.message))")
        }
        if self.readOnly {
            throw StrataError(.readOnly, "\(operation) \(object): pool opened read-only")
        }
    }
}

/// Per-volume I/O gates: reads and writes hold a volume's gate shared; snapshot, rollback,
/// resize and delete hold it exclusively, so they see no write half done.
final class GateTable: @unchecked Sendable {
    private let mutex = BlockingMutex()
    private var gates: [UInt64: RWLock] = [:]

    func gate(_ id: UInt64) -> RWLock {
        self.mutex.withLock {
            if let gate = self.gates[id] { return gate }
            let gate = RWLock()
            self.gates[id] = gate
            return gate
        }
    }

    /// Drops the gate of a volume or snapshot that no longer exists (IDs are never reused), so
    /// the table holds gates only for records that exist. A holder of the old gate keeps it and
    /// finds the record gone.
    func forget(_ id: UInt64) { self.mutex.withLock { _ = self.gates.removeValue(forKey: id) } }
}
