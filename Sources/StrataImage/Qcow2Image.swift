// A qcow2 image read as a disk (QEMU docs/interop/qcow2.txt, "Cluster mapping"): the L1 table
// is read whole at open, L2 tables on first touch into a shared bounded cache, and a read is
// cut into runs of guest clusters that read alike, each served with one system call:
//
//   standard clusters whose host clusters are contiguous  -> one pread of the whole run
//   unallocated clusters (no L2 table, or a zero entry)   -> one read of the backing image
//                                                            (zeros when there is none)
//   zero clusters (v3 bit 0)                              -> zeros, never the backing file
//   a compressed cluster (bit 62)                         -> inflate (cached) and copy
//
// L2 entry (big-endian u64): bit 63 "copied" (ignored by a reader), bit 62 compressed,
// bits 0…61 the cluster descriptor. Standard: bit 0 zero flag (v3 only), bits 9…55 the host
// offset (cluster aligned, 0 = unallocated). Compressed, x = 62 - (cluster_bits - 8): bits
// 0…x-1 the host offset (any alignment), bits x…61 the 512-byte sectors used beyond the
// first, so the stored bytes end at the sector boundary past host + 512 × (sectors + 1).
//
// Invariants: every L1 entry was checked at open to name a whole cluster inside the file;
// every L2 entry is checked when used (aligned, starting inside the file) and a bad one is a
// `.corrupt` error naming the file, the guest offset and the entry, never a trap. Reads past
// the virtual size are zeros even where the backing image is larger. Nothing here changes
// after init, so reads from many threads share only the caches, which lock for lookups only.

import StrataCore

/// A qcow2 v2 or v3 image over an optional backing image.
final class Qcow2Image: BaseImage {
    let file: ImageFile
    let header: Qcow2Header
    let backing: (any BaseImage)?
    /// Host offsets of the L2 tables, one per L1 entry the virtual size needs (0: none).
    private let l2Offsets: [UInt64]
    private let l2Cache = ClusterCache<[UInt64]>(bytesMax: Limits.qcow2L2CacheBytesMax)
    private let inflatedCache = ClusterCache<[UInt8]>(bytesMax: Limits.qcow2InflatedCacheBytesMax)

    /// Bits 9…55 of an L1 or standard L2 entry: the host offset.
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let compressedFlag: UInt64 = 1 << 62
    static let copiedFlag: UInt64 = 1 << 63
    static let zeroFlag: UInt64 = 1

    /// How a run of guest clusters reads.
    enum Run: Equatable {
        case unallocated
        case zero
        /// Host offset of the run's first byte.
        case standard(host: UInt64)
        /// A whole compressed cluster stored at `host`, `length` bytes at most.
        case compressed(host: UInt64, length: UInt64)
    }

    /// Reads and validates the L1 table.
    /// - Throws: `.corrupt` naming the file when the table or an entry lies outside it.
    init(file: ImageFile, header: Qcow2Header, backing: (any BaseImage)?) throws(StrataError) {
        let needed = header.l1EntriesNeeded
        guard header.l1Offset <= file.size, needed * 8 <= file.size - header.l1Offset else {
            throw ImageErrors.corrupt(
                file.path, "qcow2 L1 table lies past the end of the file",
                "l1_table_offset=\(header.l1Offset) l1_entries=\(needed) file_size=\(file.size)")
        }
        var entries = [UInt64](repeating: 0, count: Int(needed))
        try file.read(at: header.l1Offset, into: &entries)
        for index in entries.indices {
            let offset = UInt64(bigEndian: entries[index]) & Self.offsetMask
            entries[index] = offset
            guard offset != 0 else { continue }
            guard offset % header.clusterSize == 0, offset <= file.size, header.clusterSize <= file.size - offset
            else {
                throw ImageErrors.corrupt(
                    file.path, "qcow2 L1 entry points outside the file or is unaligned",
                    "l1_index=\(index) l2_table_offset=\(offset) file_size=\(file.size)")
            }
        }
        self.file = file
        self.header = header
        self.backing = backing
        self.l2Offsets = entries
    }

    var virtualSize: UInt64 { self.header.virtualSize }

    var layers: [BaseLayer] {
        [BaseLayer(path: self.file.path, format: "qcow2", virtualSize: self.header.virtualSize)]
            + (self.backing?.layers ?? [])
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
        guard try self.read(at: offset, into: buffer, waiting: .allowed) else {
            preconditionFailure("a qcow2 read that may wait always finishes")
        }
    }

    func readIfCached(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        do throws(StrataError) {
            return try self.read(at: offset, into: buffer, waiting: .never)
        } catch {
            // The read that may wait, which the caller makes next, meets and reports it.
            return false
        }
    }

    /// Reads `buffer.count` bytes at `offset`; with `.never`, false when a table, a compressed
    /// cluster or the data is not in memory.
    private func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, waiting: Waiting)
        throws(StrataError) -> Bool
    {
        let dataEnd = offset < self.virtualSize ? min(self.virtualSize, offset + UInt64(buffer.count)) : offset
        var cursor = offset
        var done = 0
        while cursor < dataEnd {
            guard let (run, length) = try self.run(at: cursor, limit: dataEnd, forAllocation: false, waiting: waiting) else {
                return false
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + Int(length)])
            switch run {
            case .unallocated:
                if let backing = self.backing {
                    if waiting == .never {
                        guard backing.readIfCached(at: cursor, into: target) else { return false }
                    } else {
                        try backing.read(at: cursor, into: target)
                    }
                } else {
                    target.initializeMemory(as: UInt8.self, repeating: 0)
                }
            case .zero:
                target.initializeMemory(as: UInt8.self, repeating: 0)
            case .standard(let host):
                if waiting == .never {
                    guard self.file.readIfCached(at: host, into: target) else { return false }
                } else {
                    try self.file.read(at: host, into: target)
                }
            case .compressed(let host, let stored):
                guard let cluster = try self.inflatedCluster(host: host, stored: stored, guestOffset: cursor, waiting: waiting)
                else { return false }
                let within = Int(cursor & (self.header.clusterSize - 1))
                cluster.withUnsafeBytes { source in
                    target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[within..<within + Int(length)]))
                }
            }
            cursor += length
            done += Int(length)
        }
        if done < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        return true
    }

    func allocation(at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        let end = length > UInt64.max - offset ? UInt64.max : offset + length
        let dataEnd = offset < self.virtualSize ? min(self.virtualSize, end) : offset
        var extents = ExtentList()
        var cursor = offset
        while cursor < dataEnd {
            guard let (run, runLength) = try self.run(at: cursor, limit: dataEnd, forAllocation: true, waiting: .allowed)
            else { preconditionFailure("a qcow2 table walk that may wait always finishes") }
            switch run {
            case .unallocated:
                if let backing = self.backing {
                    extents.append(contentsOf: try backing.allocation(at: cursor, length: runLength))
                } else {
                    extents.append(offset: cursor, length: runLength, mapped: false)
                }
            case .zero:
                extents.append(offset: cursor, length: runLength, mapped: false)
            case .standard, .compressed:
                extents.append(offset: cursor, length: runLength, mapped: true)
            }
            cursor += runLength
        }
        extents.append(offset: cursor, length: end - cursor, mapped: false)
        return extents.extents
    }

    /// The run of guest bytes from `position` (below `limit`) that read alike, and its length.
    /// A run never crosses an L2 table; a compressed run is one cluster. With `forAllocation`,
    /// standard and compressed clusters join one run whatever their host offsets.
    /// With `.never`, nil when the L2 table is not cached.
    /// - Precondition: `position < limit <= virtualSize`.
    private func run(at position: UInt64, limit: UInt64, forAllocation: Bool, waiting: Waiting) throws(StrataError)
        -> (Run, UInt64)?
    {
        let bits = UInt64(self.header.clusterBits)
        let clusterSize = self.header.clusterSize
        let cluster = position >> bits
        let l2Entries = self.header.l2Entries
        let l1Index = Int(cluster / l2Entries)
        let tableEnd = min(limit, (UInt64(l1Index) + 1) * l2Entries << bits)
        let tableFirstCluster = UInt64(l1Index) * l2Entries
        let l2Offset = self.l2Offsets[l1Index]
        guard l2Offset != 0 else { return (.unallocated, tableEnd - position) }
        guard let table = try self.l2Table(at: l2Offset, waiting: waiting) else { return nil }
        var index = Int(cluster - tableFirstCluster)
        let first = try self.decode(table[index], guestCluster: cluster)
        var runEnd = min(limit, (cluster + 1) << bits)
        let within = position & (clusterSize - 1)
        if case .compressed = first, !forAllocation { return (first, runEnd - position) }
        var expected = first
        while runEnd < tableEnd {
            index += 1
            let next = try self.decode(table[index], guestCluster: tableFirstCluster + UInt64(index))
            if case .standard(let host) = expected, !forAllocation { expected = .standard(host: host + clusterSize) }
            guard Self.joins(expected, next, forAllocation: forAllocation) else { break }
            runEnd = min(tableEnd, runEnd + clusterSize)
        }
        if case .standard(let host) = first { return (.standard(host: host + within), runEnd - position) }
        return (first, runEnd - position)
    }

    /// Whether `next` continues a run whose next cluster would read as `expected`.
    private static func joins(_ expected: Run, _ next: Run, forAllocation: Bool) -> Bool {
        switch (expected, next) {
        case (.unallocated, .unallocated), (.zero, .zero): return true
        case (.standard(let want), .standard(let have)): return forAllocation || want == have
        case (.standard, .compressed), (.compressed, .standard), (.compressed, .compressed): return forAllocation
        default: return false
        }
    }

    /// Classifies one L2 entry, checking it against the file.
    /// - Throws: `.corrupt` naming the file, the guest offset and the entry.
    private func decode(_ entry: UInt64, guestCluster: UInt64) throws(StrataError) -> Run {
        let bits = UInt64(self.header.clusterBits)
        if entry & Self.compressedFlag != 0 {
            let split = 62 - (bits - 8)
            let host = entry & ((1 << split) - 1)
            let sectors = (entry >> split) & ((1 << (bits - 8)) - 1)
            guard host < self.file.size else {
                throw self.badEntry("compressed cluster points outside the file", entry, guestCluster)
            }
            return .compressed(host: host, length: (sectors + 1) * 512 - (host & 511))
        }
        if entry & Self.zeroFlag != 0 {
            guard self.header.version >= 3 else {
                throw self.badEntry("zero flag set in a version 2 image", entry, guestCluster)
            }
            return .zero
        }
        let host = entry & Self.offsetMask
        guard host != 0 else {
            guard entry & Self.copiedFlag == 0 else {
                throw self.badEntry("allocated cluster at host offset 0", entry, guestCluster)
            }
            return .unallocated
        }
        guard host % self.header.clusterSize == 0 else {
            throw self.badEntry("L2 entry host offset not cluster aligned", entry, guestCluster)
        }
        guard host < self.file.size else {
            throw self.badEntry("L2 entry points outside the file", entry, guestCluster)
        }
        return .standard(host: host)
    }

    private func badEntry(_ what: String, _ entry: UInt64, _ guestCluster: UInt64) -> StrataError {
        ImageErrors.corruptRead(
            self.file.path, what,
            "guest_offset=\(guestCluster << UInt64(self.header.clusterBits)) l2_entry=0x\(String(entry, radix: 16)) "
                + "file_size=\(self.file.size)")
    }

    /// The decoded L2 table at `offset` (validated at open), from the cache or the file; with
    /// `.never`, only from the cache.
    private func l2Table(at offset: UInt64, waiting: Waiting) throws(StrataError) -> [UInt64]? {
        if let table = self.l2Cache.lookup(offset, waiting) { return table }
        if waiting == .never { return nil }
        var table = [UInt64](repeating: 0, count: Int(self.header.l2Entries))
        try self.file.read(at: offset, into: &table)
        for index in table.indices {
            table[index] = UInt64(bigEndian: table[index])
        }
        self.l2Cache.insert(offset, table, cost: Int(self.header.clusterSize))
        return table
    }

    /// The compressed cluster at `host`, inflated to a whole cluster (cached); with `.never`,
    /// only from the cache.
    /// - Throws: `.corrupt` naming the file and the host offset when it does not inflate to one.
    private func inflatedCluster(host: UInt64, stored: UInt64, guestOffset: UInt64, waiting: Waiting)
        throws(StrataError) -> [UInt8]?
    {
        if let cluster = self.inflatedCache.lookup(host, waiting) { return cluster }
        if waiting == .never { return nil }
        let available = min(stored, self.file.size - host)
        let input = try self.file.bytes(at: host, count: Int(available))
        let clusterSize = Int(self.header.clusterSize)
        guard let cluster = RawDeflate.inflate(input, count: clusterSize) else {
            throw ImageErrors.corruptRead(
                self.file.path, "compressed cluster does not inflate to a full cluster",
                "host_offset=\(host) compressed_bytes=\(available) guest_offset=\(guestOffset) "
                    + "cluster_bytes=\(clusterSize)")
        }
        self.inflatedCache.insert(host, cluster, cost: clusterSize)
        return cluster
    }
}
