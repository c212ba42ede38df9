// What every iSCSI connection of the daemon shares: the pool, the logical units (one per
// volume or snapshot, holding its reservations and mode state across sessions), the session
// table (TSIH allocation and session reinstatement), and the CHAP settings of the pool.

import Foundation
import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd
import Synchronization

public final class ISCSITarget: Sendable, LoginEnvironment {
    public let pool: Pool
    /// Where commands, login steps and target listings run: never on an event loop.
    public let workers: any EngineWorkers
    public let registry: ConnectionRegistry
    public let logger: Logger
    /// Where `iscsi-chap.json` lives; nil reads no CHAP settings.
    let directory: String?

    /// The logical units, shared by every session (and found by EXTENDED COPY).
    let units: UnitTable

    private struct Tables {
        /// Live sessions: TSIH → (I_T nexus, the channel).
        var sessions: [UInt16: (nexus: String, channel: any Channel)] = [:]
        var nextTSIH: UInt16 = 1
    }

    private let tables = Mutex(Tables())

    public init(
        pool: Pool, directory: String?, workers: any EngineWorkers, registry: ConnectionRegistry, logger: Logger,
        foreign: (any ForeignExports)? = nil, settings: UnitSettings = UnitSettings()
    ) {
        self.pool = pool
        self.directory = directory
        self.workers = workers
        self.registry = registry
        self.logger = logger
        self.units = UnitTable(pool: pool, foreign: foreign, settings: settings)
    }

    // MARK: LoginEnvironment (called on the engine workers: these take the pool's locks)

    /// The pool object `name` names: nil only when the pool has no such volume or snapshot.
    /// - Throws: any other engine error (logged here), which login answers with 0300h.
    public func object(forTargetName name: String) throws(StrataError) -> String? {
        guard let object = TargetNames.object(for: name) else { return nil }
        if self.units.foreign?.foreign(object) != nil { return object }
        switch Result(catching: { () throws(StrataError) in try self.pool.handle(object) }) {
        case .success: return object
        case .failure(let error) where error.code == .notFound: break
        case .failure(let error):
            self.logger.error("iSCSI target \(name): \(error.message)")
            throw error
        }
        // Names compare without regard to case (RFC 3722).
        return TargetNames.match(object, among: self.pool.targets().map(\.name))
    }

    /// Every pool object served as a target, foreign ones (mirror leg copies) last.
    public func targetObjects() -> [String] {
        self.pool.targets().map(\.name) + (self.units.foreign?.foreignNames() ?? [])
    }

    public func chapSettings() -> ChapSettings {
        guard let directory else { return ChapSettings() }
        switch Result(catching: { () throws(StrataError) in try ChapSettings.load(directory: directory) }) {
        case .success(let settings): return settings
        case .failure(let error):
            // Unreadable settings must not open the door: require a secret nobody has.
            self.logger.error("iSCSI CHAP settings unreadable, refusing CHAP logins: \(error.message)")
            var locked = ChapSettings()
            locked.all = ChapCredential(user: UUID().uuidString, secret: UUID().uuidString)
            return locked
        }
    }

    public func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    // MARK: Logical units and sessions

    /// The logical unit of a pool object, shared by every session that opens it.
    func unit(for object: String) throws(StrataError) -> LogicalUnit {
        try self.units.unit(for: object)
    }

    /// Registers a new session for `nexus`. An older session of the same nexus is closed first
    /// (session reinstatement, RFC 7143 §6.3.5).
    func openSession(nexus: String, channel: any Channel) -> UInt16 {
        let (tsih, stale) = self.tables.withLock { tables -> (UInt16, [any Channel]) in
            let stale = tables.sessions.filter { $0.value.nexus == nexus }
            for key in stale.keys { tables.sessions[key] = nil }
            var tsih = tables.nextTSIH
            while tsih == 0 || tables.sessions[tsih] != nil { tsih &+= 1 }
            tables.nextTSIH = tsih &+ 1
            tables.sessions[tsih] = (nexus, channel)
            return (tsih, stale.values.map(\.channel))
        }
        for channel in stale { channel.close(promise: nil) }
        return tsih
    }

    func closeSession(_ tsih: UInt16) {
        _ = self.tables.withLock { $0.sessions.removeValue(forKey: tsih) }
    }

    func sessionExists(_ tsih: UInt16) -> Bool {
        self.tables.withLock { $0.sessions[tsih] != nil }
    }
}
