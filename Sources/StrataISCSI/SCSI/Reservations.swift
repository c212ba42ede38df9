// Reservations of one logical unit, shared by every session that reaches it: persistent
// reservations (SPC-4 §5.9, PERSISTENT RESERVE IN/OUT) and the older RESERVE(6)/RELEASE(6)
// (SPC-2 §5.5.1). An I_T nexus is named by the initiator's name and ISID, as iSCSI defines it
// (RFC 7143 §4.4.1). Registrations live as long as the daemon; APTPL is not offered, and
// REPORT CAPABILITIES says so.

import Synchronization

/// Persistent reservation types (SPC-4 Table 169).
public enum ReservationType: UInt8, Sendable {
    case writeExclusive = 1
    case exclusiveAccess = 3
    case writeExclusiveRegistrantsOnly = 5
    case exclusiveAccessRegistrantsOnly = 6
    case writeExclusiveAllRegistrants = 7
    case exclusiveAccessAllRegistrants = 8

    var allRegistrants: Bool { self == .writeExclusiveAllRegistrants || self == .exclusiveAccessAllRegistrants }
    var registrantsMayWrite: Bool { self.rawValue >= 5 }
    var exclusiveAccess: Bool { self == .exclusiveAccess || self == .exclusiveAccessRegistrantsOnly || self == .exclusiveAccessAllRegistrants }
}

/// How a command touches the medium, for the reservation checks (SPC-4 Table 163).
public enum AccessKind: Sendable {
    /// Allowed whatever is reserved (INQUIRY, REPORT LUNS, PERSISTENT RESERVE IN/OUT, ...).
    case always
    case read
    case write
}

public final class ReservationState: Sendable {
    struct State {
        /// Registered reservation keys by I_T nexus.
        var registrations: [String: UInt64] = [:]
        var holder: String?
        var type: ReservationType?
        var generation: UInt32 = 0
        /// RESERVE(6) holder.
        var legacyHolder: String?
        /// Unit attentions waiting for each nexus.
        var attentions: [String: [SenseCode]] = [:]
        /// The sessions logged in to the unit, by TSIH: the I_T nexuses a reset reaches.
        /// Keyed by session so that a reinstated session's old connection, closing after the new
        /// one joined, takes only its own entry away.
        var sessions: [UInt16: String] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Whether `nexus` may run a command of `kind` now.
    public func allows(_ nexus: String, _ kind: AccessKind) -> Bool {
        guard kind != .always else { return true }
        return self.state.withLock { state in
            if let legacy = state.legacyHolder, legacy != nexus { return false }
            guard let type = state.type else { return true }
            if Self.holds(state, nexus) { return true }
            let registered = state.registrations[nexus] != nil
            if registered && type.registrantsMayWrite { return true }
            return kind == .read && !type.exclusiveAccess
        }
    }

    private static func holds(_ state: State, _ nexus: String) -> Bool {
        guard let type = state.type else { return false }
        if type.allRegistrants { return state.registrations[nexus] != nil }
        return state.holder == nexus
    }

    // MARK: RESERVE(6) / RELEASE(6)

    public func reserveLegacy(_ nexus: String) -> Bool {
        self.state.withLock { state in
            if state.type != nil && !Self.holds(state, nexus) { return false }
            if let holder = state.legacyHolder, holder != nexus { return false }
            state.legacyHolder = nexus
            return true
        }
    }

    public func releaseLegacy(_ nexus: String) {
        self.state.withLock { state in
            if state.legacyHolder == nexus { state.legacyHolder = nil }
        }
    }

    /// A session of `nexus` logged in to the unit.
    public func nexusJoined(_ nexus: String, session: UInt16) {
        self.state.withLock { $0.sessions[session] = nexus }
    }

    /// A session ended (logout, lost connection): RESERVE(6) reservations of its nexus end with
    /// it, and once no session of the nexus is left, so do the unit attentions waiting for it
    /// (a later login is a new I_T nexus). Called again for the same session, it does nothing.
    public func nexusLost(_ nexus: String, session: UInt16) {
        self.state.withLock { state in
            guard state.sessions[session] == nexus else { return }
            state.sessions[session] = nil
            if state.legacyHolder == nexus { state.legacyHolder = nil }
            if !state.sessions.values.contains(nexus) { state.attentions[nexus] = nil }
        }
    }

    /// LOGICAL UNIT RESET or TARGET RESET: RESERVE(6) reservations end, persistent ones stay, and
    /// every I_T nexus of the unit, the one that asked for the reset included, gets the unit
    /// attention POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (SAM-5 §6.3.3 e). Every nexus
    /// with a session on the unit counts, and every registered one.
    public func reset(by nexus: String) {
        self.state.withLock { state in
            state.legacyHolder = nil
            for other in Set(state.registrations.keys).union(state.sessions.values) {
                state.attentions[other, default: []].append(.unitAttentionReset)
            }
        }
    }

    /// Takes the oldest unit attention waiting for `nexus`.
    public func takeAttention(_ nexus: String) -> SenseCode? {
        self.state.withLock { state in
            guard var list = state.attentions[nexus], !list.isEmpty else { return nil }
            let first = list.removeFirst()
            state.attentions[nexus] = list.isEmpty ? nil : list
            return first
        }
    }

    // MARK: PERSISTENT RESERVE IN

    public func readKeys() -> [UInt8] {
        self.state.withLock { state in
            var out = BigEndian.bytes(UInt64(state.generation), 4) + BigEndian.bytes(UInt64(state.registrations.count * 8), 4)
            for key in state.registrations.values.sorted() { out += BigEndian.bytes(key, 8) }
            return out
        }
    }

    public func readReservation() -> [UInt8] {
        self.state.withLock { state in
            guard let type = state.type else { return BigEndian.bytes(UInt64(state.generation), 4) + BigEndian.bytes(0, 4) }
            let key = type.allRegistrants ? 0 : state.holder.flatMap { state.registrations[$0] } ?? 0
            var out = BigEndian.bytes(UInt64(state.generation), 4) + BigEndian.bytes(16, 4) + BigEndian.bytes(key, 8)
            out += [0, 0, 0, 0, 0, type.rawValue, 0, 0]
            return out
        }
    }

    /// REPORT CAPABILITIES (SPC-4 §6.15.4): ATP_C, type mask valid, every type supported.
    public static func reportCapabilities() -> [UInt8] {
        [0, 8, 0x04, 0x80, 0xea, 0x01, 0, 0]
    }

    public func readFullStatus() -> [UInt8] {
        self.state.withLock { state in
            var descriptors: [UInt8] = []
            for (nexus, key) in state.registrations.sorted(by: { $0.key < $1.key }) {
                let holder = Self.holds(state, nexus)
                let transportID = Self.transportID(nexus)
                descriptors += BigEndian.bytes(key, 8) + [0, 0, 0, 0]
                descriptors.append(holder ? 0x01 : 0)
                descriptors.append(holder ? (state.type?.rawValue ?? 0) : 0)
                descriptors += [0, 0, 0, 0, 0, 1]
                descriptors += BigEndian.bytes(UInt64(transportID.count), 4) + transportID
            }
            return BigEndian.bytes(UInt64(state.generation), 4) + BigEndian.bytes(UInt64(descriptors.count), 4) + descriptors
        }
    }

    /// An iSCSI TransportID with the ISID (SPC-4 §7.6.4.6, format 01b): name,i,0xISID.
    static func transportID(_ nexus: String) -> [UInt8] {
        var name = Array(nexus.utf8) + [0]
        while name.count % 4 != 0 || name.count < 20 { name.append(0) }
        return [0x45, 0] + [UInt8(name.count >> 8), UInt8(truncatingIfNeeded: name.count)] + name
    }

    // MARK: PERSISTENT RESERVE OUT

    public enum OutAction: UInt8 {
        case register = 0
        case reserve = 1
        case release = 2
        case clear = 3
        case preempt = 4
        case preemptAndAbort = 5
        case registerAndIgnoreExistingKey = 6
        case registerAndMove = 7
    }

    /// Runs one PERSISTENT RESERVE OUT service action for `nexus`.
    public func out(
        _ action: OutAction, nexus: String, key: UInt64, serviceKey: UInt64, type: UInt8, scope: UInt8
    ) -> SCSIResult {
        self.state.withLock { state in
            let registered = state.registrations[nexus]
            switch action {
            case .register, .registerAndIgnoreExistingKey:
                if action == .register {
                    if registered == nil && key != 0 { return .reservationConflict }
                    if let registered, registered != key { return .reservationConflict }
                }
                if serviceKey == 0 {
                    if registered != nil { Self.unregister(&state, nexus) }
                } else {
                    state.registrations[nexus] = serviceKey
                }
                state.generation &+= 1
                return .good()
            case .reserve:
                guard let registered, registered == key else { return .reservationConflict }
                guard scope == 0 else { return .check(.invalidField(byte: 2, bit: 4)) }
                guard let requested = ReservationType(rawValue: type) else { return .check(.invalidField(byte: 2)) }
                if state.legacyHolder != nil && state.legacyHolder != nexus { return .reservationConflict }
                if let current = state.type {
                    return Self.holds(state, nexus) && current == requested ? .good() : .reservationConflict
                }
                state.type = requested
                state.holder = nexus
                return .good()
            case .release:
                guard let registered, registered == key else { return .reservationConflict }
                guard let current = state.type, Self.holds(state, nexus) else { return .good() }
                guard scope == 0, current.rawValue == type else { return .check(.invalidReleaseOfPersistentReservation) }
                if !current.exclusiveAccess || current.registrantsMayWrite {
                    for other in state.registrations.keys where other != nexus {
                        state.attentions[other, default: []].append(.unitAttentionReservationsReleased)
                    }
                }
                state.type = nil
                state.holder = nil
                return .good()
            case .clear:
                guard let registered, registered == key else { return .reservationConflict }
                for other in state.registrations.keys where other != nexus {
                    state.attentions[other, default: []].append(.unitAttentionReservationsPreempted)
                }
                state.registrations = [:]
                state.type = nil
                state.holder = nil
                state.generation &+= 1
                return .good()
            case .preempt, .preemptAndAbort:
                guard let registered, registered == key else { return .reservationConflict }
                guard let requested = ReservationType(rawValue: type) else { return .check(.invalidField(byte: 2)) }
                guard scope == 0 else { return .check(.invalidField(byte: 2, bit: 4)) }
                if let current = state.type, current.allRegistrants {
                    // Preempting an all-registrants reservation: key 0 removes every other registrant.
                    let victims = state.registrations.filter { $0.key != nexus && (serviceKey == 0 || $0.value == serviceKey) }
                    for victim in victims.keys { Self.remove(&state, victim, attention: .unitAttentionRegistrationsPreempted) }
                    state.type = requested
                    state.holder = nexus
                    state.generation &+= 1
                    return .good()
                }
                guard serviceKey != 0 else { return .check(.invalidParameter(byte: 8)) }
                let victims = state.registrations.filter { $0.value == serviceKey && $0.key != nexus }.map(\.key)
                let holderKey = state.holder.flatMap { state.registrations[$0] }
                if state.type != nil, holderKey == serviceKey {
                    for victim in victims { Self.remove(&state, victim, attention: .unitAttentionRegistrationsPreempted) }
                    state.type = requested
                    state.holder = nexus
                } else {
                    guard !victims.isEmpty || (state.registrations[nexus] == serviceKey) else { return .reservationConflict }
                    for victim in victims { Self.remove(&state, victim, attention: .unitAttentionRegistrationsPreempted) }
                }
                state.generation &+= 1
                return .good()
            case .registerAndMove:
                return .check(.invalidField(byte: 1))
            }
        }
    }

    private static func remove(_ state: inout State, _ nexus: String, attention: SenseCode) {
        state.registrations[nexus] = nil
        if state.holder == nexus {
            state.holder = nil
            if state.type?.allRegistrants == false { state.type = nil }
        }
        state.attentions[nexus, default: []].append(attention)
    }

    /// Unregisters `nexus`; a reservation it held ends (an all-registrants one when the last goes).
    private static func unregister(_ state: inout State, _ nexus: String) {
        state.registrations[nexus] = nil
        if let type = state.type {
            if type.allRegistrants {
                if state.registrations.isEmpty {
                    state.type = nil
                    state.holder = nil
                }
            } else if state.holder == nexus {
                state.type = nil
                state.holder = nil
            }
        }
    }
}
