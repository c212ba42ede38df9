// Operational text negotiation (RFC 7143 §6.2 and §13): each key the initiator offers is
// answered with the value both sides accept, by the key's rule (minimum, maximum, OR, AND, a
// list choice, or a declaration). Unknown keys get NotUnderstood, keys that do not apply to a
// discovery session get Irrelevant, and malformed values get Reject, as §6.2 says.

/// The parameters a session runs with once login completes.
public struct SessionParameters: Sendable, Equatable {
    public enum SessionType: String, Sendable { case normal = "Normal", discovery = "Discovery" }

    public var sessionType = SessionType.normal
    public var initiatorName = ""
    public var initiatorAlias: String?
    /// The target's name (Normal sessions).
    public var targetName: String?
    /// What the initiator accepts in one PDU: bounds our Data-In, Text and NOP-In segments.
    public var initiatorMaxReceiveDataLength = 8192
    public var maxBurstLength = 262_144
    public var firstBurstLength = 65536
    public var initialR2T = true
    public var immediateData = true
    public var headerDigest = false
    public var dataDigest = false
    public var maxOutstandingR2T = 1
    public var errorRecoveryLevel = 0
    public var dataPDUInOrder = true
    public var dataSequenceInOrder = true
    public var defaultTime2Wait = 2
    public var defaultTime2Retain = 20
    public var maxConnections = 1

    public init() {}
}

/// What this target offers and accepts.
public enum TargetLimits {
    /// The longest data segment the target accepts (declared as MaxRecvDataSegmentLength).
    public static let maxReceiveDataLength = 262_144
    /// The longest data segment of a login PDU, either way (RFC 7143 §13.12: the default 8192
    /// holds until login ends).
    public static let loginDataLength = 8192
    /// RFC 7143 §13.13: 512 to 2^24-1.
    public static let maxBurstLength = 16_776_192
    /// Unsolicited data per command is bounded by this, so a client cannot make the target buffer much.
    public static let firstBurstLength = 262_144
    /// The command window: how many non-immediate commands may be outstanding.
    public static let commandWindow: UInt32 = 128
    /// Data-Out bursts in flight per command: one R2T at a time.
    public static let maxOutstandingR2T = 1
    public static let portalGroupTag = 1
}

struct OperationalNegotiation {
    var parameters: SessionParameters

    /// Answers the operational keys in `offered`, updating `parameters`; appends the answers to
    /// `response`.
    mutating func negotiate(_ offered: TextKeys, into response: inout TextKeys) {
        for (key, value) in offered.pairs {
            if let answer = self.answer(key: key, value: value) { response.append(key, answer) }
        }
    }

    /// Keys of the login itself, handled by the login state machine.
    static let loginKeys: Set<String> = [
        "InitiatorName", "InitiatorAlias", "TargetName", "SessionType", "AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C",
        "CHAP_N", "CHAP_R",
    ]

    /// Keys that mean nothing in a discovery session (RFC 7143 §13: "Irrelevant").
    static let normalOnly: Set<String> = [
        "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T", "DataPDUInOrder",
        "DataSequenceInOrder",
    ]

    private mutating func answer(key: String, value: String) -> String? {
        if Self.loginKeys.contains(key) { return nil }
        if self.parameters.sessionType == .discovery && Self.normalOnly.contains(key) { return "Irrelevant" }
        switch key {
        case "HeaderDigest", "DataDigest":
            let choices = value.split(separator: ",").map(String.init)
            guard let chosen = choices.first(where: { $0 == "CRC32C" || $0 == "None" }) else { return "Reject" }
            if key == "HeaderDigest" {
                self.parameters.headerDigest = chosen == "CRC32C"
            } else {
                self.parameters.dataDigest = chosen == "CRC32C"
            }
            return chosen
        case "MaxRecvDataSegmentLength":
            guard let number = Self.number(value, 512...16_777_215) else { return "Reject" }
            self.parameters.initiatorMaxReceiveDataLength = number
            return String(TargetLimits.maxReceiveDataLength)
        case "MaxBurstLength":
            guard let number = Self.number(value, 512...16_777_215) else { return "Reject" }
            self.parameters.maxBurstLength = min(number, TargetLimits.maxBurstLength)
            self.parameters.firstBurstLength = min(self.parameters.firstBurstLength, self.parameters.maxBurstLength)
            return String(self.parameters.maxBurstLength)
        case "FirstBurstLength":
            guard let number = Self.number(value, 512...16_777_215) else { return "Reject" }
            self.parameters.firstBurstLength = min(number, TargetLimits.firstBurstLength, self.parameters.maxBurstLength)
            return String(self.parameters.firstBurstLength)
        case "InitialR2T":
            // OR: the target is content without R2T for the first burst.
            guard let flag = Self.boolean(value) else { return "Reject" }
            self.parameters.initialR2T = flag
            return flag ? "Yes" : "No"
        case "ImmediateData":
            // AND: the target accepts immediate data.
            guard let flag = Self.boolean(value) else { return "Reject" }
            self.parameters.immediateData = flag
            return flag ? "Yes" : "No"
        case "MaxOutstandingR2T":
            guard let number = Self.number(value, 1...65535) else { return "Reject" }
            self.parameters.maxOutstandingR2T = min(number, TargetLimits.maxOutstandingR2T)
            return String(self.parameters.maxOutstandingR2T)
        case "ErrorRecoveryLevel":
            guard Self.number(value, 0...2) != nil else { return "Reject" }
            self.parameters.errorRecoveryLevel = 0
            return "0"
        case "DataPDUInOrder", "DataSequenceInOrder":
            // OR, and this target asks for order.
            guard Self.boolean(value) != nil else { return "Reject" }
            return "Yes"
        case "DefaultTime2Wait":
            guard let number = Self.number(value, 0...3600) else { return "Reject" }
            self.parameters.defaultTime2Wait = max(number, 2)
            return String(self.parameters.defaultTime2Wait)
        case "DefaultTime2Retain":
            guard let number = Self.number(value, 0...3600) else { return "Reject" }
            self.parameters.defaultTime2Retain = min(number, 20)
            return String(self.parameters.defaultTime2Retain)
        case "MaxConnections":
            guard Self.number(value, 1...65535) != nil else { return "Reject" }
            self.parameters.maxConnections = 1
            return "1"
        case "IFMarker", "OFMarker":
            guard Self.boolean(value) != nil else { return "Reject" }
            return "No"
        case "OFMarkInt", "IFMarkInt":
            return "Irrelevant"
        case "TargetAlias", "TargetAddress", "TargetPortalGroupTag":
            // Target declarations an initiator must not send.
            return "Reject"
        default:
            return "NotUnderstood"
        }
    }

    static func number(_ value: String, _ range: ClosedRange<Int>) -> Int? {
        guard let number = Int(value), range.contains(number) else { return nil }
        return number
    }

    static func boolean(_ value: String) -> Bool? {
        switch value {
        case "Yes": return true
        case "No": return false
        default: return nil
        }
    }
}
