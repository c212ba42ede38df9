// The operation codes of the SCSI commands the logical unit implements (SPC-4, SBC-4), by name.
// What each one does, how it is checked and who runs it is in `CommandTable`; this file only
// names the bytes, and says how long a CDB of each group is.

/// An operation code the logical unit implements. Every case has at least one entry in
/// `CommandTable.all` (one per service action where the opcode has them).
public enum SCSIOpcode: UInt8, Sendable, CaseIterable {
    case testUnitReady = 0x00
    case requestSense = 0x03
    case read6 = 0x08
    case write6 = 0x0a
    case inquiry = 0x12
    case modeSelect6 = 0x15
    case reserve6 = 0x16
    case release6 = 0x17
    case modeSense6 = 0x1a
    case startStopUnit = 0x1b
    case preventAllowMediumRemoval = 0x1e
    case readCapacity10 = 0x25
    case read10 = 0x28
    case write10 = 0x2a
    case writeAndVerify10 = 0x2e
    case verify10 = 0x2f
    case preFetch10 = 0x34
    case synchronizeCache10 = 0x35
    case readDefectData10 = 0x37
    case writeSame10 = 0x41
    case unmap = 0x42
    /// SANITIZE: OVERWRITE (01h) and BLOCK ERASE (02h).
    case sanitize = 0x48
    case modeSelect10 = 0x55
    case modeSense10 = 0x5a
    case persistentReserveIn = 0x5e
    case persistentReserveOut = 0x5f
    /// EXTENDED COPY (LID1 is service action 00h).
    case extendedCopy = 0x83
    /// RECEIVE COPY RESULTS: COPY STATUS (00h) and OPERATING PARAMETERS (03h).
    case receiveCopyResults = 0x84
    case read16 = 0x88
    case compareAndWrite = 0x89
    case write16 = 0x8a
    case orWrite16 = 0x8b
    case writeAndVerify16 = 0x8e
    case verify16 = 0x8f
    case preFetch16 = 0x90
    case synchronizeCache16 = 0x91
    case writeSame16 = 0x93
    case writeAtomic16 = 0x9c
    /// SERVICE ACTION IN(16): READ CAPACITY(16) and GET LBA STATUS.
    case serviceActionIn16 = 0x9e
    case reportLUNs = 0xa0
    /// MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
    case maintenanceIn = 0xa3
    case read12 = 0xa8
    case write12 = 0xaa
    case writeAndVerify12 = 0xae
    case verify12 = 0xaf
    case readDefectData12 = 0xb7

    /// The CDB length of an opcode, from the group code in its top three bits (SPC-4 §4.2.5.1):
    /// group 0 is 6 bytes, 1 and 2 are 10, 4 is 16, 5 is 12.
    static func cdbLength(of opcode: UInt8) -> Int {
        switch opcode >> 5 {
        case 0: return 6
        case 1, 2: return 10
        case 4: return 16
        default: return 12
        }
    }
}
