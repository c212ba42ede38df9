// What an administrator sets for every logical unit a daemon serves (`strata serve`), as
// qemu's `physical_block_size` and the per-LU settings of tgt and LIO do: the physical block
// size the units report.
//
// Logical blocks stay 512 bytes. The physical block is what an initiator aligns its I/O to
// (SBC-4 §4.6.2): 4096 (the default) reports a 512-byte-emulation disk, LOGICAL BLOCKS PER
// PHYSICAL BLOCK EXPONENT 3, which matches the page size of the file the pool lives in, so
// whole-page writes avoid the host's read-modify-write; 512 reports a disk whose physical and
// logical blocks are one, which some guests and tools expect. READ CAPACITY(16) and the Block
// Limits VPD page (OPTIMAL TRANSFER LENGTH GRANULARITY, and the unmap granularity, which must
// be a whole number of physical blocks) derive from it. No check of WRITE SAME, COMPARE AND
// WRITE or UNMAP depends on it: each takes any logical block range.
//
// One value, made once from the daemon's options and handed to the units through
// `ISCSITarget` and `UnitTable`; there is no global to change behind a running unit's back.

/// The settings every logical unit of a daemon reports.
public struct UnitSettings: Sendable, Equatable {
    /// The physical block sizes a unit can report, in bytes (`--iscsi-physical-block-size`).
    public static let physicalBlockSizes: [UInt64] = [512, 4096]
    /// 4 KiB physical blocks: the page size of the file the pool lives in.
    public static let physicalBlockSizeDefault: UInt64 = 4096

    /// The physical block size the units report, in bytes: one of `physicalBlockSizes`.
    public let physicalBlockSize: UInt64

    /// The default settings: 4 KiB physical blocks.
    public init() {
        self.physicalBlockSize = Self.physicalBlockSizeDefault
    }

    /// Settings with another physical block size; nil when `physicalBlockSize` is not one of
    /// `physicalBlockSizes` (the caller names its option and the allowed values).
    public init?(physicalBlockSize: UInt64) {
        guard Self.physicalBlockSizes.contains(physicalBlockSize) else { return nil }
        self.physicalBlockSize = physicalBlockSize
    }

    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT of READ CAPACITY(16) (SBC-4 §5.20.2).
    var logicalPerPhysicalExponent: UInt8 {
        let blocks = self.logicalPerPhysical
        precondition(blocks.nonzeroBitCount == 1, "physical block of \(self.physicalBlockSize) bytes is not 2^n blocks")
        return UInt8(blocks.trailingZeroBitCount)
    }

    /// Logical blocks per physical block (LBPPB): 1 or 8.
    var logicalPerPhysical: UInt64 {
        precondition(self.physicalBlockSize >= LogicalUnit.blockSize, "physical block smaller than a logical block")
        return self.physicalBlockSize / LogicalUnit.blockSize
    }
}
