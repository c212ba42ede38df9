// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): every answer is made from `CommandTable`,
// the same entries the logical unit dispatches by, so what the target reports and what it runs
// cannot disagree. Option 0 lists every entry (opcode, service action, CDB length); options 1–3
// return one entry's CDB usage map, or "not supported".

/// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35) from the command table.
enum SupportedOperations {
    static func respond(_ cdb: CDB) throws(SCSIError) -> SCSIResult {
        let timeouts = cdb[2] & 0x80 != 0
        let options = cdb[2] & 0x07
        let opcode = cdb[3]
        let serviceAction = UInt8(truncatingIfNeeded: cdb.uint16(4))
        let allocation = cdb.uint32(6)
        let timeoutDescriptor: [UInt8] = [0, 10, 0, 0] + BigEndian.bytes(30, 4) + BigEndian.bytes(30, 4)
        switch options {
        case 0:
            var list: [UInt8] = []
            for spec in CommandTable.all {
                list += [spec.opcode.rawValue, 0] + BigEndian.bytes(UInt64(spec.serviceAction ?? 0), 2)
                list += [0, (spec.serviceAction != nil ? 0x01 : 0) | (timeouts ? 0x02 : 0)]
                list += BigEndian.bytes(UInt64(spec.cdbLength), 2)
                if timeouts { list += timeoutDescriptor }
            }
            return .good((BigEndian.bytes(UInt64(list.count), 4) + list).truncated(to: allocation))
        case 1, 2, 3:
            let hasServiceActions = CommandTable.serviceActionOpcodes.contains(opcode)
            if options == 1 && hasServiceActions { return .check(.invalidField(byte: 2)) }
            if options == 2 && !hasServiceActions { return .check(.invalidField(byte: 2)) }
            let spec = CommandTable.all.first {
                $0.opcode.rawValue == opcode && (!hasServiceActions || $0.serviceAction == serviceAction)
            }
            var data: [UInt8]
            if let spec {
                let usage = spec.usageMap
                data = [0, (timeouts ? 0x80 : 0) | 0x03] + BigEndian.bytes(UInt64(usage.count), 2) + usage
                if timeouts { data += timeoutDescriptor }
            } else {
                data = [0, 0x01, 0, 0]  // not supported
            }
            return .good(data.truncated(to: allocation))
        default:
            return .check(.invalidField(byte: 2))
        }
    }
}
