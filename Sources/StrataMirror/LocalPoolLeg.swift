// A mirror leg in a second pool on this host (`strata mirror add VOL --to-pool DIR`), typically
// on another disk, opened by the same daemon: the leg's copy is a volume of the same name in
// that pool, and its split points are hidden snapshots of it (Pool+Hidden.swift).
//
// The leg pool belongs to one mirror: `mirror-leg.json` in its directory (written atomically
// when the leg is added, removed when the mirror is) names the source pool's UUID, the volume
// and the leg. Adding refuses a pool that holds any volume or another mirror's marker, the
// source pool itself, and a pool too small for what the volume holds; nothing is changed on
// either side when it refuses.

import Foundation
import StrataCore

/// What `mirror-leg.json` records: whose leg a pool is.
public struct LegMarker: Codable, Sendable, Equatable {
    public var sourcePool: String
    public var volume: String
    public var leg: String

    static let fileName = "mirror-leg.json"

    static func load(directory: String) throws(StrataError) -> LegMarker? {
        let path = (directory as NSString).appendingPathComponent(Self.fileName)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(LegMarker.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw StrataError(
                .corrupt, "open mirror leg \(directory): \(Self.fileName) is unreadable (\(error)); restore it or remove the leg")
        }
    }

    func save(directory: String) throws(StrataError) {
        try AtomicFile.writeJSON(
            self, to: (directory as NSString).appendingPathComponent(Self.fileName), operation: "save mirror leg marker")
    }

    static func remove(directory: String) {
        unlink((directory as NSString).appendingPathComponent(Self.fileName))
    }
}

/// A leg in a second pool on this host.
public final class LocalPoolLeg: MirrorLeg {
    public let pool: Pool
    public let volume: String
    public let directory: String
    private let handle: VolumeHandle

    public var location: String { "pool \(self.directory)" }

    /// A leg over an open pool (the factories below, and tests over simulated devices).
    init(pool: Pool, volume: String, directory: String) throws(StrataError) {
        self.pool = pool
        self.volume = volume
        self.directory = directory
        self.handle = try pool.handle(volume)
    }

    /// Opens the leg pool in `directory` for a new leg of `volume`: it must be empty, and must
    /// hold at least `allocatedBytes` free; creates the leg's volume and its marker.
    /// - Throws: a clear error naming the pool and the fix; nothing is changed when it throws.
    public static func create(
        directory: String, volume: String, size: UInt64, allocatedBytes: UInt64, marker: LegMarker
    ) throws(StrataError) -> LocalPoolLeg {
        let pool = try Pool.open(directory: directory)
        do throws(StrataError) {
            if let existing = try LegMarker.load(directory: directory) {
                throw StrataError(
                    .busy,
                    "mirror add \(volume): pool \(directory) is already the leg \(existing.leg) of volume \(existing.volume) (pool \(existing.sourcePool)); remove that mirror first or use another pool"
                )
            }
            guard pool.status().uuid != marker.sourcePool else {
                throw StrataError(
                    .invalidArgument, "mirror add \(volume): \(directory) is the volume's own pool; give a second pool, on another disk")
            }
            let volumes = try pool.listVolumes()
            guard volumes.isEmpty else {
                throw StrataError(
                    .busy,
                    "mirror add \(volume): pool \(directory) is not empty (it holds \(volumes.prefix(5).map(\.name).joined(separator: ", "))); give an empty pool (`strata pool init`)"
                )
            }
            let free = pool.status().dataFreeBytes
            guard free >= allocatedBytes else {
                throw StrataError(
                    .noSpace,
                    "mirror add \(volume): pool \(directory) has \(SizeParser.format(free)) free but the volume holds \(SizeParser.format(allocatedBytes)); give a larger pool"
                )
            }
            try pool.createVolume(volume, size: size)
            do throws(StrataError) {
                try marker.save(directory: directory)
                try pool.flush()
            } catch {
                LegMarker.remove(directory: directory)
                try? pool.deleteVolume(volume)
                try? pool.flush()
                throw error
            }
            return try LocalPoolLeg(pool: pool, volume: volume, directory: directory)
        } catch {
            try? pool.close()
            throw error
        }
    }

    /// Reopens the leg in `directory` (daemon start, or a leg that came back).
    /// - Throws: when the pool cannot be opened or its marker is not `marker`.
    public static func reopen(directory: String, marker: LegMarker) throws(StrataError) -> LocalPoolLeg {
        let pool = try Pool.open(directory: directory)
        do throws(StrataError) {
            guard let found = try LegMarker.load(directory: directory), found == marker else {
                throw StrataError(
                    .invalidArgument,
                    "open mirror leg \(marker.leg) of \(marker.volume): pool \(directory) is not that leg (its \(LegMarker.fileName) is missing or names another); `strata mirror remove \(marker.volume) \(marker.leg)` and add it again"
                )
            }
            return try LocalPoolLeg(pool: pool, volume: marker.volume, directory: directory)
        } catch {
            try? pool.close()
            throw error
        }
    }

    public func write(at offset: UInt64, _ bytes: [UInt8]) throws(StrataError) {
        try self.pool.write(self.handle, at: offset, bytes)
    }

    public func zero(at offset: UInt64, length: UInt64, trim: Bool) throws(StrataError) {
        try self.pool.writeZeroes(self.handle, at: offset, length: length, allowTrim: trim)
    }

    public func flush() throws(StrataError) { try self.pool.flush() }

    public func read(at offset: UInt64, count: Int) throws(StrataError) -> [UInt8] {
        try self.pool.read(self.handle, at: offset, count: count)
    }

    public func size() throws(StrataError) -> UInt64 { try self.pool.size(of: self.handle) }

    public func createSplitPoint(_ name: String) throws(StrataError) {
        try self.pool.createHiddenSnapshot(self.volume, name)
    }

    public func deleteSplitPoint(_ name: String) throws(StrataError) {
        try self.pool.deleteHiddenSnapshot(self.volume, name)
    }

    public func splitPoints() throws(StrataError) -> [String] { try self.pool.hiddenSnapshots(of: self.volume) }

    public func changes(since name: String) throws(StrataError) -> [DiffExtent] {
        try self.pool.changes(of: self.volume, since: name)
    }

    public func commitIfNeeded() throws(StrataError) { try self.pool.commitIfNeeded() }

    public func close() { try? self.pool.close() }

    /// Drops the leg's marker, so its pool is no longer any mirror's leg (`mirror remove`); the
    /// leg's volume stays, an ordinary volume of that pool.
    public func release() { LegMarker.remove(directory: self.directory) }
}
