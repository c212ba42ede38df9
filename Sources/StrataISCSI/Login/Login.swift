// The login phase of one connection (RFC 7143 §6.3 and §11.12–11.13): the security stage
// (AuthMethod None or CHAP, one-way or mutual), the operational stage (text negotiation), and
// the transition to the full feature phase. Pure logic: the connection handler feeds it Login
// Request PDUs and sends what it returns.

import StrataCore

/// Login status classes and details (RFC 7143 §11.13.5).
public enum LoginStatus: UInt16, Sendable {
    case success = 0x0000
    case initiatorError = 0x0200
    case authenticationFailure = 0x0201
    case authorizationFailure = 0x0202
    case notFound = 0x0203
    case targetRemoved = 0x0204
    case unsupportedVersion = 0x0205
    case tooManyConnections = 0x0206
    case missingParameter = 0x0207
    case cannotIncludeInSession = 0x0208
    case sessionTypeNotSupported = 0x0209
    case sessionDoesNotExist = 0x020a
    case invalidDuringLogin = 0x020b
    case targetError = 0x0300
    case outOfResources = 0x0302
}

/// What login needs to know about the target side.
public protocol LoginEnvironment: Sendable {
    /// The pool object (VOLUME or VOLUME@SNAPSHOT) a target name names, or nil when none does.
    /// - Throws: an engine error other than "not found" (the login then ends in 0300h, target
    ///   error, not 0203h: the target may exist).
    func object(forTargetName name: String) throws(StrataError) -> String?
    /// CHAP settings now in force.
    func chapSettings() -> ChapSettings
    /// Random bytes for CHAP challenges.
    func randomBytes(_ count: Int) -> [UInt8]
}

/// One connection's login.
public struct Login: Sendable {
    public enum Step: Equatable, Sendable {
        /// Send this response and wait for the next request.
        case respond(PDU)
        /// Send this response (without TSIH yet) and enter the full feature phase.
        case complete(PDU, SessionParameters)
        /// Send this response and close the connection.
        case fail(PDU, String)
    }

    enum Stage: UInt8 {
        case security = 0
        case operational = 1
        case fullFeature = 3
    }

    enum ChapState {
        case none
        /// AuthMethod=CHAP agreed; waiting for CHAP_A.
        case offered
        /// Challenge sent; waiting for CHAP_N and CHAP_R.
        case challenged(identifier: UInt8, challenge: [UInt8])
        case done
    }

    let environment: any LoginEnvironment
    var negotiation = OperationalNegotiation(parameters: SessionParameters())
    var stage = Stage.security
    var first = true
    var isid: [UInt8] = []
    var tsih: UInt16 = 0
    var initiatorTaskTag: UInt32 = 0
    var commandSequenceNumber: UInt32 = 0
    /// The statSN the next login response carries.
    public var statusSequenceNumber: UInt32 = 0
    var credential: ChapCredential?
    var chap = ChapState.none
    var authenticated = false
    /// Text of a request sent in several PDUs (the C bit), not yet complete.
    var pendingText: [UInt8] = []
    /// Keys the target must declare once (in the first response of a Normal session).
    var declaredPortalGroup = false
    public private(set) var object: String?

    public init(environment: any LoginEnvironment) {
        self.environment = environment
    }

    /// The TSIH the initiator named (0 for a new session).
    public var requestedTSIH: UInt16 { self.tsih }
    public var initiatorSessionID: [UInt8] { self.isid }
    public var parameters: SessionParameters { self.negotiation.parameters }

    public mutating func handle(_ request: PDU) -> Step {
        guard request.opcode == .loginRequest else {
            return self.failure(.invalidDuringLogin, request, "a \(request.rawOpcode) PDU arrived during login")
        }
        let transit = request.flags & 0x80 != 0
        let continuing = request.flags & 0x40 != 0
        let current = (request.flags >> 2) & 0x03
        let next = request.flags & 0x03
        if self.first {
            self.first = false
            // Version-max (byte 2) ≥ 0 always; version-min (byte 3) must allow 0.
            guard request.header[3] == 0 else {
                return self.failure(.unsupportedVersion, request, "version-min \(request.header[3]) is not 0")
            }
            self.isid = Array(request.header[8..<14])
            self.tsih = request.uint16(at: 14)
            self.initiatorTaskTag = request.initiatorTaskTag
            self.commandSequenceNumber = request.commandSequenceNumber
            self.statusSequenceNumber = request.expectedStatusSequenceNumber
        }
        guard current != 2, let stage = Stage(rawValue: current), stage != .fullFeature else {
            return self.failure(.invalidDuringLogin, request, "login current stage \(current) is not valid")
        }
        if transit && continuing {
            return self.failure(.invalidDuringLogin, request, "login with both T and C set")
        }
        if transit && (next == 2 || next <= current) {
            return self.failure(.invalidDuringLogin, request, "login next stage \(next) after \(current)")
        }
        if stage.rawValue < self.stage.rawValue {
            return self.failure(.invalidDuringLogin, request, "login went back to stage \(current)")
        }
        self.stage = stage

        self.pendingText += request.data
        if continuing {
            guard self.pendingText.count <= 64 * 1024 else {
                return self.failure(.outOfResources, request, "login text longer than 64 KiB")
            }
            // Acknowledge a partial text with an empty response (§6.1: the C bit).
            return .respond(self.response(request, transit: false, next: 0, keys: TextKeys()))
        }
        guard let keys = TextKeys.parse(self.pendingText) else {
            return self.failure(.invalidDuringLogin, request, "login text is not key=value pairs")
        }
        self.pendingText = []

        var answer = TextKeys()
        if let failure = self.declarations(keys, request: request, answer: &answer) { return failure }

        let step: Step
        switch stage {
        case .security:
            step = self.securityStage(request, keys: keys, transit: transit, next: next, answer: answer)
        case .operational:
            if self.requiresAuthentication && !self.authenticated {
                return self.failure(.authenticationFailure, request, "CHAP is required for this target")
            }
            step = self.operationalStage(request, keys: keys, transit: transit, next: next, answer: answer)
        case .fullFeature:
            return self.failure(.invalidDuringLogin, request, "login in the full feature phase")
        }
        // An answer must fit one login PDU the initiator accepts (8192 bytes during login).
        switch step {
        case .respond(let pdu), .complete(let pdu, _):
            if pdu.data.count > TargetLimits.loginDataLength {
                return self.failure(.outOfResources, request, "login answer of \(pdu.data.count) bytes; too many keys offered")
            }
        case .fail:
            break
        }
        return step
    }

    var requiresAuthentication: Bool { self.credential != nil }

    /// The first PDU's declarations: InitiatorName, SessionType and TargetName.
    private mutating func declarations(_ keys: TextKeys, request: PDU, answer: inout TextKeys) -> Step? {
        if let name = keys["InitiatorName"] {
            guard !name.isEmpty, name.utf8.count <= 223 else {
                return self.failure(.missingParameter, request, "InitiatorName is empty or too long")
            }
            self.negotiation.parameters.initiatorName = name
        }
        if let alias = keys["InitiatorAlias"] { self.negotiation.parameters.initiatorAlias = alias }
        if let type = keys["SessionType"] {
            guard let sessionType = SessionParameters.SessionType(rawValue: type) else {
                return self.failure(.sessionTypeNotSupported, request, "SessionType \(type) is not supported")
            }
            self.negotiation.parameters.sessionType = sessionType
        }
        if self.negotiation.parameters.initiatorName.isEmpty {
            return self.failure(.missingParameter, request, "the login named no InitiatorName")
        }
        if let name = keys["TargetName"], self.negotiation.parameters.targetName == nil {
            guard self.negotiation.parameters.sessionType == .normal else { return nil }
            let found: String?
            switch Result(catching: { () throws(StrataError) in try self.environment.object(forTargetName: name) }) {
            case .success(let object): found = object
            case .failure(let error):
                return self.failure(.targetError, request, "look up target \(name): \(error.message)")
            }
            guard let object = found else { return self.failure(.notFound, request, "no target \(name)") }
            self.object = object
            self.negotiation.parameters.targetName = name
            self.credential = self.environment.chapSettings().credential(for: object)
        }
        if self.negotiation.parameters.sessionType == .normal && self.negotiation.parameters.targetName == nil {
            return self.failure(.missingParameter, request, "a Normal session must name its TargetName")
        }
        if self.negotiation.parameters.sessionType == .discovery && self.credential == nil && !self.authenticated {
            self.credential = self.environment.chapSettings().credential(for: nil)
        }
        if self.negotiation.parameters.sessionType == .normal && !self.declaredPortalGroup {
            self.declaredPortalGroup = true
            answer.append("TargetPortalGroupTag", String(TargetLimits.portalGroupTag))
        }
        return nil
    }

    private mutating func securityStage(_ request: PDU, keys: TextKeys, transit: Bool, next: UInt8, answer: TextKeys)
        -> Step
    {
        var answer = answer
        switch self.chap {
        case .none:
            guard let methods = keys["AuthMethod"] else {
                if self.requiresAuthentication {
                    return self.failure(.authenticationFailure, request, "CHAP is required and no AuthMethod was offered")
                }
                self.authenticated = true
                return self.advance(request, transit: transit, next: next, answer: answer, keys: keys)
            }
            let offered = methods.split(separator: ",").map(String.init)
            if self.requiresAuthentication {
                guard offered.contains("CHAP") else {
                    return self.failure(.authenticationFailure, request, "CHAP is required; the initiator offered \(methods)")
                }
                answer.append("AuthMethod", "CHAP")
                self.chap = .offered
                return .respond(self.response(request, transit: false, next: 0, keys: answer))
            }
            guard offered.contains("None") else {
                return self.failure(
                    .authenticationFailure, request, "no CHAP secret is set for this target; the initiator offered \(methods)")
            }
            answer.append("AuthMethod", "None")
            self.authenticated = true
            return self.advance(request, transit: transit, next: next, answer: answer, keys: keys)
        case .offered:
            guard let algorithms = keys["CHAP_A"] else {
                return self.failure(.authenticationFailure, request, "CHAP_A missing after AuthMethod=CHAP")
            }
            guard algorithms.split(separator: ",").contains(where: { $0 == Chap.algorithmMD5 }) else {
                answer.append("CHAP_A", "Reject")
                return self.failure(.authenticationFailure, request, "CHAP_A=\(algorithms) does not include MD5 (5)")
            }
            let identifier = self.environment.randomBytes(1)[0]
            let challenge = self.environment.randomBytes(16)
            answer.append("CHAP_A", Chap.algorithmMD5)
            answer.append("CHAP_I", String(identifier))
            answer.append("CHAP_C", Chap.encode(challenge))
            self.chap = .challenged(identifier: identifier, challenge: challenge)
            return .respond(self.response(request, transit: false, next: 0, keys: answer))
        case .challenged(let identifier, let challenge):
            guard let credential = self.credential, let name = keys["CHAP_N"], let encoded = keys["CHAP_R"],
                let response = Chap.decode(encoded)
            else {
                return self.failure(.authenticationFailure, request, "CHAP_N or CHAP_R missing or malformed")
            }
            guard name == credential.user,
                Chap.verify(response, identifier: identifier, secret: credential.secret, challenge: challenge)
            else {
                return self.failure(.authenticationFailure, request, "CHAP response for user \(name) is wrong")
            }
            if let initiatorIdentifier = keys["CHAP_I"] {
                // Mutual CHAP: the initiator challenges the target.
                guard let mutualUser = credential.mutualUser, let mutualSecret = credential.mutualSecret else {
                    return self.failure(
                        .authenticationFailure, request, "the initiator asked for mutual CHAP but no target secret is set")
                }
                guard let identifierValue = UInt8(initiatorIdentifier), let encodedChallenge = keys["CHAP_C"],
                    let initiatorChallenge = Chap.decode(encodedChallenge), !initiatorChallenge.isEmpty,
                    initiatorChallenge.count <= 1024
                else {
                    return self.failure(.authenticationFailure, request, "mutual CHAP_I or CHAP_C malformed")
                }
                // RFC 7143 §12.1.3: a target must not answer its own challenge back (reflection).
                guard initiatorChallenge != challenge, mutualSecret != credential.secret else {
                    return self.failure(.authenticationFailure, request, "mutual CHAP challenge reflects the target's")
                }
                answer.append("CHAP_N", mutualUser)
                answer.append(
                    "CHAP_R",
                    Chap.encode(
                        Chap.response(identifier: identifierValue, secret: mutualSecret, challenge: initiatorChallenge)))
            } else if credential.mutualUser != nil {
                return self.failure(.authenticationFailure, request, "mutual CHAP is required for this target")
            }
            self.chap = .done
            self.authenticated = true
            return self.advance(request, transit: transit, next: next, answer: answer, keys: keys)
        case .done:
            return self.advance(request, transit: transit, next: next, answer: answer, keys: keys)
        }
    }

    private mutating func operationalStage(
        _ request: PDU, keys: TextKeys, transit: Bool, next: UInt8, answer: TextKeys
    ) -> Step {
        self.advance(request, transit: transit, next: next, answer: answer, keys: keys)
    }

    /// Negotiates the operational keys offered and moves to the next stage when the initiator asks.
    private mutating func advance(_ request: PDU, transit: Bool, next: UInt8, answer: TextKeys, keys: TextKeys) -> Step {
        var answer = answer
        self.negotiation.negotiate(keys, into: &answer)
        guard transit else {
            return .respond(self.response(request, transit: false, next: 0, keys: answer))
        }
        if next == Stage.fullFeature.rawValue {
            if self.requiresAuthentication && !self.authenticated {
                return self.failure(.authenticationFailure, request, "CHAP is required for this target")
            }
            self.stage = .fullFeature
            return .complete(self.response(request, transit: true, next: next, keys: answer), self.negotiation.parameters)
        }
        self.stage = Stage(rawValue: next) ?? .operational
        return .respond(self.response(request, transit: true, next: next, keys: answer))
    }

    /// A Login Response to `request` (RFC 7143 §11.13).
    mutating func response(_ request: PDU, transit: Bool, next: UInt8, keys: TextKeys, status: LoginStatus = .success)
        -> PDU
    {
        let current = (request.flags >> 2) & 0x03
        var pdu = PDU(.loginResponse, flags: (transit ? 0x80 : 0) | current << 2 | (transit ? next : 0))
        pdu.header[2] = 0  // version-max
        pdu.header[3] = 0  // version-active
        for index in 0..<6 { pdu.header[8 + index] = request.header[8 + index] }
        pdu.set(self.tsih, at: 14)
        pdu.initiatorTaskTag = request.initiatorTaskTag
        pdu.set(self.statusSequenceNumber, at: 24)
        self.statusSequenceNumber &+= 1
        pdu.set(self.commandSequenceNumber, at: 28)
        pdu.set(self.commandSequenceNumber &+ TargetLimits.commandWindow &- 1, at: 32)
        pdu.set(status.rawValue, at: 36)
        pdu.data = keys.bytes
        return pdu
    }

    mutating func failure(_ status: LoginStatus, _ request: PDU, _ reason: String) -> Step {
        var pdu = self.response(request, transit: false, next: 0, keys: TextKeys(), status: status)
        pdu.flags = 0
        return .fail(pdu, reason)
    }
}
