// Format version 2 and the incompatible-features bitmask (issue 13, defect 3).
//
// The bug: the replica flag went into volume-record byte 11, which the first decoder never
// checked, while the format version stayed 1, so a strata from before replication opened a
// replica as a writable volume. Now pools are written at version 2 with a feature bit for
// replica records: an old-format pool still opens (and is upgraded by its next commit), and a
// reader that does not know the version or the bit (played here by a narrowed `FormatReader`)
// refuses the pool instead of falling back to the older superblock slot.

import Foundation
@testable import StrataCore
import StrataTesting
import Testing

@Suite struct FormatFeatureTests {
    static let unknownBit = IncompatibleFeatures(rawValue: 1 << 5)

    func makePool() throws -> (SimDevice, Pool) {
        try SimDevice.formattedPool(metadataPages: 256, dataBytes: 1 << 20)
    }

    /// The newest superblock as this strata reads it.
    func newest(_ device: any PoolDevice) throws -> Superblock { try Pool.readSuperblock(device: device) }

    /// Rewrites superblock slots in place, as another strata would have written them.
    func rewrite(_ device: SimDevice, slots: [UInt64] = [0, 1], _ change: (inout Superblock) -> Void) throws {
        for slot in slots {
            let bytes = try device.read(count: Limits.pageSize, at: slot * UInt64(Limits.pageSize))
            var block = try Superblock.decode(bytes, slot: PageNumber(slot), deviceSize: device.size)
            change(&block)
            device.poke(block.encode(), at: slot * UInt64(Limits.pageSize))
        }
    }

    /// Makes every slot a version-1 superblock, as strata wrote before the bump.
    func downgradeToVersionOne(_ device: SimDevice) throws {
        try self.rewrite(device) { block in
            block.version = 1
            block.incompatibleFeatures = []
        }
    }

    @Test func newPoolsAreVersionTwoWithNoFeatures() throws {
        let (device, pool) = try self.makePool()
        #expect(try self.newest(device).version == 2)
        #expect(try self.newest(device).incompatibleFeatures.isEmpty)
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.flush()
        #expect(try self.newest(device).incompatibleFeatures.isEmpty, "a plain volume needs no feature")
    }

    @Test func aReplicaRecordSetsItsFeatureBitForGood() throws {
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.setReplica("vm1", true)
        try pool.flush()
        #expect(try self.newest(device).incompatibleFeatures == .replicaRecords)
        // Promoted: the bit stays (it is never cleared).
        try pool.setReplica("vm1", false)
        try pool.flush()
        #expect(try self.newest(device).incompatibleFeatures == .replicaRecords)
    }

    @Test func anOldFormatPoolOpensAndIsUpgradedByItsNextCommit() throws {
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.write(try pool.handle("vm1"), at: 4096, [UInt8](repeating: 0x42, count: 4096))
        try pool.flush()
        try self.downgradeToVersionOne(device)
        #expect(try self.newest(device).version == 1)

        // Read-only, it stays at version 1.
        let reader = try Pool(device: device, readOnly: true)
        #expect(try reader.read(try reader.handle("vm1"), at: 4096, count: 4096) == [UInt8](repeating: 0x42, count: 4096))
        #expect(Pool.check(device: device).clean)
        #expect(try self.newest(device).version == 1)

        // Writable, it is upgraded by its next commit (and not before).
        let writer = try Pool(device: device)
        #expect(try self.newest(device).version == 1)
        try writer.write(try writer.handle("vm1"), at: 8192, [UInt8](repeating: 0x43, count: 4096))
        try writer.flush()
        #expect(try self.newest(device).version == 2)
        #expect(try self.newest(device).incompatibleFeatures.isEmpty)
        let reopened = try Pool(device: device)
        #expect(try reopened.read(try reopened.handle("vm1"), at: 4096, count: 8192)
            == [UInt8](repeating: 0x42, count: 4096) + [UInt8](repeating: 0x43, count: 4096))
        #expect(Pool.check(device: device).clean)
    }

    @Test func anOldFormatPoolsReplicasGetTheirBitAtTheUpgrade() throws {
        // A pool from the strata that added the replica flag at version 1.
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.setReplica("vm1", true)
        try pool.flush()
        try self.downgradeToVersionOne(device)
        #expect(Pool.check(device: device).clean)

        let upgraded = try Pool(device: device)
        #expect(try upgraded.isReplica("vm1"))
        try upgraded.createVolume("vm2", size: 1 << 20)
        try upgraded.flush()
        #expect(try self.newest(device).version == 2)
        #expect(try self.newest(device).incompatibleFeatures == .replicaRecords)
    }

    @Test func aNewFormatPoolWithTheFlagIsRefusedByADecoderThatDoesNotKnowIt() throws {
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.flush()
        try pool.setReplica("vm1", true)
        try pool.flush()
        let newest = try self.newest(device)
        #expect(newest.incompatibleFeatures == .replicaRecords)

        // A version-2 reader without the bit: the older slot (no replica yet) would suit it, and
        // taking it would open vm1 writable; it must refuse instead.
        let withoutTheBit = FormatReader(versionMax: 2, knownIncompatibleFeatures: [])
        let olderSlot = PageNumber(1 - newest.slot.rawValue)
        let older = try device.read(count: Limits.pageSize, at: olderSlot.rawValue * UInt64(Limits.pageSize))
        #expect(try Superblock.decode(older, slot: olderSlot, deviceSize: device.size, reader: withoutTheBit).generation
            < newest.generation)
        let refused = #expect(throws: StrataError.self) { try Pool.readSuperblock(device: device, reader: withoutTheBit) }
        #expect(refused?.code == .unsupported)
        #expect(refused?.message.contains("incompatible features 0x1 (replica records)") == true, "\(refused?.message ?? "")")
        #expect(refused?.message.contains("upgrade strata") == true)

        // The strata from before the bump reads version 1 only: it refuses the pool too.
        let versionOne = FormatReader(versionMax: 1, knownIncompatibleFeatures: [])
        let old = #expect(throws: StrataError.self) { try Pool.readSuperblock(device: device, reader: versionOne) }
        #expect(old?.code == .unsupported)
        #expect(old?.message.contains("format version 2 is newer than this strata reads (1 to 1)") == true, "\(old?.message ?? "")")

        // This strata opens it, with vm1 still a replica.
        #expect(try Pool(device: device).isReplica("vm1"))
    }

    /// A based volume's holes read its base image; a strata that does not know based volumes
    /// would read them as zeros, so the pool carries bit 1 and such a reader refuses it.
    @Test func aBasedVolumeSetsItsBitAndAReaderWithoutItRefusesThePool() throws {
        let (device, pool) = try self.makePool()
        let path = NSTemporaryDirectory() + "strata-feature-base-\(getpid()).raw"
        try Data(repeating: 0x5A, count: 64 << 10).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        pool.bases.setOpener { source throws(StrataError) in try TestBaseImage(path: source.path) }
        try pool.createVolume("plain", size: 1 << 20)
        try pool.flush()
        #expect(try self.newest(device).incompatibleFeatures.isEmpty)
        try pool.createVolume("based", size: nil, basePath: path)
        try pool.flush()
        #expect(try self.newest(device).incompatibleFeatures == .basedVolumes)
        let withoutTheBit = FormatReader(versionMax: 2, knownIncompatibleFeatures: [.replicaRecords])
        let refused = #expect(throws: StrataError.self) { try Pool.readSuperblock(device: device, reader: withoutTheBit) }
        #expect(refused?.code == .unsupported)
        #expect(refused?.message.contains("incompatible features 0x2 (based volumes)") == true, "\(refused?.message ?? "")")
        // The bit stays after the volume is flattened and gone.
        try pool.flatten("based")
        try pool.deleteVolume("based")
        try pool.flush()
        #expect(try self.newest(device).incompatibleFeatures == .basedVolumes)
    }

    @Test(arguments: ["unknown bit", "newer version"])
    func aPoolFromANewerStrataIsRefusedNamingThePoolAndTheFix(_ change: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-format-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Pool.create(directory: directory, size: 64 << 20)
        let device = try FileDevice(path: directory + "/" + Pool.fileName)
        var block = try self.newest(device)
        if change == "unknown bit" { block.incompatibleFeatures.insert(Self.unknownBit) } else { block.version = 3 }
        try device.write(block.encode(), at: block.slot.rawValue * UInt64(Limits.pageSize))
        try device.sync()

        let open = #expect(throws: StrataError.self) { try Pool.open(directory: directory) }
        #expect(open?.code == .unsupported)
        #expect(open?.message.hasPrefix("open pool \(directory): superblock slot \(block.slot):") == true, "\(open?.message ?? "")")
        #expect(open?.message.hasSuffix("upgrade strata to open this pool") == true, "\(open?.message ?? "")")
        let expected = change == "unknown bit" ? "incompatible features 0x20 (bit 5)" : "format version 3 is newer"
        #expect(open?.message.contains(expected) == true, "\(open?.message ?? "")")
        let check = #expect(throws: StrataError.self) { try Pool.check(directory: directory) }
        #expect(check?.code == .unsupported)
        #expect(check?.message.hasPrefix("check pool \(directory):") == true, "\(check?.message ?? "")")
    }

    @Test func aReplicaRecordWithoutItsBitIsCorruption() throws {
        let (device, pool) = try self.makePool()
        try pool.createVolume("vm1", size: 1 << 20)
        try pool.setReplica("vm1", true)
        try pool.flush()
        let newest = try self.newest(device)
        try self.rewrite(device, slots: [newest.slot.rawValue]) { $0.incompatibleFeatures = [] }

        let opened = #expect(throws: StrataError.self) { try Pool(device: device) }
        #expect(opened?.code == .corrupt)
        #expect(opened?.message.contains("needs incompatible features (replica records)") == true, "\(opened?.message ?? "")")
        let report = Pool.check(device: device)
        #expect(!report.clean)
        #expect(report.problems.contains { $0.page == newest.slot.rawValue && $0.message.contains("replica records") },
            "\(report.problems)")
    }

    @Test func featureNamesAndTheKnownMask() {
        #expect(Superblock.knownIncompatibleFeatures == [.replicaRecords, .basedVolumes, .hiddenSnapshots])
        #expect(IncompatibleFeatures.replicaRecords.rawValue == 1)
        #expect(IncompatibleFeatures.basedVolumes.rawValue == 2)
        #expect(IncompatibleFeatures.hiddenSnapshots.rawValue == 4)
        #expect("\(IncompatibleFeatures([.hiddenSnapshots]))" == "hidden snapshots")
        #expect("\(IncompatibleFeatures([.replicaRecords, Self.unknownBit]))" == "replica records, bit 5")
        #expect("\(IncompatibleFeatures([.basedVolumes]))" == "based volumes")
        #expect("\(IncompatibleFeatures())" == "none")
    }
}
