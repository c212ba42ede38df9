// A small pool on a simulated device for the targets that decode into the engine (streams,
// SCSI commands, NBD exports): made new for every input so a run does not depend on the inputs
// before it. 4 KiB chunks and a 3 MiB device keep it cheap to make, while every engine path
// (allocation, copy-on-write, snapshots, clones) stays reachable; 512 metadata pages leave room
// above the commit reserve.

import StrataCore
import StrataTesting

enum FuzzPool {
    static let chunkSize: UInt64 = 4096
    static let metadataPages: UInt64 = 512
    static let dataChunks: UInt64 = 512
    /// `vm1`'s size: small enough that a full-volume command stays quick.
    static let volumeSize: UInt64 = 1 << 20

    /// A pool with volume `vm1` (one chunk written), its snapshot `vm1@base`, and a clone `clone1`
    /// of it.
    static func make() -> Pool {
        let device = SimDevice(size: Self.metadataPages * 4096 + Self.dataChunks * Self.chunkSize)
        do throws(StrataError) {
            try Pool.format(device: device, chunkSize: Self.chunkSize, metadataPages: Self.metadataPages)
            let pool = try Pool(device: device)
            try pool.createVolume("vm1", size: Self.volumeSize)
            let handle = try pool.handle("vm1")
            let pattern = [UInt8](repeating: 0xa5, count: Int(Self.chunkSize))
            try pool.write(handle, at: 0, pattern)
            try pool.createSnapshot("vm1", "base")
            try pool.clone("vm1", "base", to: "clone1")
            try pool.flush()
            return pool
        } catch {
            preconditionFailure("fuzz pool: \(error.message)")
        }
    }
}

extension FuzzPool {
    /// After any input, accepted or refused, the pool must still check clean: a decoder that
    /// let bad input reach the engine half-applied would show here.
    static func requireClean(_ pool: Pool, after what: String) {
        let report = pool.checkDurable()
        FuzzCheck.require(
            report.clean,
            "pool not clean after \(what): \(report.failure ?? "") \(report.problems.map(\.description).joined(separator: "; "))")
    }
}
