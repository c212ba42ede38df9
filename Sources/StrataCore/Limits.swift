// Every bound the engine enforces, in one place, each with the reason for its value (STYLE §5).

/// Engine limits. Changing one of the format constants changes the on-disk format.
public enum Limits {
    /// Metadata page size. 4 KiB matches the page cache and the sector size of every device
    /// we target, so a page write is never split by the kernel. Format constant.
    public static let pageSize = 4096
    /// Smallest chunk: one page. Smaller chunks would make a leaf map less than 1 MiB.
    public static let chunkSizeMin: UInt64 = 4096
    /// Largest chunk: 1 MiB. Larger chunks make copy-on-write of a 4 KiB write too costly.
    public static let chunkSizeMax: UInt64 = 1 << 20
    /// Default chunk: 64 KiB, dm-thin's and Ceph's habit for VM disks.
    public static let chunkSizeDefault: UInt64 = 64 << 10
    /// Entries per mapping-tree node (8 bits of the chunk index per level). Format constant.
    public static let treeFanout = 256
    /// Deepest mapping tree: 8 levels of 8 bits address 2^64 chunks, so no volume needs more.
    public static let treeDepthMax = 8
    /// Longest volume or snapshot name, in bytes (the record field's width). Format constant.
    public static let nameBytesMax = 64
    /// Largest volume: 2^63 bytes, so offset + length never overflows `UInt64`.
    public static let volumeSizeMax: UInt64 = 1 << 62
    /// Volume sizes are whole sectors, as every block protocol we serve requires.
    public static let sectorSize: UInt64 = 512
    /// Metadata pages always left free for commits and deletes, beyond what a full rewrite of
    /// the space maps and the volume table needs: deleting must work on a full pool.
    public static let metadataReserveSlackPages: UInt64 = 64
    /// Smallest metadata region a pool is created with (8 MiB).
    public static let metadataPagesMin: UInt64 = 2048
    /// Decoded tree nodes kept in memory before clean ones are dropped (about 64 MiB of nodes).
    public static let nodeCachePagesMax = 16_384
    /// Stripes of the per-chunk write locks: enough that 2 connections x 32 requests rarely collide.
    public static let chunkLockStripes = 1024
    /// Mapped chunks a trim collects per walk of the tree before unmapping them: bounds the
    /// memory of trimming a huge range while a walk's cost spreads over many unmaps.
    public static let trimBatchChunks = 4096
    /// Seconds between checks that a base image's files still have their recorded size and
    /// modification time: a stat per file per second costs nothing next to the reads it guards.
    public static let baseRecheckSeconds: Double = 1.0
    /// Bytes read at a time while fingerprinting a base image file.
    public static let baseFingerprintReadBytes = 1 << 20
    /// Chunks of a base image a flatten or rebase examines per step: one allocation query and
    /// one hold of the volume's gate each, so snapshots wait at most one step.
    public static let flattenScanChunks = 1024
    /// Bytes a flatten copies between commits: what a crash costs a resumed flatten.
    public static let flattenCommitBytes: UInt64 = 256 << 20
    /// Seconds between timer commits when the owner asks for them (dm-thin commits every second).
    public static let commitIntervalSecondsDefault: Double = 1.0
    /// Chunks an in-pool copy shares per hold of the chunk locks and the metadata lock: a batch
    /// of 256 (one leaf) keeps writers to other chunks waiting at most one leaf's updates.
    public static let shareBatchChunks: UInt64 = 256
    /// Bytes an in-pool copy moves through memory per read and write where it cannot share
    /// (unaligned edges, based volumes): large enough for sequential I/O, small enough to hold.
    public static let copyPieceBytes: UInt64 = 1 << 20
}
