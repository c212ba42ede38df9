// A pool on a simulated device with one volume `vm1`, and the logical unit over it: what the
// logical unit tests start from.

import StrataCore
import StrataTesting

@testable import StrataISCSI

struct UnitFixture {
    let pool: Pool
    let unit: LogicalUnit

    /// - Parameters:
    ///   - chunk: the pool's chunk size in bytes.
    ///   - dataChunks: how many chunks of data the device holds after 512 metadata pages.
    ///   - volumeSize: the size of `vm1` in bytes.
    init(chunk: UInt64, dataChunks: UInt64, volumeSize: UInt64) throws {
        let device = SimDevice(size: 512 * 4096 + dataChunks * chunk)
        try Pool.format(device: device, chunkSize: chunk, metadataPages: 512)
        self.pool = try Pool(device: device)
        try self.pool.createVolume("vm1", size: volumeSize)
        self.unit = LogicalUnit(pool: self.pool, handle: try self.pool.handle("vm1"))
    }
}
