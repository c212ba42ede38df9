// The commit timer's contract (`Pool.commitIfNeeded`, docs/FORMAT.md "Commit protocol"): it
// commits changed metadata, which makes a write that mapped a chunk durable, and leaves a write
// that changed no metadata (an overwrite of a chunk the volume owns) to the kernel's writeback;
// a flush syncs that one. Checked with SimDevice's sync count and its power-loss image.

import StrataCore
import StrataTesting
import Testing

struct CommitTimerTests {
    private static let block = 4096

    private static func bytes(_ value: UInt8) -> [UInt8] { [UInt8](repeating: value, count: Self.block) }

    @Test func theTimerCommitsMappingsAndLeavesOverwritesToAFlush() throws {
        let (device, pool) = try SimDevice.formattedPool(metadataPages: 256, dataBytes: 64 * 16384, chunkSize: 16384)
        try pool.createVolume("v", size: 1 << 20)
        let handle = try pool.handle("v")
        try pool.flush()

        // A first write maps a chunk: the timer commits it, data and mapping.
        try pool.write(handle, at: 0, Self.bytes(1))
        let beforeMapping = device.syncs
        try pool.commitIfNeeded()
        #expect(device.syncs > beforeMapping, "the timer did not commit a new mapping")

        // An overwrite inside the same chunk changes no metadata: the timer does not sync it.
        try pool.write(handle, at: UInt64(Self.block), Self.bytes(2))
        let beforeOverwrite = device.syncs
        try pool.commitIfNeeded()
        #expect(device.syncs == beforeOverwrite, "the timer synced an overwrite")
        var random = SeededRandom(seed: 11)
        let lost = try Pool(device: device.crashImage(mode: .dropUnsynced, using: &random))
        let lostHandle = try lost.handle("v")
        #expect(try lost.read(lostHandle, at: 0, count: Self.block) == Self.bytes(1), "the committed write was lost")
        #expect(
            try lost.read(lostHandle, at: UInt64(Self.block), count: Self.block) == Self.bytes(0),
            "the power-loss image kept a write nothing synced")

        // A flush makes the overwrite durable.
        try pool.flush()
        #expect(device.syncs == beforeOverwrite + 1)
        let image = device.crashImage(mode: .dropUnsynced, using: &random)
        #expect(Pool.check(device: image).problems.isEmpty)
        let kept = try Pool(device: image)
        let keptHandle = try kept.handle("v")
        #expect(try kept.read(keptHandle, at: UInt64(Self.block), count: Self.block) == Self.bytes(2))
    }
}
