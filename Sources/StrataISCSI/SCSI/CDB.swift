// Reading command descriptor blocks: big-endian fields by byte offset, and the LBA and transfer
// length of the block commands where their `CommandTable` entries say they sit.

/// A CDB, at least 16 bytes (shorter CDBs are padded with zeros by the transport).
public struct CDB: Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes.count >= 16 ? bytes : bytes + [UInt8](repeating: 0, count: 16 - bytes.count)
    }

    public var opcode: UInt8 { self.bytes[0] }
    /// The service action of the opcodes that carry one (byte 1, low 5 bits).
    public var serviceAction: UInt8 { self.bytes[1] & 0x1f }

    public subscript(index: Int) -> UInt8 { self.bytes[index] }

    public func uint16(_ offset: Int) -> UInt64 { self.value(offset, 2) }
    public func uint24(_ offset: Int) -> UInt64 { self.value(offset, 3) }
    public func uint32(_ offset: Int) -> UInt64 { self.value(offset, 4) }
    public func uint64(_ offset: Int) -> UInt64 { self.value(offset, 8) }

    private func value(_ offset: Int, _ count: Int) -> UInt64 {
        self.bytes[offset..<offset + count].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// LBA and number of blocks of a block command, at the offsets its entry in `CommandTable`
    /// gives; other CDBs are read as the 10-byte layout.
    public var extent: (lba: UInt64, blocks: UInt64) {
        (CommandTable.spec(opcode: self.opcode)?.extent ?? BlockExtent(.cdb10)).read(self)
    }

    /// FUA (byte 1 bit 3) of the CDBs of 10 bytes and more; 6-byte CDBs have no such bit.
    public var forceUnitAccess: Bool {
        SCSIOpcode.cdbLength(of: self.opcode) > 6 && self.bytes[1] & 0x08 != 0
    }
}

/// Big-endian encoders for building parameter data.
enum BigEndian {
    static func bytes(_ value: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * (count - 1 - $0))) }
    }

    static func put(_ value: UInt64, _ count: Int, into buffer: inout [UInt8], at offset: Int) {
        for index in 0..<count { buffer[offset + index] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (count - 1 - index))) }
    }

    static func read(_ buffer: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        buffer[offset..<offset + count].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

extension Array where Element == UInt8 {
    /// The first `length` bytes (an allocation length cuts data short, SPC-4 §4.2.5.6).
    func truncated(to length: UInt64) -> [UInt8] {
        length >= UInt64(self.count) ? self : Array(self[0..<Int(length)])
    }
}
