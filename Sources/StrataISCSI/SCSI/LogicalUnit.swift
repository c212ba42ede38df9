// A logical unit: one volume or snapshot as a SCSI direct-access block device (SBC-4), with
// 512-byte logical blocks over the engine's byte-addressed volumes. Thin provisioning is
// reported as it is (LBPME, LBPRZ; UNMAP and WRITE SAME with UNMAP free whole chunks, and a
// freed block reads as zeros), GET LBA STATUS reads the mapping tree, SYNCHRONIZE CACHE is an
// engine commit, and a write the pool has no space for ends in SPACE ALLOCATION FAILED.
//
// Which commands exist, and how each is checked and run, is `CommandTable`'s: this file holds
// the checks common to every command and the commands' bodies, which the table's handlers call.
//
// `execute` may block on disk I/O and runs on the target's thread pool. The connection answers a
// small READ on its event loop through `executeWithoutWaiting` when the engine can serve it
// without waiting (`InlineRule`, `Waiting.never`: try-locks, tree nodes in memory, data in the
// page cache); when any step would wait, the command goes to the thread pool like the others.
// The checks made as a command arrives (`dataOutLength`, on the event loop) also only try the
// engine's lock; a command they could not finish checking is checked again where it runs.

import Foundation
import StrataCore
import Synchronization

public final class LogicalUnit: Sendable {
    public static let blockSize: UInt64 = 512
    static let blockShift: UInt64 = 9
    /// MAXIMUM TRANSFER LENGTH (blocks): 32 MiB per command.
    static let maxTransferBlocks: UInt64 = 65536
    static let maxWriteSameBlocks: UInt64 = 1 << 24
    static let maxUnmapBlocks: UInt64 = 1 << 20
    static let maxUnmapDescriptors: UInt64 = 256
    static let maxCompareAndWriteBlocks: UInt64 = 255
    /// MAXIMUM ATOMIC TRANSFER LENGTH (blocks): 4 MiB, built whole in memory before its remap.
    static let maxAtomicBlocks: UInt64 = 8192

    public let pool: Pool
    public let handle: VolumeHandle
    /// What the administrator set for every unit of the daemon (the physical block size).
    public let settings: UnitSettings
    public let reservations = ReservationState()
    /// Mode page 08h WCE: when clear, every write is made durable before it completes.
    let writeCache = Atomic<Bool>(true)
    /// Mode page 0Ah SWP (SPC-4 §7.5.8): set, the unit refuses writes as a snapshot does, for
    /// every I_T nexus, until it is cleared. Not saved: the daemon starts with it clear.
    let softwareWriteProtect = Atomic<Bool>(false)
    /// A SANITIZE is running: other commands but the few `Sanitize.allowedWhileRunning` end in
    /// NOT READY, SANITIZE IN PROGRESS until it ends (SBC-4 §4.11.2).
    let sanitizing = Atomic<Bool>(false)
    /// Serializes COMPARE AND WRITE's read-compare-write.
    let compareLock = Mutex(())
    /// The copy manager's held results (RECEIVE COPY RESULTS), by I_T nexus and list identifier.
    let copyResults = CopyResults()
    /// The other units of the pool, which EXTENDED COPY's target descriptors name; nil for a
    /// unit on its own, which can only copy within itself.
    let table: UnitTable?

    public init(pool: Pool, handle: VolumeHandle, table: UnitTable? = nil, settings: UnitSettings = UnitSettings()) {
        self.pool = pool
        self.handle = handle
        self.table = table
        self.settings = settings
    }

    /// A session of `nexus` (TSIH `session`) logged in to the unit: resets reach it from now on.
    public func nexusJoined(_ nexus: String, session: UInt16) {
        self.reservations.nexusJoined(nexus, session: session)
    }

    /// Forgets what belonged to a session that ended: its nexus's legacy reservation, pending
    /// unit attentions and held copy results.
    public func nexusLost(_ nexus: String, session: UInt16) {
        self.reservations.nexusLost(nexus, session: session)
        self.copyResults.discard(nexus)
    }

    /// A snapshot, or a unit whose SWP is set: write commands end in DATA PROTECT.
    var readOnly: Bool { self.handle.readOnly || self.softwareWriteProtect.load(ordering: .relaxed) }

    func capacityBlocks() throws(StrataError) -> UInt64 {
        try self.pool.size(of: self.handle) >> Self.blockShift
    }

    /// The checks `precheck` makes before a command runs, and what they found.
    enum Precheck {
        case passed
        /// The command ends with this result (sense data, a reservation conflict).
        case refused(SCSIResult)
        /// A check would have waited for the engine (`Waiting.never`); nothing was decided.
        case wouldWait
    }

    /// What `dataOutLength` found.
    public struct DataOutPlan: Sendable, Equatable {
        /// The Data-Out bytes the command takes.
        public let length: Int
        /// Every check ran. False when the range check would have waited for the engine's lock
        /// on the event loop: the command is then checked again where it runs.
        public let checked: Bool
    }

    // MARK: Before the data arrives

    /// Checks a command before any Data-Out is solicited, and says how many bytes it takes from
    /// the initiator. A command that will fail anyway is answered without its data.
    /// `expectedLength` is the initiator's Expected Data Transfer Length. Runs on an event loop:
    /// it never waits for the engine (`DataOutPlan.checked`).
    public func dataOutLength(_ cdb: CDB, nexus: String, expectedLength: Int) -> Result<DataOutPlan, SCSIError> {
        var checked = true
        switch self.precheck(cdb, nexus: nexus, waiting: .never) {
        case .refused(let early): return .failure(SCSIError(early))
        case .wouldWait: checked = false
        case .passed: break
        }
        // `precheck` refuses a CDB that has no entry.
        guard let spec = CommandTable.spec(for: cdb) else { return .failure(SCSIError(.check(.invalidOpcode))) }
        let length = spec.dataOut.length(cdb)
        if let field = spec.exactDataOutField, expectedLength != length {
            return .failure(SCSIError(.check(.invalidField(byte: field))))
        }
        return .success(DataOutPlan(length: length, checked: checked))
    }

    /// Opcode, write protection, reservation and range checks common to every command. With
    /// `.never`, the range check only tries the engine's lock (`.wouldWait` when it is held).
    func precheck(_ cdb: CDB, nexus: String, waiting: Waiting = .allowed) -> Precheck {
        guard let spec = CommandTable.spec(for: cdb) else {
            if CommandTable.serviceActionOpcodes.contains(cdb.opcode) { return .refused(.check(.invalidField(byte: 1))) }
            return .refused(.check(.invalidOpcode))
        }
        if self.sanitizing.load(ordering: .acquiring) && !Sanitize.allowedWhileRunning.contains(spec.opcode) {
            return .refused(.check(.notReadySanitizeInProgress))
        }
        if spec.reportsAttention, let attention = self.reservations.takeAttention(nexus)
        {
            return .refused(.check(attention))
        }
        if !self.reservations.allows(nexus, spec.access) { return .refused(.reservationConflict) }
        if spec.writes && self.readOnly { return .refused(.check(.writeProtected)) }
        guard let extent = spec.extent else { return .passed }
        return self.checkExtent(cdb, extent, waiting: waiting)
    }

    /// LBA range, transfer length and protection-field checks of the block commands.
    private func checkExtent(_ cdb: CDB, _ extent: BlockExtent, waiting: Waiting) -> Precheck {
        // RDPROTECT / WRPROTECT / VRPROTECT: no protection information here (SBC-4 §4.22).
        if extent.protectionField && cdb[1] & 0xe0 != 0 {
            return .refused(.check(.invalidField(byte: 1, bit: 7)))
        }
        let capacity: UInt64
        switch Result(catching: { () throws(StrataError) in try self.pool.size(of: self.handle, waiting: waiting) }) {
        case .success(let bytes?): capacity = bytes >> Self.blockShift
        case .success(nil): return .wouldWait
        case .failure(let error): return .refused(Self.result(for: error))
        }
        let (lba, blocks) = Self.extent(cdb, capacity: capacity)
        let (end, overflow) = lba.addingReportingOverflow(blocks)
        if overflow || end > capacity || (blocks == 0 && lba > capacity) { return .refused(.check(.lbaOutOfRange)) }
        let blocksMax: UInt64
        switch extent.limit {
        case .transfer: blocksMax = Self.maxTransferBlocks
        case .writeSame: blocksMax = Self.maxWriteSameBlocks
        case .compareAndWrite: blocksMax = Self.maxCompareAndWriteBlocks
        case .atomic: blocksMax = Self.maxAtomicBlocks
        case .none: return .passed
        }
        if blocks > blocksMax { return .refused(.check(.invalidField(byte: extent.lengthByte))) }
        return .passed
    }

    /// A block command's LBA and number of blocks, where 0 blocks means "to the end of the
    /// medium" for SYNCHRONIZE CACHE, PRE-FETCH and WRITE SAME (WSNZ is 0).
    static func extent(_ cdb: CDB, capacity: UInt64) -> (lba: UInt64, blocks: UInt64) {
        let (lba, blocks) = cdb.extent
        guard blocks == 0, CommandTable.spec(opcode: cdb.opcode)?.extent?.zeroMeansToEnd == true else {
            return (lba, blocks)
        }
        return (lba, lba < capacity ? capacity - lba : 0)
    }

    // MARK: Execution

    /// Runs a command whose data (if any) has arrived. `data` may be shorter than
    /// `dataOutLength` said when the initiator's Expected Data Transfer Length was shorter.
    /// `prechecked` when `dataOutLength` ran for it with nothing in between.
    public func execute(_ cdb: CDB, data: [UInt8], nexus: String, prechecked: Bool = false) -> SCSIResult {
        if !prechecked, case .refused(let early) = self.precheck(cdb, nexus: nexus) { return early }
        let result = Result { () throws(SCSIError) -> SCSIResult in try self.dispatch(cdb, data: data, nexus: nexus) }
        switch result {
        case .success(let value): return value
        case .failure(let error): return error.result
        }
    }

    /// Runs a command whose table entry lets it run on an event loop (`InlineRule.read`) if the
    /// engine can serve it without waiting; nil, having changed nothing the command's run on the
    /// thread pool would not change too, when a step would wait (or the engine fails: the
    /// thread pool's run reports that).
    public func executeWithoutWaiting(_ cdb: CDB, nexus: String, prechecked: Bool) -> SCSIResult? {
        guard CommandTable.spec(for: cdb)?.inline == .read else { return nil }
        if !prechecked {
            switch self.precheck(cdb, nexus: nexus, waiting: .never) {
            case .refused(let early): return early
            case .wouldWait: return nil
            case .passed: break
            }
        }
        let (lba, blocks) = cdb.extent
        guard blocks > 0 else { return .good() }
        let start = MonotonicClock.nanos()
        // Zeroed first: the holes the engine leaves as they are then read as zeros.
        var bytes = [UInt8](repeating: 0, count: Int(blocks << Self.blockShift))
        let served = bytes.withUnsafeMutableBytes { buffer -> Bool in
            do throws(StrataError) {
                return try self.pool.readLeavingHoles(self.handle, at: lba << Self.blockShift, into: buffer, waiting: .never) != nil
            } catch {
                // The command's run on the thread pool reads again and reports the error.
                return false
            }
        }
        guard served else { return nil }
        self.pool.countServed(self.handle, .read, bytes: UInt64(bytes.count), since: start)
        return .good(bytes)
    }

    /// Runs the command's handler from the table.
    private func dispatch(_ cdb: CDB, data: [UInt8], nexus: String) throws(SCSIError) -> SCSIResult {
        guard let spec = CommandTable.spec(for: cdb) else { return .check(.invalidOpcode) }
        return try spec.handler(self, cdb, data, nexus)
    }

    /// Runs engine work, turning its errors into sense data.
    func engine<T>(_ body: () throws(StrataError) -> T) throws(SCSIError) -> T {
        switch Result(catching: body) {
        case .success(let value): return value
        case .failure(let error): throw SCSIError(Self.result(for: error))
        }
    }

    static func result(for error: StrataError) -> SCSIResult {
        switch error.code {
        case .noSpace: return .check(.spaceAllocationFailed)
        case .readOnly: return .check(.writeProtected)
        case .invalidArgument: return .check(.lbaOutOfRange)
        case .notFound: return .check(.lunNotSupported)
        default: return .check(.mediumError)
        }
    }

    // MARK: Commands (called by the handlers in `CommandTable`)

    func requestSense(_ cdb: CDB, nexus: String) -> SCSIResult {
        let descriptor = cdb[1] & 0x01 != 0
        let code = self.reservations.takeAttention(nexus) ?? .noSense
        let sense = descriptor ? code.descriptor() : code.fixed()
        return .good(sense.truncated(to: UInt64(cdb[4])))
    }

    /// SYNCHRONIZE CACHE: an engine commit (the range is not looked at: a commit covers everything).
    func synchronizeCache() throws(SCSIError) -> SCSIResult {
        try self.engine { () throws(StrataError) in try self.pool.flush(self.handle) }
        return .good()
    }

    func readCapacity10(_ cdb: CDB) throws(SCSIError) -> SCSIResult {
        if cdb[8] & 0x01 == 0 && cdb.uint32(2) != 0 { return .check(.invalidField(byte: 2)) }
        let capacity = try self.engine { () throws(StrataError) in try self.capacityBlocks() }
        let last = capacity == 0 ? 0 : capacity - 1
        return .good(BigEndian.bytes(min(last, 0xffff_ffff), 4) + BigEndian.bytes(Self.blockSize, 4))
    }

    func readCapacity16(_ cdb: CDB) throws(SCSIError) -> SCSIResult {
        let capacity = try self.engine { () throws(StrataError) in try self.capacityBlocks() }
        var data = BigEndian.bytes(capacity == 0 ? 0 : capacity - 1, 8) + BigEndian.bytes(Self.blockSize, 4)
        data += [0, self.settings.logicalPerPhysicalExponent, 0xc0, 0]  // LBPME, LBPRZ; lowest aligned LBA 0
        data += [UInt8](repeating: 0, count: 16)
        return .good(data.truncated(to: cdb.uint32(10)))
    }

    func read(_ cdb: CDB) throws(SCSIError) -> SCSIResult {
        let (lba, blocks) = cdb.extent
        guard blocks > 0 else { return .good() }
        let bytes = try self.engine { () throws(StrataError) in
            try self.pool.read(self.handle, at: lba << Self.blockShift, count: Int(blocks << Self.blockShift))
        }
        return .good(bytes)
    }

    func write(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        let (lba, _) = cdb.extent
        guard !data.isEmpty else { return .good() }
        let fua = cdb.forceUnitAccess || !self.writeCache.load(ordering: .relaxed)
        try self.engine { () throws(StrataError) in
            try self.pool.write(self.handle, at: lba << Self.blockShift, data, fua: fua)
        }
        return .good()
    }

    /// WRITE ATOMIC(16) (SBC-4 §5.48): all blocks or none, for readers and across a crash.
    func writeAtomic(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        let (lba, _) = cdb.extent
        guard !data.isEmpty else { return .good() }
        let fua = cdb.forceUnitAccess || !self.writeCache.load(ordering: .relaxed)
        try self.engine { () throws(StrataError) in
            try self.pool.writeAtomic(self.handle, at: lba << Self.blockShift, data, fua: fua)
        }
        return .good()
    }

    func verify(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        let (lba, blocks) = cdb.extent
        let check = (cdb[1] >> 1) & 0x03
        if check == 2 { return .check(.invalidField(byte: 1, bit: 2)) }
        guard check != 0, blocks > 0 else { return .good() }
        let stored = try self.engine { () throws(StrataError) in
            try self.pool.read(self.handle, at: lba << Self.blockShift, count: Int(blocks << Self.blockShift))
        }
        let expected = check == 3 ? Self.repeated(data, count: Int(blocks)) : data
        if let offset = Self.firstDifference(stored, expected) {
            return .check(.miscompare, information: UInt32(truncatingIfNeeded: offset))
        }
        return .good()
    }

    /// `block` repeated `count` times.
    static func repeated(_ block: [UInt8], count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: block.count * count)
        out.withUnsafeMutableBytes { target in
            block.withUnsafeBytes { source in
                for index in 0..<count {
                    target.baseAddress!.advanced(by: index * block.count).copyMemory(
                        from: source.baseAddress!, byteCount: block.count)
                }
            }
        }
        return out
    }

    /// The offset of the first byte where `a` and `b` differ (a length difference counts).
    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
        let common = min(a.count, b.count)
        let equal = a.withUnsafeBytes { left in
            b.withUnsafeBytes { right in memcmp(left.baseAddress!, right.baseAddress!, common) == 0 }
        }
        if equal { return a.count == b.count ? nil : common }
        return (0..<common).first { a[$0] != b[$0] }
    }

    func writeSame(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        let capacity = try self.engine { () throws(StrataError) in try self.capacityBlocks() }
        let (lba, blocks) = Self.extent(cdb, capacity: capacity)
        let flags = cdb[1]
        if flags & 0x10 != 0 { return .check(.invalidField(byte: 1, bit: 4)) }  // ANCHOR: no anchored state
        if flags & 0x06 != 0 { return .check(.invalidField(byte: 1, bit: 1)) }  // PBDATA, LBDATA
        let noData = cdb.opcode == SCSIOpcode.writeSame16.rawValue && flags & 0x01 != 0
        let unmap = flags & 0x08 != 0
        let pattern = noData ? [UInt8](repeating: 0, count: Int(Self.blockSize)) : data
        guard pattern.count == Int(Self.blockSize) else { return .check(.invalidFieldInInformationUnit) }
        let offset = lba << Self.blockShift
        let length = blocks << Self.blockShift
        // With UNMAP the blocks are deallocated whatever the data block holds (SBC-4 §5.50: the
        // device server unmaps; with LBPRZ they then read as zeros), as Linux and LIO expect.
        if unmap {
            try self.engine { () throws(StrataError) in
                try self.pool.writeZeroes(self.handle, at: offset, length: length, allowTrim: true)
            }
            return .good()
        }
        try self.fill(with: pattern, at: offset, length: length, allowTrim: false)
        return .good()
    }

    /// Writes one block, repeated, over `length` bytes from `offset` (WRITE SAME, SANITIZE
    /// OVERWRITE). An all-zero block becomes the engine's write-zeroes, which deallocates whole
    /// chunks only with `allowTrim`.
    func fill(with block: [UInt8], at offset: UInt64, length: UInt64, allowTrim: Bool) throws(SCSIError) {
        precondition(block.count == Int(Self.blockSize), "fill: pattern of \(block.count) bytes, not one block")
        if block.allSatisfy({ $0 == 0 }) {
            try self.engine { () throws(StrataError) in
                try self.pool.writeZeroes(self.handle, at: offset, length: length, allowTrim: allowTrim)
            }
            return
        }
        let perPiece: UInt64 = 1 << 20
        let piece = Self.repeated(block, count: Int(min(length, perPiece) >> Self.blockShift))
        var position: UInt64 = 0
        while position < length {
            let count = min(UInt64(piece.count), length - position)
            try self.engine { () throws(StrataError) in
                try piece.withUnsafeBufferPointer { buffer throws(StrataError) in
                    try self.pool.write(
                        self.handle, at: offset + position, UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(count)))
                }
            }
            position += count
        }
    }

    func unmap(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        if cdb[1] & 0x01 != 0 { return .check(.invalidField(byte: 1, bit: 0)) }  // ANCHOR
        guard !data.isEmpty else { return .good() }
        guard data.count >= 8 else { return .check(.parameterListLengthError) }
        let descriptorBytes = Int(BigEndian.read(data, 2, 2))
        let usable = min(descriptorBytes, data.count - 8) / 16 * 16
        guard UInt64(usable / 16) <= Self.maxUnmapDescriptors else { return .check(.invalidParameter(byte: 2)) }
        let capacity = try self.engine { () throws(StrataError) in try self.capacityBlocks() }
        var ranges: [(UInt64, UInt64)] = []
        for start in stride(from: 8, to: 8 + usable, by: 16) {
            let lba = BigEndian.read(data, start, 8)
            let blocks = BigEndian.read(data, start + 8, 4)
            let (end, overflow) = lba.addingReportingOverflow(blocks)
            if overflow || end > capacity { return .check(.lbaOutOfRange) }
            if blocks > Self.maxUnmapBlocks { return .check(.invalidParameter(byte: start + 8)) }
            ranges.append((lba, blocks))
        }
        for (lba, blocks) in ranges where blocks > 0 {
            try self.engine { () throws(StrataError) in
                try self.pool.trim(self.handle, at: lba << Self.blockShift, length: blocks << Self.blockShift)
            }
        }
        return .good()
    }

    func compareAndWrite(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        let (lba, blocks) = cdb.extent
        guard blocks > 0 else { return .good() }
        let length = Int(blocks << Self.blockShift)
        guard data.count == 2 * length else { return .check(.invalidFieldInInformationUnit) }
        let fua = cdb.forceUnitAccess || !self.writeCache.load(ordering: .relaxed)
        return try self.compareLock.withLock { _ throws(SCSIError) -> SCSIResult in
            let stored = try self.engine { () throws(StrataError) in
                try self.pool.read(self.handle, at: lba << Self.blockShift, count: length)
            }
            if let offset = Self.firstDifference(stored, Array(data[0..<length])) {
                return .check(.miscompare, information: UInt32(offset))
            }
            try self.engine { () throws(StrataError) in
                try self.pool.write(self.handle, at: lba << Self.blockShift, Array(data[length...]), fua: fua)
            }
            return .good()
        }
    }

    /// ORWRITE(16) (SBC-3 §5.10): each byte becomes itself OR the byte sent; atomic against
    /// other ORWRITEs and COMPARE AND WRITEs.
    func orWrite(_ cdb: CDB, data: [UInt8]) throws(SCSIError) -> SCSIResult {
        let (lba, _) = cdb.extent
        guard !data.isEmpty else { return .good() }
        let fua = cdb.forceUnitAccess || !self.writeCache.load(ordering: .relaxed)
        return try self.compareLock.withLock { _ throws(SCSIError) -> SCSIResult in
            var stored = try self.engine { () throws(StrataError) in
                try self.pool.read(self.handle, at: lba << Self.blockShift, count: data.count)
            }
            for index in 0..<stored.count { stored[index] |= data[index] }
            try self.engine { () throws(StrataError) in
                try self.pool.write(self.handle, at: lba << Self.blockShift, stored, fua: fua)
            }
            return .good()
        }
    }

    func lbaStatus(_ cdb: CDB) throws(SCSIError) -> SCSIResult {
        let lba = cdb.uint64(2)
        let allocation = cdb.uint32(10)
        let capacity = try self.engine { () throws(StrataError) in try self.capacityBlocks() }
        guard lba < capacity else { return .check(.lbaOutOfRange) }
        // Enough descriptors to fill the allocation length; a window of the volume at a time.
        let wanted = max(1, Int(min(allocation, 1 << 20) / 16))
        let window = min(capacity - lba, UInt64(1) << 21)  // 1 GiB of blocks
        let extents = try self.engine { () throws(StrataError) in
            try self.pool.mapping(self.handle, at: lba << Self.blockShift, length: window << Self.blockShift)
        }
        var descriptors: [UInt8] = []
        for extent in extents.prefix(wanted) {
            // The first descriptor starts at the LBA asked for, not at its chunk's start.
            let first = max(extent.offset >> Self.blockShift, lba)
            let count = (extent.offset + extent.length + Self.blockSize - 1) >> Self.blockShift - first
            descriptors += BigEndian.bytes(first, 8) + BigEndian.bytes(min(count, 0xffff_ffff), 4)
            descriptors += [extent.mapped ? 0 : 1, 0, 0, 0]
        }
        let data = BigEndian.bytes(UInt64(descriptors.count + 4), 4) + [0, 0, 0, 0] + descriptors
        return .good(data.truncated(to: allocation))
    }

    func reportLUNs(_ cdb: CDB) throws(SCSIError) -> SCSIResult {
        let allocation = cdb.uint32(6)
        guard allocation >= 16 else { return .check(.invalidField(byte: 6)) }
        let select = cdb[2]
        let data: [UInt8]
        switch select {
        case 0x00, 0x02: data = BigEndian.bytes(8, 4) + [0, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        case 0x01, 0x10, 0x11: data = BigEndian.bytes(0, 4) + [0, 0, 0, 0]
        case 0x12: data = BigEndian.bytes(8, 4) + [0, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        default: return .check(.invalidField(byte: 2))
        }
        return .good(data.truncated(to: allocation))
    }

    func persistentReserveIn(_ cdb: CDB) -> SCSIResult {
        let allocation = cdb.uint16(7)
        let data: [UInt8]
        switch cdb.serviceAction {
        case 0x00: data = self.reservations.readKeys()
        case 0x01: data = self.reservations.readReservation()
        case 0x02: data = ReservationState.reportCapabilities()
        case 0x03: data = self.reservations.readFullStatus()
        default: return .check(.invalidField(byte: 1))
        }
        return .good(data.truncated(to: allocation))
    }

    func persistentReserveOut(_ cdb: CDB, data: [UInt8], nexus: String) -> SCSIResult {
        guard let action = ReservationState.OutAction(rawValue: cdb.serviceAction) else {
            return .check(.invalidField(byte: 1))
        }
        guard cdb.uint32(5) == 24, data.count == 24 else { return .check(.parameterListLengthError) }
        let flags = data[20]
        if flags & 0x08 != 0 { return .check(.invalidParameter(byte: 20, bit: 3)) }  // SPEC_I_PT
        if flags & 0x01 != 0 { return .check(.invalidParameter(byte: 20, bit: 0)) }  // APTPL
        return self.reservations.out(
            action, nexus: nexus, key: BigEndian.read(data, 0, 8), serviceKey: BigEndian.read(data, 8, 8),
            type: cdb[2] & 0x0f, scope: cdb[2] >> 4)
    }
}

/// A command's failure with its status and sense, thrown through the command code.
public struct SCSIError: Error {
    public let result: SCSIResult
    init(_ result: SCSIResult) { self.result = result }
}
