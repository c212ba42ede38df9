// The one table of the SCSI commands the logical unit implements. An entry says everything the
// target needs to know about its command, so no other place lists opcodes:
// - its CDB size (from the opcode's group code) and, for the block commands, where the LBA and
//   the transfer length sit, which limit the length has, whether 0 blocks means "to the end of
//   the medium", and whether byte 1 carries a protection field that must be zero (SBC-4 §4.22);
// - how it touches the medium: its access kind for reservations, and whether it writes
//   (refused on a read-only target);
// - how many bytes of Data-Out it takes, and whether a buffer of another size is refused;
// - whether the connection may try it on the event loop first, without a thread hop (a small
//   READ the engine can serve without waiting);
// - its CDB usage map, which REPORT SUPPORTED OPERATION CODES returns (SPC-4 §6.35.3);
// - its handler, which `LogicalUnit.execute` calls.
// Invariant: one entry per (opcode, service action); an opcode with service actions has an
// entry for each one it implements and no entry without one.

/// Where a block command keeps its LBA and transfer length, and how they are checked.
struct BlockExtent: Sendable {
    enum Layout: Sendable {
        /// READ(6)/WRITE(6): a 21-bit LBA in bytes 1–3, blocks in byte 4 (0 means 256).
        case cdb6
        /// LBA in bytes 2–5, blocks in bytes 7–8.
        case cdb10
        /// LBA in bytes 2–5, blocks in bytes 6–9.
        case cdb12
        /// LBA in bytes 2–9, blocks in bytes 10–13.
        case cdb16
        /// COMPARE AND WRITE: LBA in bytes 2–9, blocks in byte 13.
        case compareAndWrite
        /// WRITE ATOMIC(16): LBA in bytes 2–9, blocks in bytes 12–13.
        case writeAtomic16
    }

    /// Which maximum the number of blocks is held to.
    enum Limit: Sendable {
        /// MAXIMUM TRANSFER LENGTH (`LogicalUnit.maxTransferBlocks`).
        case transfer
        /// MAXIMUM WRITE SAME LENGTH.
        case writeSame
        /// MAXIMUM COMPARE AND WRITE LENGTH.
        case compareAndWrite
        /// MAXIMUM ATOMIC TRANSFER LENGTH.
        case atomic
        /// No transfer: SYNCHRONIZE CACHE, PRE-FETCH and VERIFY only name a range.
        case none
    }

    let layout: Layout
    let limit: Limit
    /// RDPROTECT / WRPROTECT / VRPROTECT in byte 1, bits 7–5: this target has no protection
    /// information, so anything but zero is refused.
    let protectionField: Bool
    /// 0 blocks means "to the end of the medium" (SYNCHRONIZE CACHE, PRE-FETCH, WRITE SAME with WSNZ 0).
    let zeroMeansToEnd: Bool

    init(_ layout: Layout, limit: Limit = .transfer, protectionField: Bool = true, zeroMeansToEnd: Bool = false) {
        self.layout = layout
        self.limit = limit
        self.protectionField = protectionField
        self.zeroMeansToEnd = zeroMeansToEnd
    }

    /// The CDB byte where the transfer length starts (the field pointer of a length refused).
    var lengthByte: Int {
        switch self.layout {
        case .cdb6: return 4
        case .cdb10: return 7
        case .cdb12: return 6
        case .cdb16: return 10
        case .compareAndWrite: return 13
        case .writeAtomic16: return 12
        }
    }

    func read(_ cdb: CDB) -> (lba: UInt64, blocks: UInt64) {
        switch self.layout {
        case .cdb6:
            let blocks = UInt64(cdb[4])
            return (UInt64(cdb[1] & 0x1f) << 16 | cdb.uint16(2), blocks == 0 ? 256 : blocks)
        case .cdb10: return (cdb.uint32(2), cdb.uint16(7))
        case .cdb12: return (cdb.uint32(2), cdb.uint32(6))
        case .cdb16: return (cdb.uint64(2), cdb.uint32(10))
        case .compareAndWrite: return (cdb.uint64(2), UInt64(cdb[13]))
        case .writeAtomic16: return (cdb.uint64(2), cdb.uint16(12))
        }
    }
}

/// How many bytes of Data-Out a command takes, before the initiator's Expected Data Transfer
/// Length cuts it short.
enum DataOutRule: Sendable {
    case none
    /// The blocks the CDB addresses.
    case blocks
    /// VERIFY: BYTCHK 01b sends the blocks, 11b one block, 00b nothing.
    case verify
    /// WRITE SAME: one block, or none with NDOB (WRITE SAME(16) byte 1 bit 0).
    case writeSame
    /// COMPARE AND WRITE: the blocks to compare, then the blocks to write.
    case compareAndWrite
    /// A parameter list whose length is the CDB field of `size` bytes at `offset`.
    case parameterList(offset: Int, size: Int)

    func length(_ cdb: CDB) -> Int {
        let blockBytes = Int(cdb.extent.blocks << LogicalUnit.blockShift)
        switch self {
        case .none: return 0
        case .blocks: return blockBytes
        case .verify:
            switch (cdb[1] >> 1) & 0x03 {
            case 1: return blockBytes
            case 3: return cdb.extent.blocks == 0 ? 0 : Int(LogicalUnit.blockSize)
            default: return 0
            }
        case .writeSame:
            return cdb.opcode == SCSIOpcode.writeSame16.rawValue && cdb[1] & 0x01 != 0 ? 0 : Int(LogicalUnit.blockSize)
        case .compareAndWrite: return blockBytes * 2
        case .parameterList(let offset, let size):
            return Int((0..<size).reduce(UInt64(0)) { $0 << 8 | UInt64(cdb[offset + $1]) })
        }
    }
}

/// Whether a command may try the event loop first. A small READ does: when the engine can serve
/// it without waiting (`LogicalUnit.executeWithoutWaiting`), skipping the two thread hops halves
/// its latency. Everything else (writes, which nothing proves cannot wait; SYNCHRONIZE CACHE,
/// large transfers, UNMAP, ...) goes to the thread pool.
enum InlineRule: Sendable {
    case never
    /// A read of at most `CommandTable.inlineBytesMax`.
    case read
}

/// One command of the table.
struct CommandSpec: Sendable {
    /// Runs the command: the unit, the CDB, the Data-Out bytes and the I_T nexus.
    typealias Handler = @Sendable (LogicalUnit, CDB, [UInt8], String) throws(SCSIError) -> SCSIResult

    let opcode: SCSIOpcode
    let serviceAction: UInt8?
    let name: String
    let access: AccessKind
    /// Ends in a waiting unit attention (SPC-4 §5.14): every command that touches the medium,
    /// and TEST UNIT READY, with which initiators collect them.
    let reportsAttention: Bool
    /// Changes the medium: refused on a read-only target.
    let writes: Bool
    let dataOut: DataOutRule
    /// The CDB byte named when a Data-Out buffer of another size than the CDB asks for is
    /// refused (COMPARE AND WRITE and WRITE SAME cannot act on part of their data); nil when
    /// a shorter buffer is taken as it is.
    let exactDataOutField: Int?
    let extent: BlockExtent?
    let inline: InlineRule
    /// SPC-4 §6.35.3: a bit set for each CDB bit the command looks at; byte 0 is the opcode.
    /// Every bit of the CDB unless the entry gives its own map.
    let usageMap: [UInt8]
    /// The operation the command starts goes on when the command is aborted, by a task
    /// management function or the loss of its connection (SANITIZE: `Sanitize` says why). Task
    /// management answers without waiting for it; its result is dropped when it returns.
    let outlivesAbort: Bool
    let handler: Handler

    init(
        _ opcode: SCSIOpcode, serviceAction: UInt8? = nil, _ name: String, access: AccessKind, writes: Bool = false,
        dataOut: DataOutRule = .none, exactDataOutField: Int? = nil, extent: BlockExtent? = nil,
        inline: InlineRule = .never, usageMap: [UInt8]? = nil, outlivesAbort: Bool = false,
        handler: @escaping Handler
    ) {
        self.opcode = opcode
        self.serviceAction = serviceAction
        self.name = name
        self.access = access
        self.reportsAttention = access != .always || opcode == .testUnitReady
        self.writes = writes
        self.dataOut = dataOut
        self.exactDataOutField = exactDataOutField
        self.extent = extent
        self.inline = inline
        self.outlivesAbort = outlivesAbort
        self.handler = handler
        let length = SCSIOpcode.cdbLength(of: opcode.rawValue)
        var map = [UInt8](repeating: 0xff, count: length)
        map[0] = opcode.rawValue
        if let serviceAction { map[1] = serviceAction | 0xe0 }
        map[length - 1] = 0x07  // CONTROL: NACA and link bits
        if let usageMap { precondition(usageMap.count == length, "\(name): usage map is not \(length) bytes") }
        self.usageMap = usageMap ?? map
    }

    var cdbLength: Int { self.usageMap.count }

    /// Whether this command, with `expectedLength` bytes of transfer, may try the event loop.
    func runsInline(expectedLength: Int) -> Bool {
        expectedLength <= CommandTable.inlineBytesMax && self.inline == .read
    }

    /// Whether the connection may send it to the thread pool in one work item with other
    /// commands decoded in the same pass, run one after another on one thread: READ and WRITE,
    /// bounded transfers that wait for nothing but the disk. Every other command gets a work
    /// item of its own, so a long one (SANITIZE, EXTENDED COPY, a cache flush) delays no other.
    var batches: Bool { CommandTable.batchedOpcodes.contains(self.opcode) }
}

enum CommandTable {
    /// The commands that share work items (`CommandSpec.batches`).
    static let batchedOpcodes: Set<SCSIOpcode> = [
        .read6, .read10, .read12, .read16, .write6, .write10, .write12, .write16,
    ]

    /// The largest transfer a command may run inline with (`InlineRule`).
    static let inlineBytesMax = 128 << 10

    /// Every command, by opcode and then service action (the order REPORT SUPPORTED OPERATION
    /// CODES lists them in).
    static let all: [CommandSpec] =
        (Self.primary + Self.blockCommands + Self.serviceActionCommands + Self.sanitizeCommands).sorted {
        Self.key($0.opcode.rawValue, $0.serviceAction) < Self.key($1.opcode.rawValue, $1.serviceAction)
    }

    /// Commands that neither address blocks nor carry service actions.
    private static let primary: [CommandSpec] = [
        CommandSpec(.testUnitReady, "TEST UNIT READY", access: .always) { _, _, _, _ in .good() },
        CommandSpec(.requestSense, "REQUEST SENSE", access: .always) { unit, cdb, _, nexus in
            unit.requestSense(cdb, nexus: nexus)
        },
        CommandSpec(.inquiry, "INQUIRY", access: .always) { unit, cdb, _, _ throws(SCSIError) in
            try Inquiry.respond(cdb, unit: unit)
        },
        CommandSpec(.modeSelect6, "MODE SELECT(6)", access: .write, dataOut: .parameterList(offset: 4, size: 1)) {
            unit, cdb, data, _ throws(SCSIError) in try ModePages.select(cdb, data: data, unit: unit)
        },
        CommandSpec(.reserve6, "RESERVE(6)", access: .always) { unit, _, _, nexus in
            unit.reservations.reserveLegacy(nexus) ? .good() : .reservationConflict
        },
        CommandSpec(.release6, "RELEASE(6)", access: .always) { unit, _, _, nexus in
            unit.reservations.releaseLegacy(nexus)
            return .good()
        },
        CommandSpec(.modeSense6, "MODE SENSE(6)", access: .read) { unit, cdb, _, _ throws(SCSIError) in
            try ModePages.sense(cdb, unit: unit)
        },
        CommandSpec(.startStopUnit, "START STOP UNIT", access: .write) { _, _, _, _ in .good() },
        CommandSpec(.preventAllowMediumRemoval, "PREVENT ALLOW MEDIUM REMOVAL", access: .read) { _, _, _, _ in .good() },
        CommandSpec(.readCapacity10, "READ CAPACITY(10)", access: .always) { unit, cdb, _, _ throws(SCSIError) in
            try unit.readCapacity10(cdb)
        },
        CommandSpec(.unmap, "UNMAP", access: .write, writes: true, dataOut: .parameterList(offset: 7, size: 2)) {
            unit, cdb, data, _ throws(SCSIError) in try unit.unmap(cdb, data: data)
        },
        CommandSpec(.modeSelect10, "MODE SELECT(10)", access: .write, dataOut: .parameterList(offset: 7, size: 2)) {
            unit, cdb, data, _ throws(SCSIError) in try ModePages.select(cdb, data: data, unit: unit)
        },
        CommandSpec(.modeSense10, "MODE SENSE(10)", access: .read) { unit, cdb, _, _ throws(SCSIError) in
            try ModePages.sense(cdb, unit: unit)
        },
        // A thin volume has no media defects: an empty list in the format asked for.
        CommandSpec(.readDefectData10, "READ DEFECT DATA(10)", access: .read) { _, cdb, _, _ in
            .good([0, cdb[2] & 0x1f, 0, 0].truncated(to: cdb.uint16(7)))
        },
        CommandSpec(.readDefectData12, "READ DEFECT DATA(12)", access: .read) { _, cdb, _, _ in
            .good([0, cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0].truncated(to: cdb.uint32(6)))
        },
        CommandSpec(.reportLUNs, "REPORT LUNS", access: .always) { unit, cdb, _, _ throws(SCSIError) in
            try unit.reportLUNs(cdb)
        },
    ]

    /// Commands with an LBA and a number of blocks.
    private static let blockCommands: [CommandSpec] =
        Self.reads + Self.writes + Self.verifies + Self.rangeCommands

    private static let reads: [CommandSpec] = [
        (SCSIOpcode.read6, "READ(6)", BlockExtent.Layout.cdb6), (.read10, "READ(10)", .cdb10),
        (.read12, "READ(12)", .cdb12), (.read16, "READ(16)", .cdb16),
    ].map { opcode, name, layout in
        CommandSpec(
            opcode, name, access: .read, extent: BlockExtent(layout, protectionField: layout != .cdb6), inline: .read
        ) { unit, cdb, _, _ throws(SCSIError) in try unit.read(cdb) }
    }

    private static let writes: [CommandSpec] =
        [
            (SCSIOpcode.write6, "WRITE(6)", BlockExtent.Layout.cdb6),
            (.write10, "WRITE(10)", .cdb10), (.write12, "WRITE(12)", .cdb12),
            (.write16, "WRITE(16)", .cdb16), (.writeAndVerify10, "WRITE AND VERIFY(10)", .cdb10),
            (.writeAndVerify12, "WRITE AND VERIFY(12)", .cdb12),
            (.writeAndVerify16, "WRITE AND VERIFY(16)", .cdb16),
        ].map { opcode, name, layout in
            CommandSpec(
                opcode, name, access: .write, writes: true, dataOut: .blocks,
                extent: BlockExtent(layout, protectionField: layout != .cdb6)
            ) { unit, cdb, data, _ throws(SCSIError) in try unit.write(cdb, data: data) }
        } + [
            CommandSpec(
                .orWrite16, "ORWRITE(16)", access: .write, writes: true, dataOut: .blocks, extent: BlockExtent(.cdb16)
            ) { unit, cdb, data, _ throws(SCSIError) in try unit.orWrite(cdb, data: data) },
            CommandSpec(
                .compareAndWrite, "COMPARE AND WRITE", access: .write, writes: true, dataOut: .compareAndWrite,
                exactDataOutField: 13, extent: BlockExtent(.compareAndWrite, limit: .compareAndWrite)
            ) { unit, cdb, data, _ throws(SCSIError) in try unit.compareAndWrite(cdb, data: data) },
        ]
        + [
            // All or nothing, also across a crash (`Pool.writeAtomic`); a shorter buffer is refused.
            CommandSpec(
                .writeAtomic16, "WRITE ATOMIC(16)", access: .write, writes: true, dataOut: .blocks,
                exactDataOutField: 12, extent: BlockExtent(.writeAtomic16, limit: .atomic)
            ) { unit, cdb, data, _ throws(SCSIError) in try unit.writeAtomic(cdb, data: data) }
        ]
        + [(SCSIOpcode.writeSame10, "WRITE SAME(10)", BlockExtent.Layout.cdb10), (.writeSame16, "WRITE SAME(16)", .cdb16)]
        .map { opcode, name, layout in
            CommandSpec(
                opcode, name, access: .write, writes: true, dataOut: .writeSame, exactDataOutField: 1,
                extent: BlockExtent(layout, limit: .writeSame, zeroMeansToEnd: true)
            ) { unit, cdb, data, _ throws(SCSIError) in try unit.writeSame(cdb, data: data) }
        }

    private static let verifies: [CommandSpec] = [
        (SCSIOpcode.verify10, "VERIFY(10)", BlockExtent.Layout.cdb10), (.verify12, "VERIFY(12)", .cdb12),
        (.verify16, "VERIFY(16)", .cdb16),
    ].map { opcode, name, layout in
        CommandSpec(opcode, name, access: .read, dataOut: .verify, extent: BlockExtent(layout, limit: .none)) {
            unit, cdb, data, _ throws(SCSIError) in try unit.verify(cdb, data: data)
        }
    }

    /// PRE-FETCH (nothing to do: the engine reads on demand) and SYNCHRONIZE CACHE (a commit).
    private static let rangeCommands: [CommandSpec] = [
        (SCSIOpcode.preFetch10, "PRE-FETCH(10)", BlockExtent.Layout.cdb10, AccessKind.read),
        (.preFetch16, "PRE-FETCH(16)", .cdb16, .read),
        (.synchronizeCache10, "SYNCHRONIZE CACHE(10)", .cdb10, .write),
        (.synchronizeCache16, "SYNCHRONIZE CACHE(16)", .cdb16, .write),
    ].map { opcode, name, layout, access in
        let extent = BlockExtent(layout, limit: .none, protectionField: false, zeroMeansToEnd: true)
        if access == .read {
            return CommandSpec(opcode, name, access: access, extent: extent) { _, _, _, _ in .good() }
        }
        return CommandSpec(opcode, name, access: access, extent: extent) { unit, _, _, _ throws(SCSIError) in
            try unit.synchronizeCache()
        }
    }

    /// SANITIZE's service actions: OVERWRITE and BLOCK ERASE (`Sanitize` says why not the others).
    private static let sanitizeCommands: [CommandSpec] = [
        (Sanitize.overwrite, "SANITIZE(OVERWRITE)"), (Sanitize.blockErase, "SANITIZE(BLOCK ERASE)"),
    ].map { action, name in
        CommandSpec(
            .sanitize, serviceAction: action, name, access: .write, writes: true,
            dataOut: .parameterList(offset: 7, size: 2), usageMap: Sanitize.usageMap(serviceAction: action),
            outlivesAbort: true
        ) { unit, cdb, data, _ throws(SCSIError) in try Sanitize.execute(cdb, data: data, unit: unit) }
    }

    /// Commands told apart by a service action in byte 1.
    private static let serviceActionCommands: [CommandSpec] =
        (0x00...0x03).map { action in
            CommandSpec(.persistentReserveIn, serviceAction: action, "PERSISTENT RESERVE IN", access: .always) {
                unit, cdb, _, _ in unit.persistentReserveIn(cdb)
            }
        }
        + (0x00...0x06).map { action in
            CommandSpec(
                .persistentReserveOut, serviceAction: action, "PERSISTENT RESERVE OUT", access: .always,
                dataOut: .parameterList(offset: 5, size: 4)
            ) { unit, cdb, data, nexus in unit.persistentReserveOut(cdb, data: data, nexus: nexus) }
        } + [
            // Any unit may be the copy manager; the copy checks its source's and destination's
            // reservations and write protection itself.
            CommandSpec(
                .extendedCopy, serviceAction: 0x00, "EXTENDED COPY(LID1)", access: .read,
                dataOut: .parameterList(offset: 10, size: 4)
            ) { unit, cdb, data, nexus throws(SCSIError) in
                try ExtendedCopy.execute(cdb, data: data, unit: unit, nexus: nexus)
            },
        ]
        + [0x00, 0x03].map { action in
            CommandSpec(.receiveCopyResults, serviceAction: action, "RECEIVE COPY RESULTS", access: .always) {
                unit, cdb, _, nexus in ExtendedCopy.receiveResults(cdb, unit: unit, nexus: nexus)
            }
        } + [
            CommandSpec(.serviceActionIn16, serviceAction: 0x10, "READ CAPACITY(16)", access: .always) {
                unit, cdb, _, _ throws(SCSIError) in try unit.readCapacity16(cdb)
            },
            CommandSpec(.serviceActionIn16, serviceAction: 0x12, "GET LBA STATUS", access: .read) {
                unit, cdb, _, _ throws(SCSIError) in try unit.lbaStatus(cdb)
            },
            CommandSpec(.maintenanceIn, serviceAction: 0x0c, "REPORT SUPPORTED OPERATION CODES", access: .always) {
                _, cdb, _, _ throws(SCSIError) in try SupportedOperations.respond(cdb)
            },
            CommandSpec(
                .maintenanceIn, serviceAction: 0x0d, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", access: .always
            ) { _, cdb, _, _ in
                let length = cdb.uint32(6)
                guard length >= 4 else { return .check(.invalidField(byte: 6)) }
                return .good([0xca, 0x00, 0, 0].truncated(to: length))
            },
        ]

    /// Opcodes whose commands are told apart by a service action.
    static let serviceActionOpcodes: Set<UInt8> = Set(Self.all.filter { $0.serviceAction != nil }.map(\.opcode.rawValue))

    private static func key(_ opcode: UInt8, _ serviceAction: UInt8?) -> UInt16 {
        UInt16(opcode) << 8 | UInt16(serviceAction ?? 0)
    }

    /// By opcode << 8 | service action (0 for opcodes without service actions).
    private static let byKey: [UInt16: CommandSpec] = Dictionary(
        uniqueKeysWithValues: Self.all.map { (Self.key($0.opcode.rawValue, $0.serviceAction), $0) })

    /// The first entry of each opcode: what the opcode's own properties (its extent) come from.
    private static let byOpcode: [UInt8: CommandSpec] = Dictionary(
        Self.all.map { ($0.opcode.rawValue, $0) }, uniquingKeysWith: { first, _ in first })

    /// The entry for a CDB's opcode and (where the opcode has them) service action.
    static func spec(for cdb: CDB) -> CommandSpec? {
        let serviceAction: UInt8? = Self.serviceActionOpcodes.contains(cdb.opcode) ? cdb.serviceAction : nil
        return Self.byKey[Self.key(cdb.opcode, serviceAction)]
    }

    /// The entry of an opcode without looking at a service action (any of its entries).
    static func spec(opcode: UInt8) -> CommandSpec? { Self.byOpcode[opcode] }
}
