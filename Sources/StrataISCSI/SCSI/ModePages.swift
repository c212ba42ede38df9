// MODE SENSE and MODE SELECT (SPC-4 §6.11–6.14) with the pages a block device reports: 08h
// caching (WCE can be cleared, which makes every write durable before it completes), 0Ah
// control (SWP can be set, which write-protects the unit until it is cleared), 1Ch
// informational exceptions, and 3Fh for all of them. The header's device-specific byte carries
// WP for read-only targets (snapshots, or SWP set) and DPOFUA.

import StrataCore

enum ModePages {
    static let caching: UInt8 = 0x08
    static let control: UInt8 = 0x0a
    static let informationalExceptions: UInt8 = 0x1c
    static let all: UInt8 = 0x3f
    /// Control page byte 4: SWP, software write protect.
    static let softwareWriteProtectBit: UInt8 = 0x08

    /// A page's current, changeable or default values (page control 0, 1, 2).
    static func page(_ code: UInt8, control pageControl: UInt8, unit: LogicalUnit) -> [UInt8]? {
        switch code {
        case Self.caching:
            var page = [UInt8](repeating: 0, count: 20)
            page[0] = Self.caching
            page[1] = 18
            switch pageControl {
            case 1: page[2] = 0x04  // WCE changeable
            case 2: page[2] = 0x04
            default: page[2] = unit.writeCache.load(ordering: .relaxed) ? 0x04 : 0
            }
            return page
        case Self.control:
            var page = [UInt8](repeating: 0, count: 12)
            page[0] = Self.control
            page[1] = 10
            if pageControl != 1 {
                page[3] = 0x10  // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
                BigEndian.put(0xffff, 2, into: &page, at: 8)  // busy timeout: unlimited
            }
            switch pageControl {
            case 1: page[4] = Self.softwareWriteProtectBit  // SWP changeable
            case 2: break
            default: page[4] = unit.softwareWriteProtect.load(ordering: .relaxed) ? Self.softwareWriteProtectBit : 0
            }
            return page
        case Self.informationalExceptions:
            var page = [UInt8](repeating: 0, count: 12)
            page[0] = Self.informationalExceptions
            page[1] = 10
            return page
        default:
            return nil
        }
    }

    static func sense(_ cdb: CDB, unit: LogicalUnit) throws(SCSIError) -> SCSIResult {
        let ten = cdb.opcode == SCSIOpcode.modeSense10.rawValue
        let disableBlockDescriptors = cdb[1] & 0x08 != 0
        let longLBA = ten && cdb[1] & 0x10 != 0
        let pageControl = cdb[2] >> 6
        let code = cdb[2] & 0x3f
        let subpage = cdb[3]
        let allocation = ten ? cdb.uint16(7) : UInt64(cdb[4])
        if pageControl == 3 { return .check(.savingParametersNotSupported) }
        guard subpage == 0 || (subpage == 0xff && code == Self.all) else { return .check(.invalidField(byte: 3)) }
        var pages: [UInt8] = []
        if code == Self.all {
            for each in [Self.caching, Self.control, Self.informationalExceptions] {
                pages += Self.page(each, control: pageControl, unit: unit) ?? []
            }
        } else {
            guard let page = Self.page(code, control: pageControl, unit: unit) else {
                return .check(.invalidField(byte: 2, bit: 5))
            }
            pages = page
        }
        let capacity = try unit.engine { () throws(StrataError) in try unit.capacityBlocks() }
        var descriptor: [UInt8] = []
        if !disableBlockDescriptors {
            if longLBA {
                descriptor = BigEndian.bytes(capacity, 8) + [0, 0, 0, 0] + BigEndian.bytes(LogicalUnit.blockSize, 4)
            } else {
                descriptor = BigEndian.bytes(min(capacity, 0xffff_ffff), 4) + [0] + BigEndian.bytes(LogicalUnit.blockSize, 3)
            }
        }
        let deviceSpecific: UInt8 = (unit.readOnly ? 0x80 : 0) | 0x10  // WP, DPOFUA
        var data: [UInt8]
        if ten {
            let length = 6 + descriptor.count + pages.count
            data = BigEndian.bytes(UInt64(length), 2) + [0, deviceSpecific, longLBA ? 1 : 0, 0]
            data += BigEndian.bytes(UInt64(descriptor.count), 2)
        } else {
            let length = 3 + descriptor.count + pages.count
            data = [UInt8(min(length, 255)), 0, deviceSpecific, UInt8(descriptor.count)]
        }
        data += descriptor + pages
        return .good(data.truncated(to: allocation))
    }

    /// MODE SELECT: the caching page's WCE and the control page's SWP are the changeable fields;
    /// anything else must equal the current value.
    static func select(_ cdb: CDB, data: [UInt8], unit: LogicalUnit) throws(SCSIError) -> SCSIResult {
        let ten = cdb.opcode == SCSIOpcode.modeSelect10.rawValue
        if cdb[1] & 0x01 != 0 { return .check(.invalidField(byte: 1, bit: 0)) }  // SP: nothing is saved
        guard !data.isEmpty else { return .good() }
        let headerLength = ten ? 8 : 4
        guard data.count >= headerLength else { return .check(.parameterListLengthError) }
        let descriptorLength = ten ? Int(BigEndian.read(data, 6, 2)) : Int(data[3])
        var offset = headerLength + descriptorLength
        guard offset <= data.count else { return .check(.parameterListLengthError) }
        var newCache: Bool?
        var newWriteProtect: Bool?
        while offset + 2 <= data.count {
            let code = data[offset] & 0x3f
            let length = Int(data[offset + 1])
            guard offset + 2 + length <= data.count else { return .check(.parameterListLengthError) }
            let supplied = Array(data[offset..<offset + 2 + length])
            guard let current = Self.page(code, control: 0, unit: unit), current.count == supplied.count else {
                return .check(.invalidParameter(byte: offset))
            }
            let changeable = Self.page(code, control: 1, unit: unit) ?? []
            for index in 2..<current.count where (supplied[index] ^ current[index]) & ~changeable[index] != 0 {
                return .check(.invalidParameter(byte: offset + index))
            }
            if code == Self.caching { newCache = supplied[2] & 0x04 != 0 }
            if code == Self.control { newWriteProtect = supplied[4] & Self.softwareWriteProtectBit != 0 }
            offset += 2 + length
        }
        if let newCache { unit.writeCache.store(newCache, ordering: .relaxed) }
        if let newWriteProtect { unit.softwareWriteProtect.store(newWriteProtect, ordering: .relaxed) }
        return .good()
    }
}
