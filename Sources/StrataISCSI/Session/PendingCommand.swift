// One SCSI command from its arrival to its status, as the session tracks it: what the initiator
// expects, the write data gathered so far (immediate, unsolicited, then R2T-solicited bursts),
// and whether it is running or aborted.
//
// Invariants: `data.count <= wanted`; `burstEnd` is past `data.count` only while an R2T is
// outstanding; a running command takes no more Data-Out.

import StrataCore

struct PendingCommand: Sendable {
    let tag: UInt32
    let lun: UInt64
    let cdb: CDB
    /// The initiator's Expected Data Transfer Length.
    let expectedLength: Int
    /// The R bit: the initiator expects Data-In.
    let readExpected: Bool
    /// The W bit: the initiator will send Data-Out.
    let writeExpected: Bool
    /// Bytes the command takes from the initiator: min(EDTL, what the CDB transfers).
    let wanted: Int
    /// What the CDB itself would transfer out (for the residual).
    let commandLength: Int
    /// `LogicalUnit.dataOutLength` made every check as the command arrived (`DataOutPlan.checked`).
    var checkedOnArrival = false
    var data: [UInt8] = []
    /// Unsolicited bytes still to come end here (InitialR2T=No).
    var unsolicitedEnd = 0
    var r2tSequence: UInt32 = 0
    var transferTag: UInt32 = PDU.reservedTag
    var burstEnd = 0
    /// DataSN the next Data-Out must carry; each sequence (unsolicited, or one R2T's) starts at 0.
    var nextDataSequence: UInt32 = 0
    var running = false
    var aborted = false
    /// Task management requests waiting for this command to finish (`ISCSISession.ManagementWait`).
    var waiters: [Int] = []

    init(_ pdu: PDU, cdb: CDB, wanted: Int, commandLength: Int) {
        self.tag = pdu.initiatorTaskTag
        self.lun = pdu.lun
        self.cdb = cdb
        self.expectedLength = Int(pdu.expectedDataTransferLength)
        self.readExpected = pdu.readExpected
        self.writeExpected = pdu.writeExpected
        self.wanted = wanted
        self.commandLength = commandLength
        precondition(wanted <= self.expectedLength, "tag \(self.tag): takes more than its Expected Data Transfer Length")
    }
}
