// Task management function codes and responses (RFC 7143 §11.5.1 and §11.6.1), by name. What the
// session does with each is in `ISCSISession+TaskManagement.swift`.

/// The function of a Task Management Function Request (byte 1, without the F bit).
public enum TaskManagementFunction: UInt8, Sendable, CaseIterable {
    case abortTask = 1
    case abortTaskSet = 2
    case clearACA = 3
    case clearTaskSet = 4
    case logicalUnitReset = 5
    case targetWarmReset = 6
    case targetColdReset = 7
    case taskReassign = 8

    /// The functions addressed to one logical unit: on a LUN that does not exist they answer
    /// `lunDoesNotExist`.
    var addressesLogicalUnit: Bool {
        self == .abortTaskSet || self == .clearTaskSet || self == .logicalUnitReset
    }

    /// The resets, which also clear the I_T nexus's reservations.
    var resets: Bool {
        self == .logicalUnitReset || self == .targetWarmReset || self == .targetColdReset
    }
}

/// The Response byte of a Task Management Function Response.
public enum TaskManagementResponse: UInt8, Sendable {
    case functionComplete = 0
    case taskDoesNotExist = 1
    case lunDoesNotExist = 2
    case taskStillAllegiant = 3
    /// TASK REASSIGN needs ErrorRecoveryLevel 2.
    case taskAllegianceReassignmentNotSupported = 4
    case functionNotSupported = 5
    case authorizationFailed = 6
    case rejected = 255
}
