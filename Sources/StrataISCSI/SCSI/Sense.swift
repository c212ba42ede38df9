// SCSI status and sense data (SPC-4 §4.5): every error a command can end in is a `SenseCode`,
// sent as fixed-format sense data (response code 70h) with CHECK CONDITION, or as descriptor
// format (72h) when REQUEST SENSE asks for it.

import Foundation

/// SCSI status bytes (SAM-5).
public enum SCSIStatus: UInt8, Sendable {
    case good = 0x00
    case checkCondition = 0x02
    case conditionMet = 0x04
    case busy = 0x08
    case reservationConflict = 0x18
    case taskSetFull = 0x28
    case taskAborted = 0x40
}

/// A sense key with its additional sense code and qualifier.
public struct SenseCode: Error, Sendable, Equatable, CustomStringConvertible {
    public let key: UInt8
    public let asc: UInt8
    public let ascq: UInt8
    /// For INVALID FIELD: the byte (and bit) of the CDB or parameter list at fault (SPC-4 §4.5.2.4.2).
    public var fieldPointer: (byte: UInt16, bit: UInt8?, inCDB: Bool)?

    public init(key: UInt8, asc: UInt8, ascq: UInt8) {
        self.key = key
        self.asc = asc
        self.ascq = ascq
    }

    public static func == (a: SenseCode, b: SenseCode) -> Bool { a.key == b.key && a.asc == b.asc && a.ascq == b.ascq }

    public var description: String {
        "sense key \(self.key) ASC/ASCQ \(String(format: "%02x/%02x", self.asc, self.ascq))"
    }

    public static let noSense = SenseCode(key: 0x00, asc: 0x00, ascq: 0x00)
    public static let notReadyMediumNotPresent = SenseCode(key: 0x02, asc: 0x3a, ascq: 0x00)
    public static let notReadyStopped = SenseCode(key: 0x02, asc: 0x04, ascq: 0x02)
    public static let notReadySanitizeInProgress = SenseCode(key: 0x02, asc: 0x04, ascq: 0x1b)
    public static let mediumError = SenseCode(key: 0x03, asc: 0x11, ascq: 0x00)
    public static let writeError = SenseCode(key: 0x03, asc: 0x0c, ascq: 0x00)
    public static let hardwareError = SenseCode(key: 0x04, asc: 0x44, ascq: 0x00)
    public static let parameterListLengthError = SenseCode(key: 0x05, asc: 0x1a, ascq: 0x00)
    public static let invalidOpcode = SenseCode(key: 0x05, asc: 0x20, ascq: 0x00)
    public static let lbaOutOfRange = SenseCode(key: 0x05, asc: 0x21, ascq: 0x00)
    public static let invalidFieldInCDB = SenseCode(key: 0x05, asc: 0x24, ascq: 0x00)
    public static let lunNotSupported = SenseCode(key: 0x05, asc: 0x25, ascq: 0x00)
    public static let invalidFieldInParameterList = SenseCode(key: 0x05, asc: 0x26, ascq: 0x00)
    public static let invalidReleaseOfPersistentReservation = SenseCode(key: 0x05, asc: 0x26, ascq: 0x04)
    public static let savingParametersNotSupported = SenseCode(key: 0x05, asc: 0x39, ascq: 0x00)
    public static let invalidFieldInInformationUnit = SenseCode(key: 0x05, asc: 0x0e, ascq: 0x03)
    public static let unitAttentionReset = SenseCode(key: 0x06, asc: 0x29, ascq: 0x00)
    public static let unitAttentionModeParametersChanged = SenseCode(key: 0x06, asc: 0x2a, ascq: 0x01)
    public static let unitAttentionCapacityChanged = SenseCode(key: 0x06, asc: 0x2a, ascq: 0x09)
    public static let unitAttentionReservationsPreempted = SenseCode(key: 0x06, asc: 0x2a, ascq: 0x03)
    public static let unitAttentionReservationsReleased = SenseCode(key: 0x06, asc: 0x2a, ascq: 0x04)
    public static let unitAttentionRegistrationsPreempted = SenseCode(key: 0x06, asc: 0x2a, ascq: 0x05)
    public static let writeProtected = SenseCode(key: 0x07, asc: 0x27, ascq: 0x00)
    public static let spaceAllocationFailed = SenseCode(key: 0x07, asc: 0x27, ascq: 0x07)
    public static let tooManyTargetDescriptors = SenseCode(key: 0x05, asc: 0x26, ascq: 0x06)
    public static let unsupportedTargetDescriptorType = SenseCode(key: 0x05, asc: 0x26, ascq: 0x07)
    public static let tooManySegmentDescriptors = SenseCode(key: 0x05, asc: 0x26, ascq: 0x08)
    public static let unsupportedSegmentDescriptorType = SenseCode(key: 0x05, asc: 0x26, ascq: 0x09)
    /// COPY ABORTED with no more specific code (a segment past the end of a copy target).
    public static let copyAborted = SenseCode(key: 0x0a, asc: 0x00, ascq: 0x00)
    public static let unreachableCopyTarget = SenseCode(key: 0x0a, asc: 0x08, ascq: 0x04)
    public static let abortedCommand = SenseCode(key: 0x0b, asc: 0x00, ascq: 0x00)
    public static let dataPhaseError = SenseCode(key: 0x0b, asc: 0x4b, ascq: 0x00)
    public static let miscompare = SenseCode(key: 0x0e, asc: 0x1d, ascq: 0x00)

    /// INVALID FIELD IN CDB pointing at `byte` (and `bit`).
    public static func invalidField(byte: Int, bit: UInt8? = nil) -> SenseCode {
        var code = Self.invalidFieldInCDB
        code.fieldPointer = (UInt16(byte), bit, true)
        return code
    }

    /// INVALID FIELD IN PARAMETER LIST pointing at `byte`.
    public static func invalidParameter(byte: Int, bit: UInt8? = nil) -> SenseCode {
        var code = Self.invalidFieldInParameterList
        code.fieldPointer = (UInt16(byte), bit, false)
        return code
    }

    /// Fixed-format sense data (SPC-4 §4.5.3), 18 bytes; `information` goes in bytes 3–6 (VALID).
    public func fixed(information: UInt32? = nil) -> [UInt8] {
        var sense = [UInt8](repeating: 0, count: 18)
        sense[0] = 0x70 | (information != nil ? 0x80 : 0)
        sense[2] = self.key
        if let information {
            for index in 0..<4 { sense[3 + index] = UInt8(truncatingIfNeeded: information >> (24 - 8 * UInt32(index))) }
        }
        sense[7] = 10
        sense[12] = self.asc
        sense[13] = self.ascq
        if let pointer = self.fieldPointer {
            sense[15] = 0x80 | (pointer.inCDB ? 0x40 : 0) | (pointer.bit.map { 0x08 | ($0 & 0x07) } ?? 0)
            sense[16] = UInt8(pointer.byte >> 8)
            sense[17] = UInt8(truncatingIfNeeded: pointer.byte)
        }
        return sense
    }

    /// Descriptor-format sense data (SPC-4 §4.5.2), with a sense-key-specific descriptor when
    /// there is a field pointer.
    public func descriptor() -> [UInt8] {
        var sense: [UInt8] = [0x72, self.key, self.asc, self.ascq, 0, 0, 0, 0]
        if let pointer = self.fieldPointer {
            sense += [
                0x02, 0x06, 0, 0,
                0x80 | (pointer.inCDB ? 0x40 : 0) | (pointer.bit.map { 0x08 | ($0 & 0x07) } ?? 0),
                UInt8(pointer.byte >> 8), UInt8(truncatingIfNeeded: pointer.byte), 0,
            ]
        }
        sense[7] = UInt8(sense.count - 8)
        return sense
    }
}

/// How a command ended.
public struct SCSIResult: Sendable {
    public var status: SCSIStatus
    public var sense: [UInt8]
    /// Data for the initiator (Data-In), possibly longer than it asked for (the connection trims
    /// it to the Expected Data Transfer Length and reports the residual).
    public var data: [UInt8]

    public static func good(_ data: [UInt8] = []) -> SCSIResult { SCSIResult(status: .good, sense: [], data: data) }

    public static func check(_ code: SenseCode, information: UInt32? = nil) -> SCSIResult {
        SCSIResult(status: .checkCondition, sense: code.fixed(information: information), data: [])
    }

    public static let reservationConflict = SCSIResult(status: .reservationConflict, sense: [], data: [])
}
