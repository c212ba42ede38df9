// `mirrors.json` in the volume's pool directory: every mirror leg, its state and the
// generation of its newest split-point pair. Written whole through `AtomicFile` (synced,
// renamed, directory synced), so a crash leaves the old table or the new one.
//
// The table is not the authority on split points; the pools are. A transition takes its new
// split-point pair and commits both pools first, and writes the table after. A crash between
// the two leaves the table one generation behind the pools; at the next open the mirror takes
// the newest generation present on both sides (`MirroredVolume.recover`), so the table can
// only ever be behind, never ahead of, what the pools hold, and nothing is lost either way:
// an older pair only makes the next resync copy a little more.
//
// Layout: {"version": 1, "legs": [MirrorLegRecord…]}. A table of a newer version is refused
// naming the upgrade.

import Foundation
import StrataCore

/// The mirror legs of one pool, as kept in `mirrors.json`.
public struct MirrorTable: Codable, Sendable, Equatable {
    public static let fileName = "mirrors.json"
    static let currentVersion = 1

    public var version: Int = MirrorTable.currentVersion
    public var legs: [MirrorLegRecord] = []

    public init() {}

    /// Loads the table of the pool in `directory`; an absent file is an empty table.
    /// - Throws: `.corrupt` for an unreadable file, `.unsupported` for a newer version.
    public static func load(directory: String) throws(StrataError) -> MirrorTable {
        let path = (directory as NSString).appendingPathComponent(Self.fileName)
        guard FileManager.default.fileExists(atPath: path) else { return MirrorTable() }
        let table: MirrorTable
        do {
            table = try JSONDecoder().decode(MirrorTable.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw StrataError(.corrupt, "load mirrors \(path): unreadable (\(error)); restore it from a backup")
        }
        guard table.version <= Self.currentVersion else {
            throw StrataError(
                .unsupported, "load mirrors \(path): version \(table.version) is newer than this strata's; upgrade strata")
        }
        return table
    }

    /// Saves the table durably.
    public func save(directory: String) throws(StrataError) {
        try AtomicFile.writeJSON(
            self, to: (directory as NSString).appendingPathComponent(Self.fileName), operation: "save mirrors")
    }

    /// The legs of `volume`.
    public func legs(of volume: String) -> [MirrorLegRecord] { self.legs.filter { $0.volume == volume } }

    /// Refuses `operation` on `volume` when it has a mirror leg, naming the legs and the fix.
    public func refuseIfMirrored(_ volume: String, operation: String) throws(StrataError) {
        let legs = self.legs(of: volume)
        guard !legs.isEmpty else { return }
        let names = legs.map { "\($0.leg) at \($0.location)" }.joined(separator: ", ")
        throw StrataError(
            .busy,
            "\(operation) \(volume): it is mirrored (leg \(names)), and a leg must stay the volume's copy; `strata mirror remove \(volume)` first, then `strata mirror add` the leg again"
        )
    }
}
