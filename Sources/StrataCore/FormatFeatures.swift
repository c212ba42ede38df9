// Format versions and incompatible features: what a strata must understand to open a pool.
//
// The superblock's format version (offset 40) says how to read the superblock itself; from
// version 2 its incompatible-features field (offset 160, a u64 bitmask, ext4's
// `s_feature_incompat` and ZFS's feature flags) says what else the pool uses that an older
// reader would misread. A reader refuses a pool whose newest intact superblock has a version
// above the ones it reads or a feature bit it does not know, naming the fix (upgrade strata);
// it never falls back to the older slot, which would silently undo the newest commit.
//
// Why (issue 13, defect 3): the replica flag (volume record byte 11, bit 0) went into a byte
// the first decoder never checked, at format version 1, so a strata from before replication
// opened a replica as a writable volume. Version 2 is refused by every version-1 reader, and
// the feature bit protects a pool from a version-2 reader that predates a later feature.
//
// Bits (a later incompatible feature adds one constant and adds it to the known mask):
//   bit 0  replicaRecords: volume records may carry the replica flag (record byte 11, bit 0)
//   bit 1  basedVolumes: records may name a base image (record bytes 12..<16) or carry the
//          flatten-in-progress flag (record byte 11, bit 1); an older reader would read such a
//          volume's holes as zeros instead of its base image's data
//
// Upgrade: a version-1 pool opens (it has no feature field; its records are read as they were
// written), and its next commit writes version 2 with the features it uses; a read-only open
// leaves it at version 1. A feature bit is set when the first record needing it is stored, or
// at open when a version-1 pool already holds such records, and is never cleared.

/// Features of a pool's format that a strata must know to open the pool.
struct IncompatibleFeatures: OptionSet, Sendable, Hashable, CustomStringConvertible {
    let rawValue: UInt64

    /// Volume records may carry the replica flag: read-only replication targets.
    static let replicaRecords = IncompatibleFeatures(rawValue: 1 << 0)
    /// Volume records may name a base image their holes read from (`Pool+Base.swift`).
    static let basedVolumes = IncompatibleFeatures(rawValue: 1 << 1)
    /// Volume records may be hidden snapshots (a mirror's split points, `Pool+Hidden.swift`): an
    /// older reader would list them and let users delete the record change tracking relies on.
    static let hiddenSnapshots = IncompatibleFeatures(rawValue: 1 << 2)

    /// The features' names, and `bit N` for bits this strata does not know.
    var description: String {
        let names = (0..<64).compactMap { (bit: UInt64) -> String? in
            let feature = IncompatibleFeatures(rawValue: 1 << bit)
            guard self.contains(feature) else { return nil }
            switch feature {
            case .replicaRecords: return "replica records"
            case .basedVolumes: return "based volumes"
            case .hiddenSnapshots: return "hidden snapshots"
            default: return "bit \(bit)"
            }
        }
        return names.isEmpty ? "none" : names.joined(separator: ", ")
    }
}

extension Superblock {
    /// Every incompatible feature this strata reads and writes.
    static let knownIncompatibleFeatures: IncompatibleFeatures = [.replicaRecords, .basedVolumes, .hiddenSnapshots]
}

/// What a reader of the format understands: this strata's, or (in tests) an older one's.
struct FormatReader: Sendable {
    /// The newest format version it reads (it reads every version from 1).
    var versionMax: UInt32
    var knownIncompatibleFeatures: IncompatibleFeatures

    static let current = FormatReader(
        versionMax: Superblock.formatVersion, knownIncompatibleFeatures: Superblock.knownIncompatibleFeatures)

    /// Throws `.unsupported` unless this reader knows `version` and every bit of `features`.
    func require(version: UInt32, features: IncompatibleFeatures, slot: PageNumber) throws(StrataError) {
        guard version <= self.versionMax else {
            throw StrataError(
                .unsupported,
                "superblock slot \(slot): format version \(version) is newer than this strata reads (1 to \(self.versionMax)); upgrade strata to open this pool"
            )
        }
        let unknown = features.subtracting(self.knownIncompatibleFeatures)
        guard unknown.isEmpty else {
            throw StrataError(
                .unsupported,
                "superblock slot \(slot): incompatible features 0x\(String(unknown.rawValue, radix: 16)) (\(unknown)) are unknown to this strata (it knows: \(self.knownIncompatibleFeatures)); upgrade strata to open this pool"
            )
        }
    }
}

extension VolumeRecord {
    /// The incompatible features this record needs a reader to know.
    var incompatibleFeatures: IncompatibleFeatures {
        var features: IncompatibleFeatures = []
        if self.isReplica { features.insert(.replicaRecords) }
        if self.baseID != 0 || self.isFlattening { features.insert(.basedVolumes) }
        if self.isHidden { features.insert(.hiddenSnapshots) }
        return features
    }

    /// Why this record cannot be in a pool with `superblock`'s features, or nil. A version-1
    /// superblock has no feature field, so any record is accepted there (and adopted at open).
    func featureProblem(_ superblock: Superblock) -> String? {
        let missing = self.incompatibleFeatures.subtracting(superblock.incompatibleFeatures)
        guard superblock.version >= 2, !missing.isEmpty else { return nil }
        return "record \(self.id) needs incompatible features (\(missing)) the superblock does not list"
    }
}

extension Pool {
    /// Checks every record against the superblock's features and takes on what a version-1
    /// pool's records already use, so its next commit lists them. Runs once, at open.
    /// - Throws: `.corrupt` when a version-2 pool holds a record its features do not allow.
    func adoptFeatures(_ superblock: Superblock) throws(StrataError) {
        for slot in self.slotByID.values {
            let record = self.volumes[slot]
            if let problem = record.featureProblem(superblock) {
                throw StrataError.corrupt(page: superblock.slot, "superblock: \(problem)")
            }
            self.incompatibleFeatures.formUnion(record.incompatibleFeatures)
        }
    }

    /// Notes the features a record being stored needs; the next commit's superblock lists them.
    func noteFeatures(of record: VolumeRecord) {
        self.incompatibleFeatures.formUnion(record.incompatibleFeatures)
    }
}
