// SANITIZE (SBC-4 §5.30): OVERWRITE and BLOCK ERASE of a whole logical unit.
//
// - OVERWRITE (01h) writes the initialization pattern of the parameter list (repeated to fill a
//   block, inverted between passes when INVERT is set) over every block, once per pass of the
//   OVERWRITE COUNT. The writes go through the engine like any WRITE: a chunk only this volume
//   holds is overwritten where it lies; a chunk a snapshot or clone shares is copied on write,
//   so the other unit keeps its data (it is another logical unit, which this SANITIZE does not
//   touch). An all-zero pattern writes zeros without deallocating (space stays allocated).
// - BLOCK ERASE (02h) on a thin volume deallocates every block (the engine's trim): afterwards
//   the whole unit reads as zeros (LBPRZ) and GET LBA STATUS reports it deallocated. Reads
//   succeed at once, which the Block Device Characteristics page says (WABEREQ 01b).
// - CRYPTOGRAPHIC ERASE (03h) is not supported: the pool stores no per-volume key to change,
//   so the service action is refused with INVALID FIELD IN CDB, as for any service action the
//   device server does not support, and REPORT SUPPORTED OPERATION CODES does not list it.
//   EXIT FAILURE MODE (1Fh) is refused the same way: an OVERWRITE or BLOCK ERASE that fails
//   (EIO, a full pool) ends in its own sense data and leaves the unit usable, so there is no
//   sanitize failure mode to leave.
//
// Checks (SBC-4 Table 64): byte 1 bit 6 and bytes 2–6 are reserved and must be zero; BLOCK
// ERASE takes no parameter list; OVERWRITE's PARAMETER LIST LENGTH is 5 to block size + 4,
// its OVERWRITE COUNT is not zero and its INITIALIZATION PATTERN LENGTH is 1 to the block size
// and fits the list. libiscsi's Sanitize tests expect INVALID FIELD IN CDB for each of these.
// IMMED is accepted: the command still answers when the sanitize has finished, which an
// initiator polling with TEST UNIT READY cannot tell from an immediate answer. The unit is
// committed before GOOD, so a finished sanitize survives a crash.
//
// While it runs, every other command to the unit, from any I_T nexus, but INQUIRY, REPORT
// LUNS, REQUEST SENSE and the MAINTENANCE IN reports ends in NOT READY, LOGICAL UNIT NOT READY,
// SANITIZE IN PROGRESS (SBC-4 §4.11.2); a second SANITIZE too. The sanitize belongs to the unit,
// not to the command that started it: ABORT TASK, ABORT TASK SET, the resets and the loss of the
// connection end the command (task management answers at once, `CommandSpec.outlivesAbort`;
// the answer of an aborted SANITIZE is dropped), while the engine finishes the overwrite or
// erase and every session, a new login's too, gets NOT READY until it has.
// Not kept across a restart: a sanitize the daemon did not finish left some blocks sanitized
// and the others as they were, and is run again.

import StrataCore

enum Sanitize {
    static let overwrite: UInt8 = 0x01
    static let blockErase: UInt8 = 0x02

    /// The usage map REPORT SUPPORTED OPERATION CODES returns (SPC-4 §6.35.3): IMMED, AUSE and
    /// the service action in byte 1, bytes 2–6 reserved, the parameter list length, CONTROL.
    static func usageMap(serviceAction: UInt8) -> [UInt8] {
        [SCSIOpcode.sanitize.rawValue, 0xa0 | serviceAction, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    }

    /// The commands a unit answers while it sanitizes.
    static let allowedWhileRunning: Set<SCSIOpcode> = [.inquiry, .reportLUNs, .requestSense, .maintenanceIn]

    static func execute(_ cdb: CDB, data: [UInt8], unit: LogicalUnit) throws(SCSIError) -> SCSIResult {
        guard unit.sanitizing.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return .check(.notReadySanitizeInProgress) }
        defer { unit.sanitizing.store(false, ordering: .releasing) }
        return try Self.run(cdb, data: data, unit: unit)
    }

    private static func run(_ cdb: CDB, data: [UInt8], unit: LogicalUnit) throws(SCSIError) -> SCSIResult {
        if cdb[1] & 0x40 != 0 { return .check(.invalidField(byte: 1, bit: 6)) }
        if let reserved = (2...6).first(where: { cdb[$0] != 0 }) { return .check(.invalidField(byte: reserved)) }
        let listLength = cdb.uint16(7)
        switch cdb.serviceAction {
        case Self.overwrite:
            guard listLength > 4, listLength <= LogicalUnit.blockSize + 4 else {
                return .check(.invalidField(byte: 7))
            }
            guard data.count == Int(listLength) else { return .check(.parameterListLengthError) }
            let passes = Int(data[0] & 0x1f)
            let invert = data[0] & 0x80 != 0
            let patternLength = Int(BigEndian.read(data, 2, 2))
            guard passes > 0 else { return .check(.invalidField(byte: 7)) }
            guard patternLength > 0, patternLength <= Int(LogicalUnit.blockSize), patternLength + 4 <= data.count
            else { return .check(.invalidField(byte: 7)) }
            let pattern = Array(data[4..<4 + patternLength])
            try Self.overwrite(unit, pattern: pattern, passes: passes, invert: invert)
        case Self.blockErase:
            guard listLength == 0 else { return .check(.invalidField(byte: 7)) }
            let length = try unit.engine { () throws(StrataError) in try unit.pool.size(of: unit.handle) }
            try unit.engine { () throws(StrataError) in try unit.pool.trim(unit.handle, at: 0, length: length) }
        default:
            // `CommandTable` has entries for the two service actions above only.
            preconditionFailure("SANITIZE service action \(cdb.serviceAction) has no table entry")
        }
        try unit.engine { () throws(StrataError) in try unit.pool.flush() }
        return .good()
    }

    /// One block of the pattern repeated (its last copy cut short), written over the whole unit
    /// once per pass, inverted on every other pass when `invert`.
    private static func overwrite(_ unit: LogicalUnit, pattern: [UInt8], passes: Int, invert: Bool) throws(SCSIError) {
        let blockSize = Int(LogicalUnit.blockSize)
        let block = (0..<blockSize).map { pattern[$0 % pattern.count] }
        let length = try unit.engine { () throws(StrataError) in try unit.pool.size(of: unit.handle) }
        for pass in 0..<passes {
            let inverted = invert && pass % 2 == 1
            try unit.fill(with: inverted ? block.map { ~$0 } : block, at: 0, length: length, allowTrim: false)
        }
    }
}
