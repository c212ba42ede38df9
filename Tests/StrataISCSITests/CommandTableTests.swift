// The SCSI command table is the one list of opcodes: every opcode named has an entry, every
// entry dispatches to its own handler through `LogicalUnit.execute`, REPORT SUPPORTED
// OPERATION CODES answers exactly what the table holds, and the per-command rules (Data-Out
// length, extent limits, inline execution) are read from the entries.

import StrataCore
import StrataTesting
import Testing

@testable import StrataISCSI

/// A 1 MiB volume `vm1` (2048 blocks) on a small simulated pool, as a logical unit.
func makeTestUnit() throws -> LogicalUnit {
    let device = SimDevice(size: 512 * 4096 + 96 * 4096)
    try Pool.format(device: device, chunkSize: 4096, metadataPages: 512)
    let pool = try Pool(device: device)
    try pool.createVolume("vm1", size: 1 << 20)
    return LogicalUnit(pool: pool, handle: try pool.handle("vm1"))
}

@Suite("SCSI command table")
struct CommandTableTests {
    let unit: LogicalUnit
    let nexus = "iqn.a,i,0x800000000001"

    init() throws {
        self.unit = try makeTestUnit()
    }

    /// The smallest CDB of an entry: its opcode, its service action, zeros elsewhere.
    static func cdb(_ spec: CommandSpec) -> CDB {
        var bytes = [UInt8](repeating: 0, count: spec.cdbLength)
        bytes[0] = spec.opcode.rawValue
        if let serviceAction = spec.serviceAction { bytes[1] = serviceAction }
        return CDB(bytes)
    }

    static func senseCode(_ result: SCSIResult) -> (key: UInt8, asc: UInt8, ascq: UInt8)? {
        guard result.status == .checkCondition, result.sense.count >= 14 else { return nil }
        return (result.sense[2] & 0x0f, result.sense[12], result.sense[13])
    }

    @Test func everyOpcodeHasAnEntryAndEveryEntryIsUnique() {
        let opcodes = Set(CommandTable.all.map(\.opcode))
        #expect(opcodes == Set(SCSIOpcode.allCases))
        let keys = CommandTable.all.map { UInt16($0.opcode.rawValue) << 8 | UInt16($0.serviceAction ?? 0) }
        #expect(keys == keys.sorted())
        #expect(Set(keys).count == keys.count)
        for spec in CommandTable.all where CommandTable.serviceActionOpcodes.contains(spec.opcode.rawValue) {
            #expect(spec.serviceAction != nil, "\(spec.name): an opcode with service actions needs one on every entry")
        }
    }

    /// Each entry's CDB reaches its own handler: `execute` answers exactly what calling the
    /// entry's handler answers, and never "invalid operation code".
    @Test(arguments: CommandTable.all.indices)
    func everyEntryDispatchesToItsHandler(index: Int) throws {
        let spec = CommandTable.all[index]
        let cdb = Self.cdb(spec)
        #expect(CommandTable.spec(for: cdb)?.name == spec.name)
        let executed = self.unit.execute(cdb, data: [], nexus: self.nexus)
        let direct = Result { () throws(SCSIError) in try spec.handler(self.unit, cdb, [], self.nexus) }
        let handled: SCSIResult
        switch direct {
        case .success(let value): handled = value
        case .failure(let error): handled = error.result
        }
        #expect(executed.status == handled.status, "\(spec.name)")
        #expect(executed.sense == handled.sense, "\(spec.name)")
        #expect(executed.data == handled.data, "\(spec.name)")
        if let code = Self.senseCode(executed) {
            #expect(!(code.asc == 0x20 && code.ascq == 0), "\(spec.name) answered invalid operation code")
        }
    }

    @Test func opcodesAndServiceActionsOutsideTheTableAreRefused() throws {
        let unknown = self.unit.execute(CDB([0xc7]), data: [], nexus: self.nexus)
        #expect(Self.senseCode(unknown)! == (0x05, 0x20, 0x00))
        // SERVICE ACTION IN(16) has entries for 0x10 and 0x12 only: 0x11 is an invalid field in byte 1.
        let action = self.unit.execute(CDB([0x9e, 0x11]), data: [], nexus: self.nexus)
        #expect(Self.senseCode(action)! == (0x05, 0x24, 0x00))
        #expect(action.sense[16] == 0 && action.sense[17] == 1)
    }

    /// RSOC option 0 lists each entry once, in table order, with its service action and CDB length.
    @Test func reportSupportedOperationCodesListsTheTable() throws {
        let rsoc = CDB([0xa3, 0x0c, 0x00, 0, 0, 0] + BigEndian.bytes(65536, 4) + [0, 0])
        let answer = self.unit.execute(rsoc, data: [], nexus: self.nexus)
        #expect(answer.status == .good)
        let listLength = Int(BigEndian.read(answer.data, 0, 4))
        #expect(listLength == CommandTable.all.count * 8)
        for (index, spec) in CommandTable.all.enumerated() {
            let descriptor = Array(answer.data[4 + index * 8..<4 + index * 8 + 8])
            #expect(descriptor[0] == spec.opcode.rawValue, "\(spec.name)")
            #expect(BigEndian.read(descriptor, 2, 2) == UInt64(spec.serviceAction ?? 0), "\(spec.name)")
            #expect(descriptor[5] & 0x01 == (spec.serviceAction == nil ? 0 : 1), "\(spec.name)")
            #expect(BigEndian.read(descriptor, 6, 2) == UInt64(spec.cdbLength), "\(spec.name)")
        }
    }

    /// RSOC options 1 and 2 return the entry's own usage map.
    @Test func reportSupportedOperationCodesReturnsEachEntrysUsageMap() throws {
        for spec in CommandTable.all {
            let option: UInt8 = spec.serviceAction == nil ? 1 : 2
            let rsoc = CDB(
                [0xa3, 0x0c, option, spec.opcode.rawValue] + BigEndian.bytes(UInt64(spec.serviceAction ?? 0), 2)
                    + BigEndian.bytes(512, 4) + [0, 0])
            let answer = self.unit.execute(rsoc, data: [], nexus: self.nexus)
            #expect(answer.data[1] & 0x07 == 0x03, "\(spec.name): supported")
            #expect(Int(BigEndian.read(answer.data, 2, 2)) == spec.cdbLength, "\(spec.name)")
            #expect(Array(answer.data[4...]) == spec.usageMap, "\(spec.name)")
            #expect(spec.usageMap[0] == spec.opcode.rawValue)
        }
        let missing = self.unit.execute(CDB([0xa3, 0x0c, 1, 0xc7, 0, 0] + BigEndian.bytes(512, 4) + [0, 0]), data: [], nexus: self.nexus)
        #expect(missing.data == [0, 0x01, 0, 0])
    }

    @Test func dataOutLengthsComeFromTheEntries() throws {
        func length(_ bytes: [UInt8], expected: Int = 1 << 20) throws -> Int {
            try self.unit.dataOutLength(CDB(bytes), nexus: self.nexus, expectedLength: expected).get().length
        }
        #expect(try length([0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0]) == 4096)  // WRITE(10), 8 blocks
        #expect(try length([0x0a, 0, 0, 0, 0, 0]) == 256 * 512)  // WRITE(6): 0 blocks is 256
        #expect(try length([0x2f, 0x02, 0, 0, 0, 0, 0, 0, 4, 0]) == 2048)  // VERIFY BYTCHK 01b
        #expect(try length([0x2f, 0x06, 0, 0, 0, 0, 0, 0, 4, 0]) == 512)  // VERIFY BYTCHK 11b
        #expect(try length([0x2f, 0x00, 0, 0, 0, 0, 0, 0, 4, 0]) == 0)  // VERIFY BYTCHK 00b
        #expect(try length([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]) == 24)  // UNMAP parameter list
        #expect(try length([0x15, 0x10, 0, 0, 28, 0]) == 28)  // MODE SELECT(6)
        #expect(try length([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]) == 0)  // READ takes nothing
        // WRITE SAME cannot take part of its block: another Expected Data Transfer Length is refused.
        #expect(try length([0x41, 0, 0, 0, 0, 0, 0, 0, 8, 0], expected: 512) == 512)
        #expect(throws: SCSIError.self) { try length([0x41, 0, 0, 0, 0, 0, 0, 0, 8, 0], expected: 256) }
    }

    /// A transfer length over the maximum points at the CDB's own length field: byte 10 in
    /// WRITE(16), where the old per-opcode switch pointed at byte 6.
    @Test func anOversizedTransferPointsAtItsLengthField() throws {
        try self.unit.pool.createVolume("big", size: 64 << 20)  // thin: 131072 blocks, none allocated
        let big = LogicalUnit(pool: self.unit.pool, handle: try self.unit.pool.handle("big"))
        let blocks = LogicalUnit.maxTransferBlocks + 1
        let write16 = CDB([0x8a, 0] + BigEndian.bytes(0, 8) + BigEndian.bytes(blocks, 4) + [0, 0])
        let refused = big.execute(write16, data: [], nexus: self.nexus)
        #expect(Self.senseCode(refused)! == (0x05, 0x24, 0x00))
        #expect(BigEndian.read(refused.sense, 16, 2) == 10)
        let read12 = CDB([0xa8, 0] + BigEndian.bytes(0, 4) + BigEndian.bytes(blocks, 4) + [0, 0])
        #expect(BigEndian.read(big.execute(read12, data: [], nexus: self.nexus).sense, 16, 2) == 6)
        let atLimit = CDB([0xa8, 0] + BigEndian.bytes(0, 4) + BigEndian.bytes(blocks - 1, 4) + [0, 0])
        #expect(big.execute(atLimit, data: [], nexus: self.nexus).status == .good)
    }

    /// Only small READs try the event loop; no write does, with or without FUA or the write
    /// cache (nothing proves a buffered write cannot wait).
    @Test func inlineExecutionIsTheEntrysRule() throws {
        func inline(_ bytes: [UInt8], _ expected: Int) -> Bool {
            CommandTable.spec(for: CDB(bytes))!.runsInline(expectedLength: expected)
        }
        #expect(inline([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096))  // READ(10)
        #expect(inline([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], 4096))  // READ(16)
        #expect(!inline([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], CommandTable.inlineBytesMax + 1))
        #expect(!inline([0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096))  // WRITE(10)
        #expect(!inline([0x2a, 0x08, 0, 0, 0, 0, 0, 0, 8, 0], 4096))  // with FUA
        #expect(!inline([0x0a, 0x08, 0, 0, 8, 0], 4096))  // WRITE(6)
        #expect(!inline([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0))  // SYNCHRONIZE CACHE
        #expect(!inline([0x2e, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096))  // WRITE AND VERIFY
        #expect(!inline([0x12, 0, 0, 0, 36, 0], 36))  // INQUIRY
    }
}
