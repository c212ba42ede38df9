// `strata check`: an offline verification of everything a pool's last commit references.
//
// It reads the superblocks, the space maps and the volume table (every page's checksum, kind
// and self-address), walks every volume's and snapshot's mapping tree once per distinct node,
// recomputes every reference count from the trees and compares them with the stored ones,
// and checks the free-space figure in the superblock and the copy-on-write invariant (a
// mapping newer than its volume's shared-before epoch must be exclusively owned). It never
// traps on bad bytes: every problem becomes a line naming the page, the volume and the byte
// range it covers.

/// What `check` found.
public struct CheckReport: Sendable, Codable {
    /// One piece of damage.
    public struct Problem: Sendable, Codable, CustomStringConvertible {
        public let page: UInt64?
        public let volume: String?
        public let range: String?
        public let message: String

        public var description: String {
            var parts: [String] = []
            if let page { parts.append("page \(page)") }
            if let volume { parts.append("volume \(volume)") }
            if let range { parts.append(range) }
            return (parts.isEmpty ? "" : parts.joined(separator: ", ") + ": ") + self.message
        }
    }

    public var problems: [Problem] = []
    /// Why the open pool failed (a failed sync or write), when it did: it is then read-only
    /// until reopened, and whatever the last durable commit holds, the check is not clean.
    public var failure: String?
    public var generation: UInt64 = 0
    public var volumes = 0
    public var snapshots = 0
    public var treePages = 0
    public var dataChunks = 0
    public var clean: Bool { self.problems.isEmpty && self.failure == nil }
}

extension Pool {
    /// Checks the pool directory (taking a shared lock, so not while a daemon holds it).
    public static func check(directory: String) throws(StrataError) -> CheckReport {
        try Self.requirePool(directory)
        let lock = try PoolLock.acquire(directory: directory, exclusive: false)
        defer { withExtendedLifetime(lock) {} }
        let device = try FileDevice(path: directory + "/" + Self.fileName, readOnly: true)
        // A pool from a newer strata is not damaged, only unreadable here: say so, with the fix.
        if case .failure(let error) = Result(catching: { () throws(StrataError) in try Self.readSuperblock(device: device) }),
            error.code == .unsupported
        {
            throw StrataError(.unsupported, "check pool \(directory): \(error.message)")
        }
        var report = Self.check(device: device)
        report.problems += BaseTable(directory: directory).verifyAll()
        return report
    }

    /// Checks the last commit on a device. Never throws and never traps on damage.
    public static func check(device: any PoolDevice) -> CheckReport {
        var checker = Checker(device: device)
        checker.run()
        return checker.report
    }
}

private struct Checker {
    let device: any PoolDevice
    var report = CheckReport()
    var superblock: Superblock?
    var computedMeta: [UInt64: UInt32] = [:]
    var computedData: [UInt64: UInt32] = [:]
    var visited: Set<UInt64> = []
    /// Tree pages that could not be read: their subtrees' references are unknown.
    var unreadablePages = 0

    init(device: any PoolDevice) { self.device = device }

    mutating func problem(page: UInt64? = nil, volume: String? = nil, range: String? = nil, _ message: String) {
        self.report.problems.append(.init(page: page, volume: volume, range: range, message: message))
    }

    func readPage(_ page: PageNumber) throws(StrataError) -> [UInt8] {
        try self.device.read(count: Limits.pageSize, at: page.rawValue * UInt64(Limits.pageSize))
    }

    mutating func run() {
        let block: Superblock
        do throws(StrataError) {
            block = try Pool.readSuperblock(device: self.device)
        } catch {
            self.problem(page: 0, error.message)
            return
        }
        self.superblock = block
        self.report.generation = block.generation.rawValue
        let limit = block.metadataPages
        let read = { (page: PageNumber) throws(StrataError) -> [UInt8] in try self.readPage(page) }
        var arrays: [(String, [PageNumber])] = []
        var volumes: PagedArray<VolumeRecord>?
        var metaRefs: PagedArray<UInt32>?
        var dataRefs: PagedArray<UInt32>?
        do throws(StrataError) {
            let table = try PagedArray<VolumeRecord>.load(id: .volumeTable, root: block.volumeTableRoot, pageLimit: limit, readPage: read)
            volumes = table
            arrays.append(("volume table", table.pages))
        } catch { self.problem(page: block.volumeTableRoot.rawValue, "volume table: \(error.message)") }
        do throws(StrataError) {
            let map = try PagedArray<UInt32>.load(id: .metadataMap, root: block.metadataMapRoot, pageLimit: limit, readPage: read)
            metaRefs = map
            arrays.append(("metadata space map", map.pages))
        } catch { self.problem(page: block.metadataMapRoot.rawValue, "metadata space map: \(error.message)") }
        do throws(StrataError) {
            let map = try PagedArray<UInt32>.load(id: .dataMap, root: block.dataMapRoot, pageLimit: limit, readPage: read)
            dataRefs = map
            arrays.append(("data space map", map.pages))
        } catch { self.problem(page: block.dataMapRoot.rawValue, "data space map: \(error.message)") }

        guard let volumes else { return }
        self.walkTrees(volumes, metaRefs: metaRefs, dataRefs: dataRefs, block: block)
        if self.unreadablePages > 0 {
            // Counts below an unreadable page are unknown; comparing them would bury the real
            // damage under one false mismatch per chunk.
            self.problem(
                "reference counts not compared: \(self.unreadablePages) tree page(s) unreadable (listed above)")
            return
        }
        if let metaRefs { self.compareMetadata(metaRefs, arrays: arrays, block: block) }
        if let dataRefs { self.compareData(dataRefs, block: block) }
    }

    mutating func walkTrees(
        _ volumes: PagedArray<VolumeRecord>, metaRefs: PagedArray<UInt32>?, dataRefs: PagedArray<UInt32>?,
        block: Superblock
    ) {
        var names: [UInt64: String] = [:]
        var records: [VolumeRecord] = []
        for slot in 0..<volumes.count where !volumes[slot].isZero {
            let record = volumes[slot]
            if let problem = record.decodeProblem {
                self.problem(page: volumes.leafPages[slot / PagedArray<VolumeRecord>.perLeaf].rawValue, problem)
                continue
            }
            if let problem = record.featureProblem(block) { self.problem(page: block.slot.rawValue, "superblock: \(problem)") }
            records.append(record)
            if record.kind == .volume { names[record.id] = record.name }
        }
        for record in records {
            var name = record.kind == .snapshot ? "\(names[record.parent] ?? "?")@\(record.name)" : record.name
            if record.kind == .staging { name = "receive staging of \(record.name)" }
            if record.kind == .snapshot {
                self.report.snapshots += 1
                if names[record.parent] == nil { self.problem(volume: name, "snapshot of a volume that does not exist") }
            } else if record.kind == .volume {
                self.report.volumes += 1
            }
            guard record.root != .none else { continue }
            let root = record.root.rawValue
            self.computedMeta[root, default: 0] += 1
            let context = WalkContext(
                name: name, record: record, chunkShift: UInt64(block.chunkSize.trailingZeroBitCount),
                sizeChunks: (record.size + block.chunkSize - 1) / block.chunkSize, block: block, metaRefs: metaRefs,
                dataRefs: dataRefs)
            self.visit(page: root, level: record.depth - 1, base: 0, exclusivePath: true, context)
        }
    }

    struct WalkContext {
        let name: String
        let record: VolumeRecord
        let chunkShift: UInt64
        let sizeChunks: UInt64
        let block: Superblock
        let metaRefs: PagedArray<UInt32>?
        let dataRefs: PagedArray<UInt32>?

        func range(base: UInt64, level: UInt8) -> String {
            let span = Pool.span(depth: level + 1)
            let start = base << self.chunkShift
            let length = span >= (UInt64.max >> self.chunkShift) ? UInt64.max - start : span << self.chunkShift
            return "offset=\(start) length=\(length)"
        }
    }

    mutating func visit(page: UInt64, level: UInt8, base: UInt64, exclusivePath: Bool, _ context: WalkContext) {
        guard page >= 2, page < context.block.metadataPages else {
            self.problem(
                page: page, volume: context.name, range: context.range(base: base, level: level),
                "tree pointer outside the metadata region")
            return
        }
        let exclusive = exclusivePath && context.metaRefs.map { $0[Int(page)] == 1 } ?? true
        guard self.visited.insert(page).inserted else { return }
        self.report.treePages += 1
        let node: TreeNode
        do throws(StrataError) {
            let bytes = try self.readPage(PageNumber(page))
            node = try TreeNode.decode(
                bytes, page: PageNumber(page), level: level, pageLimit: context.block.metadataPages,
                chunkLimit: context.block.chunkCount, epochLimit: context.block.epoch)
        } catch {
            self.unreadablePages += 1
            self.problem(page: page, volume: context.name, range: context.range(base: base, level: level), error.message)
            return
        }
        let childSpan = Pool.span(depth: level)
        for index in 0..<256 where node.slots[index] != 0 {
            let childBase = base + UInt64(index) * childSpan
            if level > 0 {
                self.computedMeta[node.slots[index], default: 0] += 1
                self.visit(page: node.slots[index], level: level - 1, base: childBase, exclusivePath: exclusive, context)
                continue
            }
            let chunk = node.slots[index] - 1
            self.computedData[chunk, default: 0] += 1
            if childBase >= context.sizeChunks {
                self.problem(
                    page: page, volume: context.name, range: context.range(base: childBase, level: 0),
                    "mapping past the end of the volume (size=\(context.record.size))")
            }
            if context.record.kind != .snapshot, UInt64(node.times[index]) >= context.record.sharedBefore {
                let chunkExclusive = context.dataRefs.map { $0[Int(chunk)] == 1 } ?? true
                if !(exclusive && chunkExclusive) {
                    self.problem(
                        page: page, volume: context.name, range: "offset=\(childBase << context.chunkShift)",
                        "mapping marked exclusive (epoch \(node.times[index])) but its chunk \(chunk) is shared")
                }
            }
        }
    }

    mutating func compareMetadata(_ metaRefs: PagedArray<UInt32>, arrays: [(String, [PageNumber])], block: Superblock) {
        var owner: [UInt64: String] = [:]
        for (name, pages) in arrays {
            for page in pages {
                if let other = owner[page.rawValue] {
                    self.problem(page: page.rawValue, "page used by both the \(other) and the \(name)")
                }
                owner[page.rawValue] = name
                if self.computedMeta[page.rawValue] != nil {
                    self.problem(page: page.rawValue, "page used by the \(name) is also a tree node")
                }
                if metaRefs[Int(page.rawValue)] != 0 {
                    self.problem(page: page.rawValue, "\(name) page has a reference count (\(metaRefs[Int(page.rawValue)]))")
                }
            }
        }
        for page in 0..<metaRefs.count {
            let stored = metaRefs[page]
            let computed = self.computedMeta[UInt64(page)] ?? 0
            if stored != computed {
                self.problem(
                    page: UInt64(page), "metadata reference count mismatch (stored=\(stored) computed=\(computed))")
            }
        }
    }

    mutating func compareData(_ dataRefs: PagedArray<UInt32>, block: Superblock) {
        var used: UInt64 = 0
        for chunk in 0..<dataRefs.count {
            let stored = dataRefs[chunk]
            let computed = self.computedData[UInt64(chunk)] ?? 0
            if stored != 0 { used += 1 }
            if stored != computed {
                self.problem(
                    "data chunk \(chunk): reference count mismatch (stored=\(stored) computed=\(computed))")
            }
        }
        self.report.dataChunks = Int(used)
        if used != block.dataChunksUsed {
            self.problem(
                page: block.slot.rawValue,
                "free-space accounting: superblock says \(block.dataChunksUsed) chunks in use, space map says \(used)")
        }
    }
}
