// Bounds of the base-image decoders, each with the reason for its value (STYLE §5). Every
// length read from an image file is checked against one of these before anything is
// allocated, so a hostile or damaged file costs at most these amounts of memory and time.

import StrataCore

extension Limits {
    /// Longest backing chain, counting the top file. QEMU images seldom stack more than a
    /// handful; 64 is far past any real chain and still bounds the open files and the
    /// recursion of reads that fall through every layer.
    public static let baseImageChainDepthMax = 64
    /// Smallest qcow2 cluster_bits: 512-byte clusters, the spec's floor.
    public static let qcow2ClusterBitsMin: UInt32 = 9
    /// Largest qcow2 cluster_bits: 2 MiB clusters, QEMU's own implementation limit, so every
    /// image QEMU can write is readable and no cluster buffer exceeds 2 MiB.
    public static let qcow2ClusterBitsMax: UInt32 = 21
    /// Largest active L1 table, in entries: QEMU's 32 MiB implementation limit (8 bytes each).
    /// Bounds the one table read whole at open.
    public static let qcow2L1EntriesMax: UInt64 = 32 << 20 / 8
    /// Largest virtual size of a qcow2 image: L2 entries hold 56-bit host offsets, and the
    /// spec calls 64 PiB the most an image can populate. Keeps every guest offset far from
    /// overflowing `UInt64` when lengths are added to it.
    public static let qcow2VirtualBytesMax: UInt64 = 1 << 56
    /// Longest backing file name, in bytes: the spec's 1023.
    public static let qcow2BackingNameBytesMax = 1023
    /// Decoded L2 tables kept per image, in bytes. 32 MiB maps 256 GiB of a 64 KiB-cluster
    /// image, so a guest's working set rarely misses, while a chain of 64 layers stays
    /// bounded at 2 GiB in the worst case and a few MiB in practice (tables are loaded only
    /// when touched).
    public static let qcow2L2CacheBytesMax = 32 << 20
    /// Inflated compressed clusters kept per image, in bytes. Guests re-read the blocks of a
    /// cluster one at a time (a 4 KiB read of a 64 KiB cluster); 8 MiB keeps the recent ones
    /// without inflating them sixteen times, and at least four 2 MiB clusters.
    public static let qcow2InflatedCacheBytesMax = 8 << 20
}
