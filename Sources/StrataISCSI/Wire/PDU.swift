// iSCSI protocol data units (RFC 7143 §11): a 48-byte Basic Header Segment, optional
// Additional Header Segments, an optional header digest, a data segment padded to 4 bytes and
// an optional data digest. `PDU` holds one; the fields are read and written by byte offset, as
// the RFC's tables give them, with big-endian integers.

import StrataCore

/// Opcodes (RFC 7143 §11.1.1). Initiator opcodes are 0x00–0x1f, target opcodes 0x20–0x3f.
public enum Opcode: UInt8, Sendable {
    case nopOut = 0x00
    case scsiCommand = 0x01
    case taskManagementRequest = 0x02
    case loginRequest = 0x03
    case textRequest = 0x04
    case dataOut = 0x05
    case logoutRequest = 0x06
    case snackRequest = 0x10

    case nopIn = 0x20
    case scsiResponse = 0x21
    case taskManagementResponse = 0x22
    case loginResponse = 0x23
    case textResponse = 0x24
    case dataIn = 0x25
    case logoutResponse = 0x26
    case readyToTransfer = 0x31
    case asyncMessage = 0x32
    case reject = 0x3f
}

/// Reject reasons (RFC 7143 §11.17.1).
public enum RejectReason: UInt8, Sendable {
    case dataDigestError = 0x02
    case snackReject = 0x03
    case protocolError = 0x04
    case commandNotSupported = 0x05
    case immediateCommandReject = 0x06
    case taskInProgress = 0x07
    case invalidDataAck = 0x08
    case invalidPDUField = 0x09
    case outOfResources = 0x0a
    case waitingForLogout = 0x0c
}

/// One PDU. `header` is the 48-byte BHS; `data` the data segment without padding.
public struct PDU: Sendable, Equatable {
    public static let headerLength = 48
    /// The task tag meaning "none" (unsolicited NOP-In, non-final Text, Reject).
    public static let reservedTag: UInt32 = 0xffff_ffff

    public var header: [UInt8]
    public var additionalHeader: [UInt8]
    public var data: [UInt8]

    public init(header: [UInt8], additionalHeader: [UInt8] = [], data: [UInt8] = []) {
        precondition(header.count == Self.headerLength)
        self.header = header
        self.additionalHeader = additionalHeader
        self.data = data
    }

    /// A target PDU with its opcode and flags byte set; every other field zero.
    public init(_ opcode: Opcode, flags: UInt8 = 0x80) {
        self.header = [UInt8](repeating: 0, count: Self.headerLength)
        self.header[0] = opcode.rawValue
        self.header[1] = flags
        self.additionalHeader = []
        self.data = []
    }

    public var rawOpcode: UInt8 { self.header[0] & 0x3f }
    public var opcode: Opcode? { Opcode(rawValue: self.rawOpcode) }
    public var immediate: Bool { self.header[0] & 0x40 != 0 }
    public var flags: UInt8 {
        get { self.header[1] }
        set { self.header[1] = newValue }
    }
    public var final: Bool { self.header[1] & 0x80 != 0 }
    /// TotalAHSLength in bytes.
    public var declaredAdditionalHeaderLength: Int { Int(self.header[4]) * 4 }
    /// DataSegmentLength as the header declares it.
    public var declaredDataLength: Int {
        Int(self.header[5]) << 16 | Int(self.header[6]) << 8 | Int(self.header[7])
    }
    public var lun: UInt64 {
        get { self.uint64(at: 8) }
        set { self.set(newValue, at: 8) }
    }
    public var initiatorTaskTag: UInt32 {
        get { self.uint32(at: 16) }
        set { self.set(newValue, at: 16) }
    }

    // MARK: Fields by offset

    public func uint16(at offset: Int) -> UInt16 {
        UInt16(self.header[offset]) << 8 | UInt16(self.header[offset + 1])
    }

    public func uint32(at offset: Int) -> UInt32 {
        self.header[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    public func uint64(at offset: Int) -> UInt64 {
        self.header[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }

    public mutating func set(_ value: UInt16, at offset: Int) {
        self.header[offset] = UInt8(value >> 8)
        self.header[offset + 1] = UInt8(truncatingIfNeeded: value)
    }

    public mutating func set(_ value: UInt32, at offset: Int) {
        for index in 0..<4 { self.header[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
    }

    public mutating func set(_ value: UInt64, at offset: Int) {
        for index in 0..<8 { self.header[offset + index] = UInt8(truncatingIfNeeded: value >> (56 - 8 * index)) }
    }

    /// Sets DataSegmentLength (from `data`, or `dataLength`) and TotalAHSLength from `additionalHeader`.
    mutating func sealLengths(dataLength: Int? = nil) {
        let length = dataLength ?? self.data.count
        self.header[4] = UInt8(self.additionalHeader.count / 4)
        self.header[5] = UInt8(truncatingIfNeeded: length >> 16)
        self.header[6] = UInt8(truncatingIfNeeded: length >> 8)
        self.header[7] = UInt8(truncatingIfNeeded: length)
    }

    // MARK: Fields shared by the request PDUs

    /// CmdSN (offset 24) of SCSI Command, NOP-Out, Task Management, Text, Login and Logout requests.
    public var commandSequenceNumber: UInt32 { self.uint32(at: 24) }
    /// ExpStatSN (offset 28) of the same requests and of Data-Out.
    public var expectedStatusSequenceNumber: UInt32 { self.uint32(at: 28) }
    /// Target Transfer Tag (offset 20) of NOP-Out, Data-Out and Text requests.
    public var targetTransferTag: UInt32 {
        get { self.uint32(at: 20) }
        set { self.set(newValue, at: 20) }
    }
}

/// Serial number arithmetic for 32-bit sequence numbers (RFC 1982, as RFC 7143 §4.2.2.1 uses it).
public enum SerialNumber {
    /// `a < b` in serial arithmetic.
    public static func less(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }

    /// `a <= b` in serial arithmetic.
    public static func lessOrEqual(_ a: UInt32, _ b: UInt32) -> Bool { a == b || Self.less(a, b) }
}
