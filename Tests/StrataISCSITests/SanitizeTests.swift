// SANITIZE (OVERWRITE, BLOCK ERASE; CRYPTOGRAPHIC ERASE and EXIT FAILURE MODE refused), the
// software write protect bit it is tested with, and the unit attentions a reset gives every
// session of a unit, over a real pool on a simulated device.

import StrataCore
import StrataTesting
import Testing

@testable import StrataISCSI

@Suite("iSCSI SANITIZE and write protection")
struct SanitizeTests {
    static let chunk: UInt64 = 4096
    /// The volume: 256 KiB, 512 blocks.
    static let blocks: UInt64 = 512
    let pool: Pool
    let unit: LogicalUnit
    let nexus = "iqn.a,i,0x800000000001"
    let other = "iqn.b,i,0x800000000002"

    init() throws {
        let fixture = try UnitFixture(chunk: Self.chunk, dataChunks: 256, volumeSize: Self.blocks * 512)
        self.pool = fixture.pool
        self.unit = fixture.unit
    }

    static func sanitize(_ action: UInt8, listLength: Int = 0, byte1: UInt8 = 0, reserved: (Int, UInt8)? = nil) -> CDB {
        var bytes: [UInt8] = [0x48, byte1 | action, 0, 0, 0, 0, 0] + BigEndian.bytes(UInt64(listLength), 2) + [0]
        if let (index, value) = reserved { bytes[index] = value }
        return CDB(bytes)
    }

    /// OVERWRITE's parameter list: INVERT, OVERWRITE COUNT, the pattern's length, the pattern.
    static func overwriteList(_ pattern: [UInt8], passes: UInt8 = 1, invert: Bool = false) -> [UInt8] {
        [(invert ? 0x80 : 0) | passes, 0] + BigEndian.bytes(UInt64(pattern.count), 2) + pattern
    }

    func run(_ cdb: CDB, _ data: [UInt8] = [], nexus: String? = nil) -> SCSIResult {
        self.unit.execute(cdb, data: data, nexus: nexus ?? self.nexus)
    }

    func readAll() -> [UInt8] {
        self.run(CDB([0x88, 0] + BigEndian.bytes(0, 8) + BigEndian.bytes(Self.blocks, 4) + [0, 0])).data
    }

    func writeOnes(lba: UInt64, blocks: UInt64) -> SCSIResult {
        let cdb = CDB([0x8a, 0] + BigEndian.bytes(lba, 8) + BigEndian.bytes(blocks, 4) + [0, 0])
        return self.run(cdb, [UInt8](repeating: 0xff, count: Int(blocks * 512)))
    }

    func sense(_ result: SCSIResult) throws -> (UInt8, UInt8, UInt8) {
        try #require(result.status == .checkCondition, "status \(result.status), not CHECK CONDITION")
        try #require(result.sense.count >= 14, "sense data of \(result.sense.count) bytes")
        return (result.sense[2] & 0x0f, result.sense[12], result.sense[13])
    }

    @Test func overwriteWritesThePatternOverEveryBlock() throws {
        #expect(self.writeOnes(lba: 0, blocks: 16).status == .good)
        let before = self.pool.committedGeneration
        let list = Self.overwriteList([1, 2, 3])
        #expect(self.run(Self.sanitize(0x01, listLength: list.count), list).status == .good)
        let data = self.readAll()
        #expect(data.count == Int(Self.blocks * 512))
        // The 3-byte pattern repeats within each block and starts again at every block.
        let block = (0..<512).map { UInt8([1, 2, 3][$0 % 3]) }
        #expect(data == LogicalUnit.repeated(block, count: Int(Self.blocks)))
        // It was committed before GOOD.
        #expect(self.pool.committedGeneration > before)
    }

    @Test func overwriteInvertsTheSecondPassAndZerosStayAllocated() throws {
        let list = Self.overwriteList([0x0f], passes: 2, invert: true)
        #expect(self.run(Self.sanitize(0x01, listLength: list.count), list).status == .good)
        #expect(self.readAll().allSatisfy { $0 == 0xf0 })
        let zeros = Self.overwriteList([0])
        #expect(self.run(Self.sanitize(0x01, listLength: zeros.count), zeros).status == .good)
        #expect(self.readAll().allSatisfy { $0 == 0 })
        let status = self.run(CDB([0x9e, 0x12] + BigEndian.bytes(0, 8) + [0, 0, 0, 24, 0, 0]))
        #expect(status.data[20] == 0)  // still mapped: OVERWRITE writes, it does not deallocate
    }

    @Test func blockEraseDeallocatesTheWholeUnit() throws {
        #expect(self.writeOnes(lba: 0, blocks: 16).status == .good)
        #expect(self.writeOnes(lba: Self.blocks - 16, blocks: 16).status == .good)
        #expect(self.run(Self.sanitize(0x02)).status == .good)
        #expect(self.readAll().allSatisfy { $0 == 0 })
        let status = self.run(CDB([0x9e, 0x12] + BigEndian.bytes(0, 8) + [0, 0, 1, 0, 0, 0]))
        let descriptors = (Int(BigEndian.read(status.data, 0, 4)) - 4) / 16
        #expect(descriptors >= 1)
        var next: UInt64 = 0
        for index in 0..<descriptors {
            let at = 8 + 16 * index
            #expect(BigEndian.read(status.data, at, 8) == next)
            #expect(status.data[at + 12] == 1)  // deallocated
            next += BigEndian.read(status.data, at + 8, 4)
        }
        #expect(next == Self.blocks)
    }

    @Test func badFieldsAreRefusedAsInvalidFieldInCDB() throws {
        let invalidCDB: (UInt8, UInt8, UInt8) = (0x05, 0x24, 0x00)
        #expect(try self.sense(self.run(Self.sanitize(0x02, byte1: 0x40))) == invalidCDB)
        for index in 2...6 {
            #expect(try self.sense(self.run(Self.sanitize(0x02, reserved: (index, 1)))) == invalidCDB)
        }
        #expect(try self.sense(self.run(Self.sanitize(0x02, listLength: 8), [UInt8](repeating: 0, count: 8))) == invalidCDB)
        for length in 0...4 {
            let list = [UInt8](repeating: 1, count: length)
            #expect(try self.sense(self.run(Self.sanitize(0x01, listLength: length), list)) == invalidCDB)
        }
        let tooLong = [UInt8](repeating: 0, count: 517)
        #expect(try self.sense(self.run(Self.sanitize(0x01, listLength: 517), tooLong)) == invalidCDB)
        let noPasses = Self.overwriteList([1], passes: 0)
        #expect(try self.sense(self.run(Self.sanitize(0x01, listLength: noPasses.count), noPasses)) == invalidCDB)
        let noPattern: [UInt8] = [1, 0, 0, 0, 0xaa]
        #expect(try self.sense(self.run(Self.sanitize(0x01, listLength: 5), noPattern)) == invalidCDB)
        var bigPattern = Self.overwriteList([UInt8](repeating: 1, count: 512))
        BigEndian.put(516, 2, into: &bigPattern, at: 2)
        #expect(try self.sense(self.run(Self.sanitize(0x01, listLength: bigPattern.count), bigPattern)) == invalidCDB)
        // CRYPTOGRAPHIC ERASE, EXIT FAILURE MODE and the undefined service actions.
        for action in [0x00, 0x03, 0x04, 0x10, 0x1f] as [UInt8] {
            #expect(try self.sense(self.run(Self.sanitize(action))) == invalidCDB)
        }
        // Nothing above touched the data.
        #expect(self.writeOnes(lba: 0, blocks: 1).status == .good)
        #expect(self.readAll().prefix(512).allSatisfy { $0 == 0xff })
    }

    @Test func snapshotsReservationsAndWriteProtectionFenceSanitize() throws {
        try self.pool.createSnapshot("vm1", "s1")
        let snapshot = LogicalUnit(pool: self.pool, handle: try self.pool.handle("vm1@s1"))
        let onSnapshot = snapshot.execute(Self.sanitize(0x02), data: [], nexus: self.nexus)
        #expect(try self.sense(onSnapshot) == (0x07, 0x27, 0x00))
        #expect(self.run(CDB([0x16, 0, 0, 0, 0, 0]), nexus: self.other).status == .good)  // RESERVE(6)
        #expect(self.run(Self.sanitize(0x02)).status == .reservationConflict)
        #expect(self.run(CDB([0x17, 0, 0, 0, 0, 0]), nexus: self.other).status == .good)  // RELEASE(6)
        // Set SWP in the control page from the other nexus: this one is refused too.
        var control = try #require(ModePages.page(ModePages.control, control: 0, unit: self.unit))
        control[4] |= ModePages.softwareWriteProtectBit
        let parameters: [UInt8] = [0, 0, 0, 0] + control
        let select = CDB([0x15, 0x10, 0, 0, UInt8(parameters.count), 0])
        #expect(self.run(select, parameters, nexus: self.other).status == .good)
        #expect(try self.sense(self.run(Self.sanitize(0x02))) == (0x07, 0x27, 0x00))
        #expect(try self.sense(self.writeOnes(lba: 0, blocks: 1)) == (0x07, 0x27, 0x00))
        let modeSense = self.run(CDB([0x1a, 0x08, 0x0a, 0, 255, 0]))
        #expect(modeSense.data[2] & 0x80 != 0)  // WP
        #expect(modeSense.data[4 + 4] & ModePages.softwareWriteProtectBit != 0)
        control[4] &= ~ModePages.softwareWriteProtectBit
        #expect(self.run(select, [0, 0, 0, 0] + control).status == .good)
        #expect(self.writeOnes(lba: 0, blocks: 1).status == .good)
    }

    @Test func supportedOperationsAndCharacteristicsDescribeSanitize() throws {
        let one: (UInt8) -> SCSIResult = { action in
            self.run(CDB([0xa3, 0x0c, 0x02, 0x48, 0, action, 0, 0, 1, 0, 0, 0]))
        }
        for action in [0x01, 0x02] as [UInt8] {
            let answer = one(action)
            #expect(answer.data[1] & 0x07 == 0x03)  // supported as the standard describes
            #expect(Array(answer.data[4...]) == Sanitize.usageMap(serviceAction: action))
        }
        #expect(one(0x03).data[1] & 0x07 == 0x01)  // CRYPTOGRAPHIC ERASE: not supported
        #expect(one(0x1f).data[1] & 0x07 == 0x01)
        let page = self.run(CDB([0x12, 0x01, 0xb1, 0, 64, 0]))
        #expect(page.data[7] >> 6 == 0x01)  // WABEREQ 01b: reads after BLOCK ERASE succeed
        #expect(page.data[7] >> 4 & 0x03 == 0x00)  // WACEREQ 00b: no CRYPTOGRAPHIC ERASE
    }

    @Test func aRunningSanitizeHoldsOffEverythingButInquiryAndReports() throws {
        self.unit.sanitizing.store(true, ordering: .releasing)
        let inProgress: (UInt8, UInt8, UInt8) = (0x02, 0x04, 0x1b)
        #expect(try self.sense(self.run(CDB([0x00, 0, 0, 0, 0, 0]))) == inProgress)
        #expect(try self.sense(self.run(CDB([0x88, 0] + BigEndian.bytes(0, 8) + [0, 0, 0, 1, 0, 0]))) == inProgress)
        #expect(try self.sense(self.run(Self.sanitize(0x02), nexus: self.other)) == inProgress)
        #expect(self.run(CDB([0x12, 0, 0, 0, 96, 0])).status == .good)  // INQUIRY
        #expect(self.run(CDB([0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0])).status == .good)  // REPORT LUNS
        self.unit.sanitizing.store(false, ordering: .releasing)
        #expect(self.run(CDB([0x00, 0, 0, 0, 0, 0])).status == .good)
    }

    @Test func resetsGiveEverySessionAUnitAttentionThatTestUnitReadyReports() throws {
        self.unit.nexusJoined(self.nexus, session: 1)
        self.unit.nexusJoined(self.other, session: 2)
        self.unit.reservations.reset(by: self.nexus)
        let testUnitReady = CDB([0x00, 0, 0, 0, 0, 0])
        for nexus in [self.nexus, self.other] {
            #expect(try self.sense(self.run(testUnitReady, nexus: nexus)) == (0x06, 0x29, 0x00))
            #expect(self.run(testUnitReady, nexus: nexus).status == .good)
        }
        // A session that ended takes its nexus's waiting attentions with it; a second call for
        // the same session (logout, then the connection closing) changes nothing.
        self.unit.reservations.reset(by: self.nexus)
        self.unit.nexusLost(self.other, session: 2)
        self.unit.nexusLost(self.other, session: 2)
        #expect(self.run(testUnitReady, nexus: self.other).status == .good)
        #expect(try self.sense(self.run(testUnitReady, nexus: self.nexus)) == (0x06, 0x29, 0x00))
    }
}
