// The `--rate` of each volume's background hydration, kept across daemon restarts
// (docs/OBJECTSTORE.md "Background hydration"): `hydration-rates.json` beside the pool, a JSON
// object from volume GUID (stable across renames) to bytes per second, replaced whole and
// durably (`AtomicFile`). A rate is a preference, not state the data depends on: what is left to
// hydrate is still derived from the engine's tree and the record's flag alone, so a crash that
// leaves this file old or new changes only the speed of a resumed hydration, never its result.
//
// Written when a hydration is started or changed with a rate, read when the daemon resumes a
// hydration without one, and the volume's entry dropped when its hydration is done. A pool
// without a directory (in memory) keeps no rates. The lock makes each read-modify-write whole
// against concurrent control requests; it is held across the small file write, never across
// a network request.

import Foundation
import StrataCore
import Synchronization

final class HydrationRates: Sendable {
    static let fileName = "hydration-rates.json"
    private let pool: Pool
    private let lock = Mutex(())

    init(pool: Pool) { self.pool = pool }

    /// The rate stored for `volume`, nil when none is.
    /// - Throws: `.notFound` for a missing volume, `.corrupt` for an unreadable file.
    func rate(of volume: String) throws(StrataError) -> UInt64? {
        guard let path = self.path else { return nil }
        let guid = try self.guid(volume)
        return try self.lock.withLock { _ throws(StrataError) in try Self.load(path)[guid] }
    }

    /// Stores `rate` for `volume`, or drops its entry when `rate` is nil.
    /// - Throws: `.notFound` for a missing volume, `.corrupt` or `.io` naming the file.
    func set(_ rate: UInt64?, for volume: String) throws(StrataError) {
        guard let path = self.path else { return }
        let guid = try self.guid(volume)
        try self.lock.withLock { _ throws(StrataError) in
            var rates = try Self.load(path)
            guard rates[guid] != rate else { return }
            rates[guid] = rate
            try AtomicFile.writeJSON(rates, to: path, operation: "write hydration rates")
        }
    }

    private var path: String? { self.pool.directory.map { $0 + "/" + Self.fileName } }

    private func guid(_ volume: String) throws(StrataError) -> String {
        guard let info = try self.pool.listVolumes().first(where: { $0.name == volume }) else {
            throw StrataError(.notFound, "hydrate \(volume): no such volume; `strata volume list` shows them")
        }
        return info.guid
    }

    private static func load(_ path: String) throws(StrataError) -> [String: UInt64] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        do {
            return try JSONDecoder().decode([String: UInt64].self, from: data)
        } catch {
            throw StrataError(
                .corrupt,
                "read hydration rates \(path): not a JSON object of rates (\(error)); delete the file to resume hydrations at the default rate"
            )
        }
    }
}
