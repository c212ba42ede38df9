// INQUIRY (SPC-4 §6.6): standard data and the vital product data pages a thin-provisioned
// block device reports: 00h supported pages, 80h unit serial number, 83h device
// identification, 8Fh third-party copy (SPC-4 §7.8.17), B0h block limits, B1h block device characteristics and B2h logical block
// provisioning (SBC-4 §6.6).

enum Inquiry {
    static let vendor = "STRATA  "
    static let product = "Strata volume   "
    static let revision = "0001"
    static let pages: [UInt8] = [0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2]

    static func respond(_ cdb: CDB, unit: LogicalUnit) throws(SCSIError) -> SCSIResult {
        let evpd = cdb[1] & 0x01 != 0
        if cdb[1] & 0x02 != 0 { return .check(.invalidField(byte: 1, bit: 1)) }  // CmdDt (obsolete)
        let allocation = cdb.uint16(3)
        let page = cdb[2]
        if !evpd {
            guard page == 0 else { return .check(.invalidField(byte: 2)) }
            return .good(Self.standard().truncated(to: allocation))
        }
        let body: [UInt8]
        switch page {
        case 0x00: body = Self.pages
        case 0x80: body = Array(Self.serial(unit).utf8)
        case 0x83: body = Self.identification(unit)
        case 0x8f: body = ExtendedCopy.thirdPartyCopyPage()
        case 0xb0: body = Self.blockLimits(unit)
        case 0xb1: body = Self.characteristics()
        case 0xb2: body = Self.provisioning()
        default: return .check(.invalidField(byte: 2))
        }
        let data = [0x00, page] + BigEndian.bytes(UInt64(body.count), 2) + body
        return .good(data.truncated(to: allocation))
    }

    static func standard() -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 66)
        data[0] = 0x00  // connected direct-access block device
        data[2] = 0x06  // SPC-4
        data[3] = 0x12  // HiSup, response data format 2
        data[5] = 0x08  // 3PC: third-party copy (EXTENDED COPY) supported
        data[4] = UInt8(data.count - 5)
        data[7] = 0x02  // CmdQue
        data.replaceSubrange(8..<16, with: Array(Self.vendor.utf8))
        data.replaceSubrange(16..<32, with: Array(Self.product.utf8))
        data.replaceSubrange(32..<36, with: Array(Self.revision.utf8))
        // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
        let versions: [UInt16] = [0x00a0, 0x0960, 0x0460, 0x04c0]
        for (index, version) in versions.enumerated() {
            data[58 + 2 * index] = UInt8(version >> 8)
            data[59 + 2 * index] = UInt8(truncatingIfNeeded: version)
        }
        return data
    }

    static func serial(_ unit: LogicalUnit) -> String {
        "STRATA" + String(unit.handle.id, radix: 16, uppercase: true).leftPadded(to: 16)
    }

    /// Designators (SPC-4 §7.8.6): an NAA, an EUI-64 and a T10 vendor ID for the logical unit,
    /// and the target's iSCSI name. EXTENDED COPY's target descriptors name units by the first
    /// two (`Designators`).
    static func identification(_ unit: LogicalUnit) -> [UInt8] {
        var out: [UInt8] = []
        // NAA 6h, binary, associated with the logical unit.
        let naa = Designators.naa(id: unit.handle.id, pool: unit.pool)
        out += [0x01, 0x03, 0x00, UInt8(naa.count)] + naa
        // EUI-64, binary, associated with the logical unit.
        let eui = Designators.eui64(id: unit.handle.id)
        out += [0x01, 0x02, 0x00, UInt8(eui.count)] + eui
        // T10 vendor ID, ASCII.
        let t10 = Array((Self.vendor + Self.serial(unit)).utf8)
        out += [0x02, 0x01, 0x00, UInt8(t10.count)] + t10
        // SCSI name string of the target device, UTF-8, iSCSI (PIV).
        var name = Array(TargetNames.targetName(for: unit.handle.name).utf8) + [0]
        while name.count % 4 != 0 { name.append(0) }
        out += [0x53, 0xa8, 0x00, UInt8(min(name.count, 252))] + name.prefix(252)
        return out
    }

    static func blockLimits(_ unit: LogicalUnit) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 60)
        page[0] = 0x00  // WSNZ 0: WRITE SAME with 0 blocks writes to the end of the medium
        page[1] = UInt8(LogicalUnit.maxCompareAndWriteBlocks)
        // One chunk, a whole number of physical blocks (a chunk is at least 4 KiB).
        let physical = unit.settings.logicalPerPhysical
        let granularity = max(physical, unit.pool.chunkSize >> LogicalUnit.blockShift)
        precondition(granularity % physical == 0, "a chunk of \(unit.pool.chunkSize) bytes is not whole physical blocks")
        BigEndian.put(physical, 2, into: &page, at: 2)  // optimal transfer length granularity: a physical block
        BigEndian.put(LogicalUnit.maxTransferBlocks, 4, into: &page, at: 4)
        BigEndian.put(granularity, 4, into: &page, at: 8)  // optimal transfer length: one chunk
        BigEndian.put(LogicalUnit.maxTransferBlocks, 4, into: &page, at: 12)  // maximum prefetch length
        BigEndian.put(LogicalUnit.maxUnmapBlocks, 4, into: &page, at: 16)
        BigEndian.put(LogicalUnit.maxUnmapDescriptors, 4, into: &page, at: 20)
        BigEndian.put(granularity, 4, into: &page, at: 24)  // optimal unmap granularity
        BigEndian.put(0x8000_0000, 4, into: &page, at: 28)  // UGAVALID, alignment 0
        BigEndian.put(LogicalUnit.maxWriteSameBlocks, 8, into: &page, at: 32)
        // Atomic writes: any alignment and granularity, no atomic boundaries (SBC-4 §6.6.4).
        BigEndian.put(LogicalUnit.maxAtomicBlocks, 4, into: &page, at: 40)
        return page
    }

    /// Block device characteristics (SBC-4 §6.6.2): non-rotating medium; WABEREQ 01b, reads
    /// after a SANITIZE BLOCK ERASE succeed (the blocks read as zeros); WACEREQ 00b, there is no
    /// CRYPTOGRAPHIC ERASE.
    static func characteristics() -> [UInt8] {
        [0x00, 0x01, 0x00, 0x40] + [UInt8](repeating: 0, count: 56)
    }

    /// Logical block provisioning (SBC-4 §6.6.6): UNMAP and WRITE SAME(10/16) with UNMAP
    /// supported, unmapped blocks read zeros, thin provisioned.
    static func provisioning() -> [UInt8] {
        [0x00, 0xe0 | 0x04, 0x02, 0x00]
    }
}

extension String {
    func leftPadded(to length: Int) -> String {
        self.count >= length ? self : String(repeating: "0", count: length - self.count) + self
    }
}
