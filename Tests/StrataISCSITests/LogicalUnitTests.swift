// The SCSI block command set over a real pool on a simulated device: data, ranges, thin
// provisioning, write protection, pool-full sense, COMPARE AND WRITE, mode pages and
// persistent reservations.

import StrataCore
import StrataTesting
import Testing

@testable import StrataISCSI

@Suite("iSCSI logical unit")
struct LogicalUnitTests {
    static let chunk: UInt64 = 4096
    let pool: Pool
    let unit: LogicalUnit
    let nexus = "iqn.a,i,0x800000000001"
    let other = "iqn.b,i,0x800000000002"

    init() throws {
        let fixture = try UnitFixture(chunk: Self.chunk, dataChunks: 96, volumeSize: 1 << 20)
        self.pool = fixture.pool
        self.unit = fixture.unit
    }

    func cdb(_ bytes: [UInt8]) -> CDB { CDB(bytes) }

    static func write16(lba: UInt64, blocks: UInt32, fua: Bool = false) -> CDB {
        CDB([0x8a, fua ? 0x08 : 0] + BigEndian.bytes(lba, 8) + BigEndian.bytes(UInt64(blocks), 4) + [0, 0])
    }

    static func read16(lba: UInt64, blocks: UInt32) -> CDB {
        CDB([0x88, 0] + BigEndian.bytes(lba, 8) + BigEndian.bytes(UInt64(blocks), 4) + [0, 0])
    }

    /// Sense key, ASC and ASCQ of a CHECK CONDITION; a test issue (not a crash) when the result
    /// is anything else.
    func sense(_ result: SCSIResult) throws -> (UInt8, UInt8, UInt8) {
        try #require(result.status == .checkCondition, "status \(result.status), not CHECK CONDITION")
        try #require(result.sense.count >= 14, "sense data of \(result.sense.count) bytes")
        return (result.sense[2] & 0x0f, result.sense[12], result.sense[13])
    }

    @Test func writesReadBackAndRangesAreChecked() throws {
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: $0 * 3) }
        #expect(self.unit.execute(Self.write16(lba: 5, blocks: 2), data: data, nexus: self.nexus).status == .good)
        let read = self.unit.execute(Self.read16(lba: 5, blocks: 2), data: [], nexus: self.nexus)
        #expect(read.data == data)
        let beyond = self.unit.execute(Self.read16(lba: 2047, blocks: 2), data: [], nexus: self.nexus)
        #expect(try self.sense(beyond) == (0x05, 0x21, 0x00))
        let unknown = self.unit.execute(self.cdb([0xc7]), data: [], nexus: self.nexus)
        #expect(try self.sense(unknown) == (0x05, 0x20, 0x00))
        let protected = self.unit.execute(self.cdb([0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]), data: [], nexus: self.nexus)
        #expect(try self.sense(protected) == (0x05, 0x24, 0x00))
    }

    /// The event loop's path: a READ the engine can serve without waiting is answered, one that
    /// would wait (here every read of data: the simulated device cannot tell what is cached)
    /// gives up for the thread pool, a refusal is answered at once, and a write never runs there.
    @Test func smallReadsTryTheEventLoopWithoutWaiting() throws {
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: $0 * 5) }
        #expect(self.unit.execute(Self.write16(lba: 5, blocks: 2), data: data, nexus: self.nexus).status == .good)
        #expect(self.unit.executeWithoutWaiting(Self.read16(lba: 5, blocks: 2), nexus: self.nexus, prechecked: false) == nil)
        let hole = try #require(
            self.unit.executeWithoutWaiting(Self.read16(lba: 800, blocks: 8), nexus: self.nexus, prechecked: false))
        #expect(hole.status == .good && hole.data == [UInt8](repeating: 0, count: 4096))
        let beyond = try #require(
            self.unit.executeWithoutWaiting(Self.read16(lba: 2047, blocks: 2), nexus: self.nexus, prechecked: false))
        #expect(try self.sense(beyond) == (0x05, 0x21, 0x00))
        #expect(self.unit.executeWithoutWaiting(Self.write16(lba: 800, blocks: 1), nexus: self.nexus, prechecked: false) == nil)
        // The checks made as a command arrives run on the event loop too, and say they ran.
        let plan = try self.unit.dataOutLength(Self.write16(lba: 5, blocks: 2), nexus: self.nexus, expectedLength: 1024).get()
        #expect(plan == LogicalUnit.DataOutPlan(length: 1024, checked: true))
    }

    @Test func capacityAndProvisioningAreReported() {
        let capacity = self.unit.execute(self.cdb([0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0]), data: [], nexus: self.nexus)
        #expect(BigEndian.read(capacity.data, 0, 8) == 2047)
        #expect(BigEndian.read(capacity.data, 8, 4) == 512)
        #expect(capacity.data[14] & 0xc0 == 0xc0)  // LBPME, LBPRZ
        let page = self.unit.execute(self.cdb([0x12, 0x01, 0xb2, 0, 64, 0]), data: [], nexus: self.nexus)
        #expect(page.data[1] == 0xb2 && page.data[5] & 0xe0 == 0xe0 && page.data[6] == 0x02)
    }

    /// Units of deleted volumes and snapshots do not stay in the table: a pool whose clones come
    /// and go keeps units only for objects that exist.
    @Test func deletedObjectsLeaveNoUnits() throws {
        let table = UnitTable(pool: self.pool)
        _ = try table.unit(for: "vm1")
        for round in 0..<5 {
            try self.pool.createSnapshot("vm1", "s\(round)")
            try self.pool.clone("vm1", "s\(round)", to: "c\(round)")
            _ = try table.unit(for: "c\(round)")
            _ = try table.unit(for: "vm1@s\(round)")
            try self.pool.deleteVolume("c\(round)")
            try self.pool.deleteSnapshot("vm1", "s\(round)")
        }
        _ = try table.unit(for: "vm1")
        try self.pool.createVolume("last", size: 1 << 20)
        _ = try table.unit(for: "last")
        #expect(table.count == 2)
    }

    /// `strata serve --iscsi-physical-block-size`: READ CAPACITY(16)'s LOGICAL BLOCKS PER
    /// PHYSICAL BLOCK EXPONENT and the Block Limits page's OPTIMAL TRANSFER LENGTH GRANULARITY
    /// follow the setting; the unmap granularity stays one chunk (a whole number of physical
    /// blocks at either setting), and logical blocks stay 512 bytes.
    @Test(arguments: [(UInt64(512), UInt8(0), UInt64(1)), (4096, 3, 8)])
    func physicalBlockSizeIsReported(bytes: UInt64, exponent: UInt8, perPhysical: UInt64) throws {
        let settings = try #require(UnitSettings(physicalBlockSize: bytes))
        let table = UnitTable(pool: self.pool, settings: settings)
        let unit = try table.unit(for: "vm1")
        #expect(unit.settings == settings)
        let capacity = unit.execute(self.cdb([0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0]), data: [], nexus: self.nexus)
        #expect(capacity.status == .good)
        #expect(BigEndian.read(capacity.data, 8, 4) == 512)
        #expect(capacity.data[13] & 0x0f == exponent)
        #expect(capacity.data[14] & 0x3f == 0 && capacity.data[15] == 0)  // lowest aligned LBA 0
        let limits = unit.execute(self.cdb([0x12, 0x01, 0xb0, 0, 64, 0]), data: [], nexus: self.nexus).data
        try #require(limits.count == 64)
        #expect(BigEndian.read(limits, 6, 2) == perPhysical)  // OPTIMAL TRANSFER LENGTH GRANULARITY
        let chunkBlocks = Self.chunk / 512
        #expect(BigEndian.read(limits, 12, 4) == chunkBlocks)  // OPTIMAL TRANSFER LENGTH
        #expect(BigEndian.read(limits, 28, 4) == chunkBlocks)  // OPTIMAL UNMAP GRANULARITY
        #expect(chunkBlocks % perPhysical == 0)
        #expect(BigEndian.read(limits, 32, 4) == 0x8000_0000)  // UGAVALID, alignment 0
    }

    /// The default is 4 KiB physical blocks, and only 512 and 4096 are settings.
    @Test func physicalBlockSizesOtherThan512And4096AreRefused() {
        #expect(UnitSettings().physicalBlockSize == 4096)
        #expect(LogicalUnit(pool: self.pool, handle: self.unit.handle).settings == UnitSettings())
        for bytes: UInt64 in [0, 1, 256, 511, 1024, 2048, 8192, 65536] {
            #expect(UnitSettings(physicalBlockSize: bytes) == nil, "\(bytes) bytes accepted")
        }
        #expect(UnitSettings(physicalBlockSize: 512)?.physicalBlockSize == 512)
    }

    @Test func unmapFreesChunksThatReadAsZeros() {
        let ones = [UInt8](repeating: 0xff, count: 8192)
        #expect(self.unit.execute(Self.write16(lba: 0, blocks: 16), data: ones, nexus: self.nexus).status == .good)
        let descriptor = BigEndian.bytes(0, 8) + BigEndian.bytes(16, 4) + [0, 0, 0, 0]
        let list = BigEndian.bytes(22, 2) + BigEndian.bytes(16, 2) + [0, 0, 0, 0] + descriptor
        let unmap = self.unit.execute(self.cdb([0x42, 0, 0, 0, 0, 0, 0, 0, UInt8(list.count), 0]), data: list, nexus: self.nexus)
        #expect(unmap.status == .good)
        #expect(self.unit.execute(Self.read16(lba: 0, blocks: 16), data: [], nexus: self.nexus).data.allSatisfy { $0 == 0 })
        let status = self.unit.execute(self.cdb([0x9e, 0x12] + BigEndian.bytes(0, 8) + [0, 0, 0, 24, 0, 0]), data: [], nexus: self.nexus)
        #expect(BigEndian.read(status.data, 8, 8) == 0)
        #expect(status.data[20] == 1)  // deallocated
    }

    @Test func snapshotsRefuseWritesWithDataProtect() throws {
        try self.pool.createSnapshot("vm1", "s1")
        let snapshot = LogicalUnit(pool: self.pool, handle: try self.pool.handle("vm1@s1"))
        let write = snapshot.execute(Self.write16(lba: 0, blocks: 1), data: [UInt8](repeating: 1, count: 512), nexus: self.nexus)
        #expect(try self.sense(write) == (0x07, 0x27, 0x00))
        let modeSense = snapshot.execute(self.cdb([0x1a, 0x08, 0x3f, 0, 255, 0]), data: [], nexus: self.nexus)
        #expect(modeSense.data[2] & 0x80 != 0)  // WP
    }

    @Test func fullPoolEndsInSpaceAllocationFailed() throws {
        try self.pool.createVolume("big", size: 1 << 30)
        let big = LogicalUnit(pool: self.pool, handle: try self.pool.handle("big"))
        let block = [UInt8](repeating: 7, count: 65536)
        var last = SCSIResult.good()
        for index in 0..<64 where last.status == .good {
            last = big.execute(Self.write16(lba: UInt64(index) * 128, blocks: 128), data: block, nexus: self.nexus)
        }
        #expect(try self.sense(last) == (0x07, 0x27, 0x07))
    }

    @Test func compareAndWriteWritesOnlyOnAMatch() throws {
        let old = [UInt8](repeating: 0x41, count: 512)
        let new = [UInt8](repeating: 0x42, count: 512)
        _ = self.unit.execute(Self.write16(lba: 9, blocks: 1), data: old, nexus: self.nexus)
        let caw = CDB([0x89, 0] + BigEndian.bytes(9, 8) + [0, 0, 0, 1, 0, 0])
        #expect(self.unit.execute(caw, data: old + new, nexus: self.nexus).status == .good)
        let miss = self.unit.execute(caw, data: old + old, nexus: self.nexus)
        #expect(try self.sense(miss) == (0x0e, 0x1d, 0x00))
        #expect(self.unit.execute(Self.read16(lba: 9, blocks: 1), data: [], nexus: self.nexus).data == new)
        #expect(throws: SCSIError.self) {
            try self.unit.dataOutLength(caw, nexus: self.nexus, expectedLength: 512).get()
        }
    }

    @Test func orWriteOrsAndWriteSameZeroBlocksReachesTheEnd() {
        _ = self.unit.execute(Self.write16(lba: 3, blocks: 1), data: [UInt8](repeating: 0x0f, count: 512), nexus: self.nexus)
        let orWrite = CDB([0x8b, 0] + BigEndian.bytes(3, 8) + BigEndian.bytes(1, 4) + [0, 0])
        #expect(self.unit.execute(orWrite, data: [UInt8](repeating: 0xf0, count: 512), nexus: self.nexus).status == .good)
        #expect(self.unit.execute(Self.read16(lba: 3, blocks: 1), data: [], nexus: self.nexus).data.allSatisfy { $0 == 0xff })
        // WRITE SAME(10) with 0 blocks from LBA 2040 writes the last 8 blocks.
        let pattern = [UInt8](repeating: 0x5a, count: 512)
        let writeSame = CDB([0x41, 0, 0, 0, 0x07, 0xf8, 0, 0, 0, 0])
        #expect(self.unit.execute(writeSame, data: pattern, nexus: self.nexus).status == .good)
        #expect(self.unit.execute(Self.read16(lba: 2040, blocks: 8), data: [], nexus: self.nexus).data.allSatisfy { $0 == 0x5a })
        // With UNMAP the data block does not matter: the blocks are deallocated and read zeros.
        let unmapSame = CDB([0x41, 0x08, 0, 0, 0x07, 0xf8, 0, 0, 8, 0])
        #expect(self.unit.execute(unmapSame, data: pattern, nexus: self.nexus).status == .good)
        #expect(self.unit.execute(Self.read16(lba: 2040, blocks: 8), data: [], nexus: self.nexus).data.allSatisfy { $0 == 0 })
    }

    @Test func modeSelectClearsTheWriteCache() throws {
        var page = try #require(ModePages.page(ModePages.caching, control: 0, unit: self.unit))
        page[2] &= ~0x04
        let parameters: [UInt8] = [0, 0, 0, 0] + page
        let select = self.unit.execute(self.cdb([0x15, 0x10, 0, 0, UInt8(parameters.count), 0]), data: parameters, nexus: self.nexus)
        #expect(select.status == .good)
        let cached = self.unit.writeCache.load(ordering: .relaxed)
        #expect(!cached)
        var wrong = parameters
        wrong[4 + 3] = 0xff
        let refused = self.unit.execute(self.cdb([0x15, 0x10, 0, 0, UInt8(wrong.count), 0]), data: wrong, nexus: self.nexus)
        #expect(try self.sense(refused) == (0x05, 0x26, 0x00))
    }

    func prOut(_ action: UInt8, type: UInt8 = 0, key: UInt64, serviceKey: UInt64, nexus: String) -> SCSIResult {
        let parameters = BigEndian.bytes(key, 8) + BigEndian.bytes(serviceKey, 8) + [UInt8](repeating: 0, count: 8)
        return self.unit.execute(self.cdb([0x5f, action, type, 0, 0, 0, 0, 0, 24, 0]), data: parameters, nexus: nexus)
    }

    @Test func persistentReservationsFenceOtherInitiators() throws {
        #expect(self.prOut(0, key: 0, serviceKey: 0xaa, nexus: self.nexus).status == .good)
        #expect(self.prOut(0, key: 0, serviceKey: 0xbb, nexus: self.other).status == .good)
        #expect(self.prOut(1, type: 1, key: 0xaa, serviceKey: 0, nexus: self.nexus).status == .good)  // write exclusive
        let block = [UInt8](repeating: 3, count: 512)
        #expect(self.unit.execute(Self.write16(lba: 0, blocks: 1), data: block, nexus: self.other).status == .reservationConflict)
        #expect(self.unit.execute(Self.read16(lba: 0, blocks: 1), data: [], nexus: self.other).status == .good)
        #expect(self.unit.execute(Self.write16(lba: 0, blocks: 1), data: block, nexus: self.nexus).status == .good)
        let keys = self.unit.execute(self.cdb([0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0]), data: [], nexus: self.other)
        #expect(BigEndian.read(keys.data, 4, 4) == 16)
        // The other initiator preempts the holder and takes the reservation.
        #expect(self.prOut(4, type: 1, key: 0xbb, serviceKey: 0xaa, nexus: self.other).status == .good)
        #expect(self.unit.execute(Self.write16(lba: 0, blocks: 1), data: block, nexus: self.other).status == .good)
        // The preempted initiator is told once, then fenced.
        let attention = self.unit.execute(Self.write16(lba: 0, blocks: 1), data: block, nexus: self.nexus)
        #expect(try self.sense(attention) == (0x06, 0x2a, 0x05))
        #expect(self.unit.execute(Self.write16(lba: 0, blocks: 1), data: block, nexus: self.nexus).status == .reservationConflict)
        #expect(self.prOut(0, key: 0xaa, serviceKey: 0xcc, nexus: self.nexus).status == .reservationConflict)
    }
}
