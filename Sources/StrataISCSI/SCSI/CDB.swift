// Reading command descriptor blocks: big-endian fields by byte offset, and the common shapes
// of the block commands (LBA and transfer length at the offsets each CDB size puts them).

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

    /// LBA and number of blocks of READ, WRITE, VERIFY and WRITE AND VERIFY (6, 10, 12 and 16), ORWRITE,
    /// WRITE SAME (10, 16), SYNCHRONIZE CACHE and PRE-FETCH (10, 16).
    public var extent: (lba: UInt64, blocks: UInt64) {
        switch self.opcode {
        case 0x08, 0x0a:
            let blocks = UInt64(self.bytes[4])
            return (UInt64(self.bytes[1] & 0x1f) << 16 | self.uint16(2), blocks == 0 ? 256 : blocks)
        case 0xa8, 0xaa, 0xae, 0xaf:
            return (self.uint32(2), self.uint32(6))
        case 0x88, 0x8a, 0x8b, 0x8e, 0x8f, 0x93, 0x91, 0x90:
            return (self.uint64(2), self.uint32(10))
        case 0x89:
            return (self.uint64(2), UInt64(self.bytes[13]))
        default:
            return (self.uint32(2), self.uint16(7))
        }
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
