// EXTENDED COPY (LID1), RECEIVE COPY RESULTS, the Third-party Copy VPD page, WRITE ATOMIC(16)
// and READ DEFECT DATA on logical units of one pool, through a `UnitTable` as the daemon uses it.

import StrataCore
import StrataTesting
import Testing

@testable import StrataISCSI

@Suite("iSCSI copy offload and atomic writes")
struct CopyOffloadTests {
    static let chunk: UInt64 = 4096
    let pool: Pool
    let table: UnitTable
    let a: LogicalUnit
    let b: LogicalUnit
    let nexus = "iqn.a,i,0x800000000001"

    init() throws {
        let device = SimDevice(size: 512 * 4096 + 1024 * Self.chunk)
        try Pool.format(device: device, chunkSize: Self.chunk, metadataPages: 512)
        self.pool = try Pool(device: device)
        try self.pool.createVolume("a", size: 1 << 20)
        try self.pool.createVolume("b", size: 1 << 20)
        self.table = UnitTable(pool: self.pool)
        self.a = try self.table.unit(for: "a")
        self.b = try self.table.unit(for: "b")
    }

    func sense(_ result: SCSIResult) -> [UInt8] {
        result.status == .checkCondition && result.sense.count >= 14
            ? [result.sense[2] & 0x0f, result.sense[12], result.sense[13]] : []
    }

    /// The identification target descriptor (E4h) of `unit`, from its VPD page 83h: the first
    /// designator whose type is NAA (3), as libiscsi picks it.
    func target(_ unit: LogicalUnit) -> [UInt8] {
        let page = unit.execute(CDB([0x12, 0x01, 0x83, 0, 255, 0]), data: [], nexus: self.nexus).data
        var offset = 4
        while offset < page.count, page[offset + 1] & 0x0f != 3 { offset += 4 + Int(page[offset + 3]) }
        let length = Int(page[offset + 3])
        var descriptor = [UInt8](repeating: 0, count: 32)
        descriptor[0] = 0xe4
        descriptor.replaceSubrange(4..<(8 + length), with: page[offset..<(offset + 4 + length)])
        descriptor[31] = 0x00
        descriptor[30] = 0x02  // block length 512
        return descriptor
    }

    static func segment(source: Int, destination: Int, blocks: Int, from: UInt64, to: UInt64) -> [UInt8] {
        [0x02, 0, 0, 0x18] + BigEndian.bytes(UInt64(source), 2) + BigEndian.bytes(UInt64(destination), 2)
            + [0, 0] + BigEndian.bytes(UInt64(blocks), 2) + BigEndian.bytes(from, 8) + BigEndian.bytes(to, 8)
    }

    static func parameters(listID: UInt8 = 1, usage: UInt8 = 0, targets: [[UInt8]], segments: [[UInt8]]) -> [UInt8] {
        let targetBytes = targets.joined().count
        let segmentBytes = segments.joined().count
        return [listID, usage << 3] + BigEndian.bytes(UInt64(targetBytes), 2) + [0, 0, 0, 0]
            + BigEndian.bytes(UInt64(segmentBytes), 4) + [0, 0, 0, 0] + Array(targets.joined()) + Array(segments.joined())
    }

    func extendedCopy(_ list: [UInt8], on unit: LogicalUnit? = nil) -> SCSIResult {
        let cdb = CDB([0x83, 0x00] + [UInt8](repeating: 0, count: 8) + BigEndian.bytes(UInt64(list.count), 4) + [0, 0])
        return (unit ?? self.a).execute(cdb, data: list, nexus: self.nexus)
    }

    @Test func copiesBetweenTwoVolumesSharingAlignedChunks() throws {
        var random = SeededRandom(seed: 83)
        let data = random.bytes(1 << 20)
        try self.pool.write(self.a.handle, at: 0, data)
        let used = self.pool.status().dataUsedBytes
        let list = Self.parameters(
            targets: [self.target(self.a), self.target(self.b)],
            segments: [
                Self.segment(source: 0, destination: 1, blocks: 1024, from: 0, to: 0),
                Self.segment(source: 0, destination: 1, blocks: 3, from: 1025, to: 1030),
            ])
        #expect(self.extendedCopy(list).status == .good)
        #expect(try self.pool.read(self.b.handle, at: 0, count: 512 << 10) == Array(data[0..<(512 << 10)]))
        #expect(try self.pool.read(self.b.handle, at: 1030 * 512, count: 1536) == Array(data[(1025 * 512)..<(1028 * 512)]))
        // 512 KiB shared, one fresh chunk for the unaligned segment.
        #expect(self.pool.status().dataUsedBytes <= used + 2 * Self.chunk)
        let status = self.b.execute(CDB([0x84, 0x00, 1] + [UInt8](repeating: 0, count: 13)), data: [], nexus: self.nexus)
        #expect(self.a.execute(CDB([0x84, 0x00, 1] + [UInt8](repeating: 0, count: 7) + [0, 0, 0, 12, 0, 0]), data: [], nexus: self.nexus).data
            == BigEndian.bytes(8, 4) + [0x01, 0, 2, 0] + BigEndian.bytes(1027 * 512, 4))
        // Held per unit (the copy manager that ran it) and returned once.
        #expect(self.sense(status) == [0x05, 0x24, 0x00])
        let again = self.a.execute(CDB([0x84, 0x00, 1] + [UInt8](repeating: 0, count: 7) + [0, 0, 0, 12, 0, 0]), data: [], nexus: self.nexus)
        #expect(self.sense(again) == [0x05, 0x24, 0x00])
    }

    @Test func refusesWhatSPC4Refuses() throws {
        try self.pool.createSnapshot("a", "s")
        let snapshot = try self.table.unit(for: "a@s")
        let one = [Self.segment(source: 0, destination: 1, blocks: 8, from: 0, to: 0)]
        // A snapshot as destination: DATA PROTECT.
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [self.target(self.a), self.target(snapshot)], segments: one))) == [0x07, 0x27, 0x00])
        // A destination index past the target list, and a designator naming nothing: COPY ABORTED.
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [self.target(self.a)], segments: one))) == [0x0a, 0x08, 0x04])
        var stranger = self.target(self.b)
        stranger[15] ^= 0xff
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [self.target(self.a), stranger], segments: one))) == [0x0a, 0x08, 0x04])
        // Past the end of the destination.
        let beyond = [Self.segment(source: 0, destination: 1, blocks: 8, from: 0, to: 2044)]
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [self.target(self.a), self.target(self.b)], segments: beyond))) == [0x0a, 0x00, 0x00])
        // Types, counts and lengths.
        var fibre = self.target(self.a)
        fibre[0] = 0xe0
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [fibre], segments: one))) == [0x05, 0x26, 0x07])
        var stream = one[0]
        stream[0] = 0x09
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [self.target(self.a)], segments: [stream]))) == [0x05, 0x26, 0x09])
        let nine = [[UInt8]](repeating: self.target(self.a), count: 9)
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: nine, segments: one))) == [0x05, 0x26, 0x06])
        let many = [[UInt8]](repeating: one[0], count: 129)
        #expect(self.sense(self.extendedCopy(Self.parameters(targets: [self.target(self.a)], segments: many))) == [0x05, 0x26, 0x08])
        let full = Self.parameters(targets: [self.target(self.a), self.target(self.b)], segments: one)
        #expect(self.sense(self.extendedCopy(Array(full.dropLast(1)))) == [0x05, 0x1a, 0x00])
        // Nothing was copied by any refused list.
        #expect(try self.pool.read(self.b.handle, at: 0, count: 4096).allSatisfy { $0 == 0 })
    }

    @Test func operatingParametersAndThirdPartyCopyPage() {
        let parameters = self.a.execute(CDB([0x84, 0x03] + [UInt8](repeating: 0, count: 8) + [0, 0, 4, 0, 0, 0]), data: [], nexus: self.nexus).data
        #expect(BigEndian.read(parameters, 8, 2) == 8)
        #expect(BigEndian.read(parameters, 10, 2) == 128)
        #expect(BigEndian.read(parameters, 12, 4) == 4096)
        #expect(Array(parameters[43...]) == [2, 0x02, 0xe4])
        #expect(BigEndian.read(parameters, 0, 4) == UInt64(parameters.count - 4))
        let standard = self.a.execute(CDB([0x12, 0, 0, 0, 96, 0]), data: [], nexus: self.nexus).data
        #expect(standard[5] & 0x08 != 0)  // 3PC
        let page = self.a.execute(CDB([0x12, 0x01, 0x8f, 1, 0, 0]), data: [], nexus: self.nexus).data
        #expect(page[1] == 0x8f)
        #expect(Int(BigEndian.read(page, 2, 2)) == page.count - 4)
        // Every descriptor is a multiple of 4 bytes and the first lists EXTENDED COPY.
        var offset = 4
        var types: [UInt64] = []
        while offset < page.count {
            types.append(BigEndian.read(page, offset, 2))
            let length = Int(BigEndian.read(page, offset + 2, 2))
            #expect((length + 4) % 4 == 0)
            offset += 4 + length
        }
        #expect(types == [0x0001, 0x0004, 0x0008, 0x000c, 0x8001])
        #expect(page[9] == 0x83)
    }

    @Test func writeAtomicIsAllOrNothingAndRangeChecked() throws {
        let cdb = { (lba: UInt64, blocks: UInt64) in
            CDB([0x9c, 0] + BigEndian.bytes(lba, 8) + [0, 0] + BigEndian.bytes(blocks, 2) + [0, 0])
        }
        let data = [UInt8](repeating: 0x5a, count: 9 * 512)
        #expect(self.a.execute(cdb(7, 9), data: data, nexus: self.nexus).status == .good)
        #expect(try self.pool.read(self.a.handle, at: 7 * 512, count: 9 * 512) == data)
        #expect(try self.pool.read(self.a.handle, at: 6 * 512, count: 512).allSatisfy { $0 == 0 })
        #expect(self.sense(self.a.execute(cdb(2047, 2), data: [], nexus: self.nexus)) == [0x05, 0x21, 0x00])
        try self.pool.createVolume("big", size: 64 << 20)
        let big = try self.table.unit(for: "big")
        #expect(self.sense(big.execute(cdb(0, 8193), data: [], nexus: self.nexus)) == [0x05, 0x24, 0x00])
        let limits = self.a.execute(CDB([0x12, 0x01, 0xb0, 0, 64, 0]), data: [], nexus: self.nexus).data
        #expect(BigEndian.read(limits, 44, 4) == 8192)
        // A buffer shorter than the CDB asks for is refused before anything is written.
        let short = self.a.dataOutLength(cdb(0, 2), nexus: self.nexus, expectedLength: 512)
        #expect(throws: SCSIError.self) { try short.get() }
    }

    @Test func readDefectDataIsAnEmptyList() {
        let ten = self.a.execute(CDB([0x37, 0, 0x1d, 0, 0, 0, 0, 0, 32, 0]), data: [], nexus: self.nexus)
        #expect(ten.data == [0, 0x1d, 0, 0])
        let twelve = self.a.execute(CDB([0xb7, 0x0d, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]), data: [], nexus: self.nexus)
        #expect(twelve.data == [0, 0x0d, 0, 0, 0, 0, 0, 0])
    }
}
