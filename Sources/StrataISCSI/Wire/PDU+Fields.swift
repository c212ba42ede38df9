// Named views of the Basic Header Segment fields the full feature phase reads and writes, so
// the session never spells a byte offset (RFC 7143 §11). Each property names its PDU types and
// offset once, here; fields that share an offset across types get one name per meaning.
//
// OFFSET SIZE FIELD (of the PDUs named)
//   1     1    flags: F 0x80; SCSI Command R 0x40, W 0x20; Text C 0x40; Data-In O 0x04, U 0x02, S 0x01
//   2     1    Response (SCSI Response, Task Management Response, Logout Response), Reject reason
//   3     1    Status (SCSI Response, Data-In with S)
//   14    2    TSIH (Login Response)
//   20    4    Expected Data Transfer Length (SCSI Command); Referenced Task Tag (Task Management)
//   24    4    StatSN (target PDUs)
//   28    4    ExpCmdSN (target PDUs)
//   32    4    MaxCmdSN (target PDUs); RefCmdSN (Task Management Request); CDB (SCSI Command, 16 bytes)
//   36    4    DataSN (Data-In, Data-Out), R2TSN (R2T), ExpDataSN (SCSI Response)
//   40    4    Buffer Offset (Data-In, Data-Out, R2T)
//   44    4    Residual Count (SCSI Response, Data-In); Desired Data Transfer Length (R2T)

extension PDU {
    /// Flag bits of byte 1.
    public enum Flag {
        public static let final: UInt8 = 0x80
        /// SCSI Command: the initiator expects Data-In.
        public static let read: UInt8 = 0x40
        /// SCSI Command: the initiator will send Data-Out.
        public static let write: UInt8 = 0x20
        /// Text Request/Response: more text follows.
        public static let `continue`: UInt8 = 0x40
        /// Data-In and SCSI Response: residual overflow.
        public static let residualOverflow: UInt8 = 0x04
        /// Data-In and SCSI Response: residual underflow.
        public static let residualUnderflow: UInt8 = 0x02
        /// Data-In: the PDU carries the command's status.
        public static let status: UInt8 = 0x01
    }

    /// SCSI Command: the R bit.
    public var readExpected: Bool { self.flags & Flag.read != 0 }
    /// SCSI Command: the W bit.
    public var writeExpected: Bool { self.flags & Flag.write != 0 }
    /// Text: the C bit.
    public var continues: Bool { self.flags & Flag.continue != 0 }
    /// Task Management Request function and Logout reason: the flags byte without F.
    public var function: UInt8 { self.flags & 0x7f }

    /// SCSI Response, Task Management Response and Logout Response (offset 2); Reject reason.
    public var response: UInt8 {
        get { self.header[2] }
        set { self.header[2] = newValue }
    }

    /// SCSI status (offset 3) of a SCSI Response or a Data-In carrying status.
    public var status: UInt8 {
        get { self.header[3] }
        set { self.header[3] = newValue }
    }

    /// TSIH (offset 14) of a Login Response.
    public var tsih: UInt16 {
        get { self.uint16(at: 14) }
        set { self.set(newValue, at: 14) }
    }

    /// Expected Data Transfer Length (offset 20) of a SCSI Command.
    public var expectedDataTransferLength: UInt32 { self.uint32(at: 20) }
    /// Referenced Task Tag (offset 20) of a Task Management Request.
    public var referencedTaskTag: UInt32 { self.uint32(at: 20) }
    /// RefCmdSN (offset 32) of a Task Management Request.
    public var referencedCommandSequenceNumber: UInt32 { self.uint32(at: 32) }
    /// The 16 CDB bytes (offset 32) of a SCSI Command.
    public var commandDescriptorBlock: [UInt8] { Array(self.header[32..<48]) }

    /// StatSN (offset 24) of a target PDU.
    public var statusSequenceNumber: UInt32 {
        get { self.uint32(at: 24) }
        set { self.set(newValue, at: 24) }
    }

    /// ExpCmdSN (offset 28) of a target PDU.
    public var expectedCommandSequenceNumber: UInt32 {
        get { self.uint32(at: 28) }
        set { self.set(newValue, at: 28) }
    }

    /// MaxCmdSN (offset 32) of a target PDU.
    public var maxCommandSequenceNumber: UInt32 {
        get { self.uint32(at: 32) }
        set { self.set(newValue, at: 32) }
    }

    /// DataSN (offset 36) of Data-In and Data-Out; R2TSN of an R2T; ExpDataSN of a SCSI Response.
    public var dataSequenceNumber: UInt32 {
        get { self.uint32(at: 36) }
        set { self.set(newValue, at: 36) }
    }

    /// Buffer Offset (offset 40) of Data-In, Data-Out and R2T.
    public var bufferOffset: UInt32 {
        get { self.uint32(at: 40) }
        set { self.set(newValue, at: 40) }
    }

    /// Residual Count (offset 44) of a SCSI Response or Data-In; Desired Data Transfer Length of an R2T.
    public var residualCount: UInt32 {
        get { self.uint32(at: 44) }
        set { self.set(newValue, at: 44) }
    }

    /// Desired Data Transfer Length (offset 44) of an R2T.
    public var desiredDataTransferLength: UInt32 {
        get { self.residualCount }
        set { self.residualCount = newValue }
    }

    /// The CDB of a SCSI Command: the 16 header bytes, continued by an extended-CDB AHS
    /// (type 1, RFC 7143 §11.2.2.3) when the CDB is longer.
    public var extendedCommandDescriptorBlock: [UInt8] {
        var bytes = self.commandDescriptorBlock
        if self.additionalHeader.count >= 4, self.additionalHeader[2] == 0x01 {
            let length = Int(self.additionalHeader[0]) << 8 | Int(self.additionalHeader[1])
            bytes += self.additionalHeader.dropFirst(4).prefix(max(0, length - 1))
        }
        return bytes
    }
}
