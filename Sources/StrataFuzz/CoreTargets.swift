// The engine's metadata pages (docs/FORMAT.md), as opening a pool reads them: superblock slots,
// copy-on-write btree nodes, and the volume table (a paged array of volume records). Each page
// gets its CRC-32C recomputed (and, where the settings byte says, its page number and kind set
// to what the reader expects) before decoding, so mutations reach the field checks.

import StrataCore

enum CoreTargets {
    static let pageSize = 4096

    static let superblock = FuzzTarget(
        name: "superblock",
        summary: "superblock slots (Superblock.decode): geometry, format version and features"
    ) { input in
        var page = Self.page(input)
        let slot = UInt64(page[24] & 1)  // the generation's parity names its slot
        page.storeLE(slot, at: 16)
        MetadataDecoding.reseal(&page)
        do throws(StrataError) {
            let generation = try MetadataDecoding.superblock(page, slot: slot, deviceSize: 1 << 40)
            FuzzCheck.require(generation % 2 == slot, "superblock generation \(generation) in slot \(slot)")
        } catch {
            return
        }
    }

    static let treePage = FuzzTarget(
        name: "tree-page",
        summary: "copy-on-write btree nodes, leaves and interior (TreeNode.decode)"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        let level = settings & 3
        var page = Self.page(bytes.rest())
        if settings & 4 == 0 {
            page[8] = level == 0 ? 3 : 2  // PageKind.treeLeaf : .treeInterior
            page[9] = level
            page.storeLE(UInt64(100), at: 16)
        }
        MetadataDecoding.reseal(&page)
        do throws(StrataError) {
            let used = try MetadataDecoding.treeNode(
                page, page: 100, level: level, pageLimit: 4096, chunkLimit: 1 << 20, epochLimit: 1000)
            FuzzCheck.require(used == Int(page.loadLE(at: 12) as UInt32), "node entry count differs from its header")
        } catch {
            return
        }
    }

    static let volumeTable = FuzzTarget(
        name: "volume-table",
        summary: "the volume table: paged-array root, index and leaf pages, and volume records"
    ) { input in
        // The input is up to 8 pages, numbered from 2 (the root); each gets its number and CRC fixed.
        var pages: [[UInt8]] = []
        var bytes = FuzzBytes(input)
        while bytes.remaining > 0 && pages.count < 8 {
            var page = Self.page(bytes.take(Self.pageSize))
            page.storeLE(UInt64(pages.count + 2), at: 16)
            MetadataDecoding.reseal(&page)
            pages.append(page)
        }
        guard !pages.isEmpty else { return }
        let limit = UInt64(pages.count + 2)
        do throws(StrataError) {
            let problems = try MetadataDecoding.volumeTable(root: 2, pageLimit: limit) { (number: UInt64) throws(StrataError) in
                guard number >= 2, number < limit else {
                    throw StrataError(.corrupt, "fuzz: page \(number) outside the table")
                }
                return pages[Int(number - 2)]
            }
            _ = problems
        } catch {
            return
        }
    }

    /// `bytes` as one page: cut or zero-padded to 4 KiB.
    static func page(_ bytes: [UInt8]) -> [UInt8] {
        var page = Array(bytes.prefix(Self.pageSize))
        page += [UInt8](repeating: 0, count: Self.pageSize - page.count)
        return page
    }
}
