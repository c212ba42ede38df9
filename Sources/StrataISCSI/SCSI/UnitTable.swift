// The logical units of one pool, shared by every session that opens them (their reservations,
// mode state and held copy results live across sessions), and found by name for logins or by
// the designators of VPD page 83h for EXTENDED COPY's target descriptors (SPC-4 §6.4.5.2, the
// identification descriptor target descriptor, E4h).
//
// A logical unit is named by the record id of its volume or snapshot, which survives a rename:
// the NAA designator holds the pool's identifier and the id, the EUI-64 designator the id. A
// unit whose handle no longer matches its record (renamed) is replaced on the next lookup.
// Units live as long as the table (each holds the table to find its peers).

import StrataCore
import Synchronization

public final class UnitTable: Sendable {
    public let pool: Pool
    /// Objects served from other pools (a mirror leg's copy), asked before the pool.
    public let foreign: (any ForeignExports)?
    /// What every unit reports (`strata serve --iscsi-physical-block-size`).
    public let settings: UnitSettings
    private let units = Mutex<[UInt64: LogicalUnit]>([:])
    /// Units of foreign objects by name (their record ids belong to other pools).
    private let foreignUnits = Mutex<[String: LogicalUnit]>([:])

    public init(pool: Pool, foreign: (any ForeignExports)? = nil, settings: UnitSettings = UnitSettings()) {
        self.pool = pool
        self.foreign = foreign
        self.settings = settings
    }

    /// The logical unit of a pool object (`VOLUME` or `VOLUME@SNAPSHOT`) or of a foreign export.
    /// - Throws: `.notFound` when there is no such object.
    public func unit(for object: String) throws(StrataError) -> LogicalUnit {
        if let (pool, handle) = self.foreign?.foreign(object) {
            return self.foreignUnits.withLock { units in
                if let unit = units[object], unit.handle == handle, unit.pool === pool { return unit }
                let unit = LogicalUnit(pool: pool, handle: handle, settings: self.settings)
                units[object] = unit
                return unit
            }
        }
        return self.unit(try self.pool.handle(object, frontEnd: .iscsi))
    }

    func unit(_ handle: VolumeHandle) -> LogicalUnit {
        self.units.withLock { units in
            if let unit = units[handle.id], unit.handle == handle { return unit }
            // A new unit: first drop those of volumes and snapshots deleted since (IDs are never
            // reused), so the table holds units only for objects that exist.
            units = units.filter { self.pool.handle(id: $0.key) != nil }
            let unit = LogicalUnit(pool: self.pool, handle: handle, table: self, settings: self.settings)
            units[handle.id] = unit
            return unit
        }
    }

    /// Units held now (tests check that deleted objects leave none behind).
    var count: Int { self.units.withLock { $0.count } }

    /// The unit a target descriptor's designator names (code set, designator type and the
    /// designator's bytes), or nil when it names none of this pool's volumes and snapshots.
    func unit(codeSet: UInt8, type: UInt8, designator: [UInt8]) -> LogicalUnit? {
        guard codeSet == 1, let id = Designators.volumeID(type: type, designator, pool: self.pool) else { return nil }
        guard let handle = self.pool.handle(id: id, frontEnd: .iscsi) else { return nil }
        // A unit already open keeps its name; a fresh one is named by the pool.
        let open = self.units.withLock { $0[id] }
        return open ?? self.unit(handle)
    }
}

/// The logical unit designators Strata reports in VPD page 83h (SPC-4 §7.8.6), and reading
/// them back from a target descriptor.
enum Designators {
    /// The IEEE company ID field of both designators: "STR" (not a registered OUI; the NAA
    /// designator only has to be unique among the logical units an initiator sees).
    static let companyID: UInt64 = 0x53_5452

    /// NAA 6h (IEEE Registered Extended), 16 bytes: NAA, company ID, 36 bits of the pool's
    /// identifier, then the record id.
    static func naa(id: UInt64, pool: Pool) -> [UInt8] {
        let high = 0x6 << 60 | Self.companyID << 36 | (pool.identifier & 0xf_ffff_ffff)
        return BigEndian.bytes(high, 8) + BigEndian.bytes(id, 8)
    }

    /// EUI-64, 8 bytes: company ID, then the low 40 bits of the record id.
    static func eui64(id: UInt64) -> [UInt8] {
        BigEndian.bytes(Self.companyID, 3) + BigEndian.bytes(id, 5)
    }

    /// The record id a binary designator of `type` (3 NAA, 2 EUI-64) names in `pool`.
    static func volumeID(type: UInt8, _ designator: [UInt8], pool: Pool) -> UInt64? {
        switch type {
        case 3:
            guard designator.count == 16 else { return nil }
            let id = BigEndian.read(designator, 8, 8)
            return Array(designator[0..<8]) == Array(Self.naa(id: id, pool: pool)[0..<8]) ? id : nil
        case 2:
            guard designator.count == 8, BigEndian.read(designator, 0, 3) == Self.companyID else { return nil }
            return BigEndian.read(designator, 3, 5)
        default:
            return nil
        }
    }
}
