// The commands the logical unit implements, with their CDB sizes, how they touch the medium
// (for reservations and write protection) and their CDB usage maps. REPORT SUPPORTED
// OPERATION CODES answers from this table and the logical unit dispatches by it, so the two
// cannot disagree.

struct CommandSpec: Sendable {
    let opcode: UInt8
    let serviceAction: UInt8?
    let name: String
    let cdbLength: Int
    let access: AccessKind
    /// Changes the medium: refused on a read-only target.
    let writes: Bool

    /// SPC-4 §6.35.3: bit set = the field is used; byte 0 is the opcode.
    var usageMap: [UInt8] {
        var map = [UInt8](repeating: 0xff, count: self.cdbLength)
        map[0] = self.opcode
        if let serviceAction = self.serviceAction { map[1] = serviceAction | 0xe0 }
        map[self.cdbLength - 1] = 0x07  // CONTROL: NACA and link bits
        return map
    }
}

enum CommandTable {
    static let all: [CommandSpec] = [
        CommandSpec(opcode: 0x00, serviceAction: nil, name: "TEST UNIT READY", cdbLength: 6, access: .always, writes: false),
        CommandSpec(opcode: 0x03, serviceAction: nil, name: "REQUEST SENSE", cdbLength: 6, access: .always, writes: false),
        CommandSpec(opcode: 0x08, serviceAction: nil, name: "READ(6)", cdbLength: 6, access: .read, writes: false),
        CommandSpec(opcode: 0x0a, serviceAction: nil, name: "WRITE(6)", cdbLength: 6, access: .write, writes: true),
        CommandSpec(opcode: 0x12, serviceAction: nil, name: "INQUIRY", cdbLength: 6, access: .always, writes: false),
        CommandSpec(opcode: 0x15, serviceAction: nil, name: "MODE SELECT(6)", cdbLength: 6, access: .write, writes: false),
        CommandSpec(opcode: 0x16, serviceAction: nil, name: "RESERVE(6)", cdbLength: 6, access: .always, writes: false),
        CommandSpec(opcode: 0x17, serviceAction: nil, name: "RELEASE(6)", cdbLength: 6, access: .always, writes: false),
        CommandSpec(opcode: 0x1a, serviceAction: nil, name: "MODE SENSE(6)", cdbLength: 6, access: .read, writes: false),
        CommandSpec(opcode: 0x1b, serviceAction: nil, name: "START STOP UNIT", cdbLength: 6, access: .write, writes: false),
        CommandSpec(
            opcode: 0x1e, serviceAction: nil, name: "PREVENT ALLOW MEDIUM REMOVAL", cdbLength: 6, access: .read, writes: false),
        CommandSpec(opcode: 0x25, serviceAction: nil, name: "READ CAPACITY(10)", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x28, serviceAction: nil, name: "READ(10)", cdbLength: 10, access: .read, writes: false),
        CommandSpec(opcode: 0x2a, serviceAction: nil, name: "WRITE(10)", cdbLength: 10, access: .write, writes: true),
        CommandSpec(opcode: 0x2e, serviceAction: nil, name: "WRITE AND VERIFY(10)", cdbLength: 10, access: .write, writes: true),
        CommandSpec(opcode: 0x2f, serviceAction: nil, name: "VERIFY(10)", cdbLength: 10, access: .read, writes: false),
        CommandSpec(opcode: 0x34, serviceAction: nil, name: "PRE-FETCH(10)", cdbLength: 10, access: .read, writes: false),
        CommandSpec(opcode: 0x35, serviceAction: nil, name: "SYNCHRONIZE CACHE(10)", cdbLength: 10, access: .write, writes: false),
        CommandSpec(opcode: 0x41, serviceAction: nil, name: "WRITE SAME(10)", cdbLength: 10, access: .write, writes: true),
        CommandSpec(opcode: 0x42, serviceAction: nil, name: "UNMAP", cdbLength: 10, access: .write, writes: true),
        CommandSpec(opcode: 0x55, serviceAction: nil, name: "MODE SELECT(10)", cdbLength: 10, access: .write, writes: false),
        CommandSpec(opcode: 0x5a, serviceAction: nil, name: "MODE SENSE(10)", cdbLength: 10, access: .read, writes: false),
        CommandSpec(opcode: 0x5e, serviceAction: 0x00, name: "PERSISTENT RESERVE IN", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5e, serviceAction: 0x01, name: "PERSISTENT RESERVE IN", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5e, serviceAction: 0x02, name: "PERSISTENT RESERVE IN", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5e, serviceAction: 0x03, name: "PERSISTENT RESERVE IN", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x00, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x01, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x02, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x03, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x04, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x05, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x5f, serviceAction: 0x06, name: "PERSISTENT RESERVE OUT", cdbLength: 10, access: .always, writes: false),
        CommandSpec(opcode: 0x88, serviceAction: nil, name: "READ(16)", cdbLength: 16, access: .read, writes: false),
        CommandSpec(opcode: 0x89, serviceAction: nil, name: "COMPARE AND WRITE", cdbLength: 16, access: .write, writes: true),
        CommandSpec(opcode: 0x8a, serviceAction: nil, name: "WRITE(16)", cdbLength: 16, access: .write, writes: true),
        CommandSpec(opcode: 0x8b, serviceAction: nil, name: "ORWRITE(16)", cdbLength: 16, access: .write, writes: true),
        CommandSpec(opcode: 0x8e, serviceAction: nil, name: "WRITE AND VERIFY(16)", cdbLength: 16, access: .write, writes: true),
        CommandSpec(opcode: 0x8f, serviceAction: nil, name: "VERIFY(16)", cdbLength: 16, access: .read, writes: false),
        CommandSpec(opcode: 0x90, serviceAction: nil, name: "PRE-FETCH(16)", cdbLength: 16, access: .read, writes: false),
        CommandSpec(opcode: 0x91, serviceAction: nil, name: "SYNCHRONIZE CACHE(16)", cdbLength: 16, access: .write, writes: false),
        CommandSpec(opcode: 0x93, serviceAction: nil, name: "WRITE SAME(16)", cdbLength: 16, access: .write, writes: true),
        CommandSpec(opcode: 0x9e, serviceAction: 0x10, name: "READ CAPACITY(16)", cdbLength: 16, access: .always, writes: false),
        CommandSpec(opcode: 0x9e, serviceAction: 0x12, name: "GET LBA STATUS", cdbLength: 16, access: .read, writes: false),
        CommandSpec(opcode: 0xa0, serviceAction: nil, name: "REPORT LUNS", cdbLength: 12, access: .always, writes: false),
        CommandSpec(
            opcode: 0xa3, serviceAction: 0x0c, name: "REPORT SUPPORTED OPERATION CODES", cdbLength: 12, access: .always,
            writes: false),
        CommandSpec(
            opcode: 0xa3, serviceAction: 0x0d, name: "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", cdbLength: 12,
            access: .always, writes: false),
        CommandSpec(opcode: 0xa8, serviceAction: nil, name: "READ(12)", cdbLength: 12, access: .read, writes: false),
        CommandSpec(opcode: 0xaa, serviceAction: nil, name: "WRITE(12)", cdbLength: 12, access: .write, writes: true),
        CommandSpec(opcode: 0xae, serviceAction: nil, name: "WRITE AND VERIFY(12)", cdbLength: 12, access: .write, writes: true),
        CommandSpec(opcode: 0xaf, serviceAction: nil, name: "VERIFY(12)", cdbLength: 12, access: .read, writes: false),
    ]

    /// Opcodes whose commands are told apart by a service action.
    static let serviceActionOpcodes: Set<UInt8> = Set(Self.all.filter { $0.serviceAction != nil }.map(\.opcode))

    /// By opcode << 8 | service action (0 for opcodes without service actions).
    private static let byKey: [UInt16: CommandSpec] = Dictionary(
        uniqueKeysWithValues: Self.all.map { (UInt16($0.opcode) << 8 | UInt16($0.serviceAction ?? 0), $0) })

    static func spec(for cdb: CDB) -> CommandSpec? {
        let serviceAction: UInt8 = Self.serviceActionOpcodes.contains(cdb.opcode) ? cdb.serviceAction : 0
        return Self.byKey[UInt16(cdb.opcode) << 8 | UInt16(serviceAction)]
    }
}
