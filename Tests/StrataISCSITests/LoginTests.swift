// The login state machine: security and operational stages, CHAP one-way and mutual, and the
// refusals RFC 7143 §11.13.5 names.

import StrataCore
import Testing

@testable import StrataISCSI

struct FakeEnvironment: LoginEnvironment {
    var settings = ChapSettings()

    func object(forTargetName name: String) -> String? {
        ["iqn.2026-11.org.strata:vm1": "vm1", "iqn.2026-11.org.strata:vm1:s1": "vm1@s1"][name]
    }

    func chapSettings() -> ChapSettings { self.settings }

    func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { UInt8($0 + 1) } }
}

/// A target side whose pool fails every lookup with an engine error (not "not found").
struct FailingEnvironment: LoginEnvironment {
    func object(forTargetName name: String) throws(StrataError) -> String? {
        throw StrataError(.io, "open \(name): read failed (errno=5)")
    }

    func chapSettings() -> ChapSettings { ChapSettings() }

    func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { UInt8($0 + 1) } }
}

func loginRequest(
    current: UInt8, next: UInt8, transit: Bool = true, keys: [(String, String)], tsih: UInt16 = 0
) -> PDU {
    var pdu = PDU(.loginRequest, flags: (transit ? 0x80 : 0) | current << 2 | (transit ? next : 0))
    pdu.header[0] = 0x43
    pdu.header[8] = 0x80
    pdu.set(tsih, at: 14)
    pdu.initiatorTaskTag = 7
    pdu.set(UInt32(100), at: 24)
    pdu.set(UInt32(5), at: 28)
    pdu.data = TextKeys(keys).bytes
    return pdu
}

func keys(of step: Login.Step) -> TextKeys {
    switch step {
    case .respond(let pdu), .complete(let pdu, _), .fail(let pdu, _): return TextKeys.parse(pdu.data) ?? TextKeys()
    }
}

func status(of step: Login.Step) -> UInt16 {
    switch step {
    case .respond(let pdu), .complete(let pdu, _), .fail(let pdu, _): return pdu.uint16(at: 36)
    }
}

@Suite("iSCSI login")
struct LoginTests {
    let initiator = ("InitiatorName", "iqn.2026-11.org.example:host")

    @Test func noneThenOperationalNegotiation() {
        var login = Login(environment: FakeEnvironment())
        let first = login.handle(
            loginRequest(
                current: 0, next: 1,
                keys: [self.initiator, ("SessionType", "Normal"), ("TargetName", "iqn.2026-11.org.strata:vm1"), ("AuthMethod", "None")]))
        guard case .respond(let pdu) = first else {
            Issue.record("expected a response, got \(first)")
            return
        }
        #expect(pdu.flags == 0x81)  // T, CSG 0, NSG 1
        #expect(keys(of: first)["AuthMethod"] == "None")
        #expect(keys(of: first)["TargetPortalGroupTag"] == "1")
        #expect(pdu.uint32(at: 24) == 5)  // StatSN from ExpStatSN
        #expect(pdu.uint32(at: 28) == 100)  // ExpCmdSN is the login's CmdSN

        let second = login.handle(
            loginRequest(
                current: 1, next: 3,
                keys: [
                    ("HeaderDigest", "CRC32C,None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "65536"),
                    ("MaxBurstLength", "1048576"), ("FirstBurstLength", "1048576"), ("InitialR2T", "No"),
                    ("ImmediateData", "Yes"), ("ErrorRecoveryLevel", "2"), ("MaxConnections", "4"), ("X-Vendor", "1"),
                ]))
        guard case .complete(_, let parameters) = second else {
            Issue.record("expected login to complete, got \(second)")
            return
        }
        let answer = keys(of: second)
        #expect(answer["HeaderDigest"] == "CRC32C")
        #expect(answer["ErrorRecoveryLevel"] == "0")
        #expect(answer["MaxConnections"] == "1")
        #expect(answer["X-Vendor"] == "NotUnderstood")
        #expect(answer["FirstBurstLength"] == String(TargetLimits.firstBurstLength))
        #expect(parameters.headerDigest && !parameters.dataDigest)
        #expect(parameters.initiatorMaxReceiveDataLength == 65536)
        #expect(parameters.maxBurstLength == 1_048_576)
        #expect(!parameters.initialR2T && parameters.immediateData)
    }

    /// Regression: the target looked names up with `try?`, so an I/O error of the pool read as
    /// "no such target" (0203h) and an initiator would give up on a target that exists. Only
    /// "not found" may mean that; any other engine error is a target error (0300h).
    @Test func anEngineErrorIsATargetErrorNotAMissingTarget() {
        var login = Login(environment: FailingEnvironment())
        let step = login.handle(
            loginRequest(current: 0, next: 1, keys: [self.initiator, ("TargetName", "iqn.2026-11.org.strata:vm1")]))
        #expect(status(of: step) == LoginStatus.targetError.rawValue)
    }

    @Test func unknownTargetAndMissingNamesAreRefused() {
        var login = Login(environment: FakeEnvironment())
        let step = login.handle(
            loginRequest(current: 0, next: 1, keys: [self.initiator, ("TargetName", "iqn.2026-11.org.strata:nope")]))
        #expect(status(of: step) == LoginStatus.notFound.rawValue)
        var anonymous = Login(environment: FakeEnvironment())
        #expect(
            status(of: anonymous.handle(loginRequest(current: 0, next: 1, keys: [("SessionType", "Discovery")])))
                == LoginStatus.missingParameter.rawValue)
    }

    func chapLogin(settings: ChapSettings, secret: String, mutual: (UInt8, [UInt8])?) -> (Login.Step, [UInt8]) {
        var login = Login(environment: FakeEnvironment(settings: settings))
        let offer = login.handle(
            loginRequest(
                current: 0, next: 1,
                keys: [self.initiator, ("TargetName", "iqn.2026-11.org.strata:vm1"), ("AuthMethod", "CHAP,None")]))
        #expect(keys(of: offer)["AuthMethod"] == "CHAP")
        let challenge = login.handle(loginRequest(current: 0, next: 1, transit: false, keys: [("CHAP_A", "7,5")]))
        let answer = keys(of: challenge)
        #expect(answer["CHAP_A"] == "5")
        let identifier = UInt8(answer["CHAP_I"] ?? "") ?? 0
        let bytes = Chap.decode(answer["CHAP_C"] ?? "") ?? []
        var response = [("CHAP_N", "alice"), ("CHAP_R", Chap.encode(Chap.response(identifier: identifier, secret: secret, challenge: bytes)))]
        if let (mutualIdentifier, mutualChallenge) = mutual {
            response += [("CHAP_I", String(mutualIdentifier)), ("CHAP_C", Chap.encode(mutualChallenge))]
        }
        return (login.handle(loginRequest(current: 0, next: 1, keys: response)), bytes)
    }

    @Test func chapOneWayAcceptsTheSecretAndRefusesOthers() {
        var settings = ChapSettings()
        settings.targets["vm1"] = ChapCredential(user: "alice", secret: "alice-secret-1")
        let (good, _) = self.chapLogin(settings: settings, secret: "alice-secret-1", mutual: nil)
        guard case .respond(let pdu) = good else {
            Issue.record("CHAP with the right secret failed: \(good)")
            return
        }
        #expect(pdu.flags & 0x80 != 0)
        let (bad, _) = self.chapLogin(settings: settings, secret: "wrong-secret-9", mutual: nil)
        #expect(status(of: bad) == LoginStatus.authenticationFailure.rawValue)
    }

    @Test func chapIsRequiredWhenSet() {
        var settings = ChapSettings()
        settings.all = ChapCredential(user: "alice", secret: "alice-secret-1")
        var login = Login(environment: FakeEnvironment(settings: settings))
        let step = login.handle(
            loginRequest(current: 0, next: 1, keys: [self.initiator, ("TargetName", "iqn.2026-11.org.strata:vm1"), ("AuthMethod", "None")]))
        #expect(status(of: step) == LoginStatus.authenticationFailure.rawValue)
        var skipping = Login(environment: FakeEnvironment(settings: settings))
        let direct = skipping.handle(
            loginRequest(current: 1, next: 3, keys: [self.initiator, ("TargetName", "iqn.2026-11.org.strata:vm1")]))
        #expect(status(of: direct) == LoginStatus.authenticationFailure.rawValue)
    }

    @Test func mutualChapAnswersTheInitiatorsChallenge() {
        var settings = ChapSettings()
        settings.targets["vm1"] = ChapCredential(
            user: "alice", secret: "alice-secret-1", mutualUser: "target", mutualSecret: "target-secret-2")
        let challenge: [UInt8] = Array(repeating: 0x5a, count: 16)
        let (step, _) = self.chapLogin(settings: settings, secret: "alice-secret-1", mutual: (9, challenge))
        let answer = keys(of: step)
        #expect(answer["CHAP_N"] == "target")
        #expect(Chap.decode(answer["CHAP_R"] ?? "") == Chap.response(identifier: 9, secret: "target-secret-2", challenge: challenge))
        let (oneWay, _) = self.chapLogin(settings: settings, secret: "alice-secret-1", mutual: nil)
        #expect(status(of: oneWay) == LoginStatus.authenticationFailure.rawValue)
    }

    @Test func reflectedChallengeIsRefused() {
        var settings = ChapSettings()
        settings.targets["vm1"] = ChapCredential(
            user: "alice", secret: "alice-secret-1", mutualUser: "target", mutualSecret: "target-secret-2")
        // FakeEnvironment's challenge is 1...16; sending it back must fail.
        let (step, _) = self.chapLogin(settings: settings, secret: "alice-secret-1", mutual: (1, (1...16).map { UInt8($0) }))
        #expect(status(of: step) == LoginStatus.authenticationFailure.rawValue)
    }
}
