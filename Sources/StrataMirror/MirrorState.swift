// A mirror leg's states and the transitions between them, as a pure value type (no I/O, no
// clock): `MirroredVolume` feeds it events and acts on the state it returns, and the tests drive
// it directly.
//
//   syncing ──copied──▶ connected ──detach──▶ detached ──attach──▶ resyncing ──copied──▶ connected
//      │                   │  ▲                                        │
//      └──────failed───────┴──┼──▶ degraded ──usable / attach─────────▶┘
//                             └────────────────────────────────────────────(failed: degraded)
//
// Writes go to the leg in `syncing`, `connected` and `resyncing`; in `degraded` and `detached`
// they do not, and the blocks they change are found later from the split point (docs/MIRROR.md).
// A request that does not fit the state (detaching a leg still syncing, attaching a connected
// one) is refused with the state and what to do, and changes nothing.

import StrataCore

/// A mirror leg's state, as `mirror status` shows it.
public enum LegState: String, Codable, Sendable, CaseIterable {
    /// The initial full copy is running; writes go to the leg too.
    case syncing
    /// Every acknowledged write is on the leg.
    case connected
    /// The leg failed; writes go on locally and the changes are tracked.
    case degraded
    /// The leg is a point-in-time copy of its own; the changes since the split are tracked.
    case detached
    /// The blocks changed since the split are being copied; writes go to the leg too.
    case resyncing

    /// True when every write to the volume is applied to the leg before it is acknowledged.
    public var receivesWrites: Bool {
        switch self {
        case .syncing, .connected, .resyncing: return true
        case .degraded, .detached: return false
        }
    }
}

/// What happens to a leg.
public enum LegEvent: Sendable, Equatable {
    /// The copy (full or of the changes) finished.
    case copied
    /// A write, flush or copy to the leg failed or timed out.
    case failed
    /// `mirror detach`.
    case detach
    /// `mirror attach`, or the leg is usable again with auto-resync on.
    case attach
}

/// A leg's state machine.
public struct LegStateMachine: Sendable, Equatable {
    public private(set) var state: LegState

    public init(state: LegState) { self.state = state }

    /// Applies `event` and returns the new state.
    /// - Throws: `.invalidArgument` naming the state and the fix when the event does not fit it;
    ///   the state is then unchanged.
    @discardableResult
    public mutating func handle(_ event: LegEvent, leg: String) throws(StrataError) -> LegState {
        let next: LegState
        switch (self.state, event) {
        case (.syncing, .copied), (.resyncing, .copied): next = .connected
        case (_, .failed): return self.failed()
        case (.connected, .detach): next = .detached
        case (.degraded, .attach), (.detached, .attach): next = .resyncing
        case (.syncing, .detach), (.resyncing, .detach):
            throw StrataError(
                .busy, "detach mirror leg \(leg): it is \(self.state.rawValue); wait until it is connected (`strata mirror status --watch`)")
        case (.degraded, .detach):
            throw StrataError(
                .busy,
                "detach mirror leg \(leg): it is degraded, so it is not a copy of one instant; attach it first (`strata mirror attach`)")
        case (.detached, .detach):
            throw StrataError(.invalidArgument, "detach mirror leg \(leg): it is already detached")
        case (.syncing, .attach), (.connected, .attach), (.resyncing, .attach):
            throw StrataError(.invalidArgument, "attach mirror leg \(leg): it is already attached (\(self.state.rawValue))")
        case (.connected, .copied), (.degraded, .copied), (.detached, .copied):
            preconditionFailure("mirror leg \(leg): a copy finished while \(self.state.rawValue)")
        }
        self.state = next
        return next
    }

    /// A failure fits every state: the leg goes degraded, except that a detached leg stays
    /// detached (the mirror does not write it, so its failure changes nothing).
    @discardableResult
    public mutating func failed() -> LegState {
        if self.state != .detached { self.state = .degraded }
        return self.state
    }
}

/// One leg as `mirrors.json` keeps it.
public struct MirrorLegRecord: Codable, Sendable, Equatable {
    public var volume: String
    public var leg: String
    /// The leg pool's directory (a local leg; empty for a remote one).
    public var poolDirectory: String
    /// The leg daemon's replication address, HOST:PORT (a remote leg).
    public var remote: String? = nil
    /// The file holding the secret the leg daemon's replication port asks for (a remote leg).
    public var secretFile: String? = nil
    public var state: LegState
    /// The generation of the newest split-point pair (0: none yet, the leg needs a full copy).
    public var generation: UInt64
    /// When the leg was detached or went degraded (ISO 8601), if it is.
    public var splitAt: String?
    /// The detached copy's own name (`detach --as`).
    public var detachedAs: String?
    public var writable: Bool
    public var rateBytesPerSecond: UInt64?
    public var autoResync: Bool
    public var timeoutMillis: UInt64
    public var lastError: String?
    /// While a full copy (`attach --full`) runs: the chunk below which it had copied at the
    /// newest split-point pair (its checkpoint). A copy interrupted by a restart or a failure
    /// resumes from there, plus the chunks changed since that pair, instead of shrinking to the
    /// pair's diff.
    public var fullCopyFrom: UInt64? = nil

    /// Where the leg is, for status and errors: `pool DIR` or `HOST:PORT`.
    public var location: String { self.remote ?? "pool \(self.poolDirectory)" }

    /// The hidden snapshot of split-point generation `generation` (on the volume and on the leg).
    public static func splitPointName(leg: String, generation: UInt64) -> String {
        "\(Pool.hiddenSnapshotPrefix)\(leg).\(generation)"
    }

    /// The generation a split point of `leg` named `name` has, or nil when it is not one of `leg`'s.
    public static func generation(ofSplitPoint name: String, leg: String) -> UInt64? {
        let prefix = "\(Pool.hiddenSnapshotPrefix)\(leg)."
        guard name.hasPrefix(prefix) else { return nil }
        return UInt64(name.dropFirst(prefix.count))
    }
}

/// A leg's status, as `mirror status` prints it.
public struct MirrorLegStatus: Codable, Sendable, Equatable {
    public var volume: String
    public var leg: String
    public var location: String
    public var state: LegState
    /// What the running copy still has to copy.
    public var bytesToResync: UInt64
    /// What the running (or last) copy copied.
    public var bytesResynced: UInt64
    /// The running (or last) copy's rate in bytes per second.
    public var rateBytesPerSecond: UInt64
    public var rateLimitBytesPerSecond: UInt64?
    public var lastError: String?
    public var splitAt: String?
    /// The leg copy's name: the volume's, or the detached copy's own (`detach --as`).
    public var copyName: String
    public var writable: Bool
    public var autoResync: Bool
    public var generation: UInt64
    /// True for a leg on another daemon (`location` is its HOST:PORT).
    public var remote: Bool = false
    /// The running copy's time so far, or the last copy's, in seconds: from the attach (or add,
    /// or automatic resync) that started it, the search for changed chunks included, to
    /// `connected`. Nil before any copy.
    public var copySeconds: Double?
}

/// A `strata mirror` verb.
public enum MirrorRequest: Codable, Sendable, Equatable {
    case add(volume: String, poolDirectory: String, leg: String?, rate: UInt64?, autoResync: Bool, timeoutMillis: UInt64?)
    /// A leg on another daemon's replication port, HOST:PORT.
    case addRemote(
        volume: String, address: String, secretFile: String, leg: String?, rate: UInt64?, autoResync: Bool,
        timeoutMillis: UInt64?)
    case detach(volume: String, leg: String?, as: String?, writable: Bool)
    case attach(volume: String, leg: String?, full: Bool, rate: UInt64?)
    case status(volume: String?)
    case remove(volume: String, leg: String?)
}
