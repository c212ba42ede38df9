// The full feature phase of one iSCSI session (RFC 7143; MaxConnections=1, so one connection),
// as a value type: the connection handler feeds it decoded PDUs and command results, and it
// returns actions (PDUs to send, commands to execute, the connection to close). It holds:
// - the CmdSN window (§4.2.2.1): commands inside [ExpCmdSN, MaxCmdSN] run in CmdSN order,
//   ones ahead of ExpCmdSN wait, ones outside are ignored silently; immediate ones run at once;
// - write data: immediate data, unsolicited Data-Out up to FirstBurstLength, then R2Ts of at
//   most MaxBurstLength while the buffered total is under `bufferedBytesMax`
//   (`ISCSISession+Write.swift`);
// - Data-In, split at MaxRecvDataSegmentLength with F at each MaxBurstLength, status in the
//   final PDU when it is GOOD (`ISCSISession+Response.swift`);
// - task management (`ISCSISession+TaskManagement.swift`) and SendTargets (`+Text.swift`);
// - StatSN: every response but R2T and a non-final Data-In advances it.
// It does no I/O: it reads the logical unit only for `dataOutLength` (the precheck before data
// is solicited) and for reservation resets, and whether a command may run inline comes from
// its `CommandTable` entry.

import Logging
import StrataCore

/// Where SendTargets looks targets up.
public protocol SendTargetsDirectory: Sendable {
    /// Every pool object (VOLUME or VOLUME@SNAPSHOT) served as a target.
    func targetObjects() -> [String]
    /// The pool object a target name names, or nil when none does.
    /// - Throws: an engine error other than "not found".
    func object(forTargetName name: String) throws(StrataError) -> String?
}

/// A command whose data is in, for the connection to run on the logical unit.
public struct CommandExecution: Sendable {
    public let tag: UInt32
    public let unit: LogicalUnit
    public let cdb: CDB
    public let data: [UInt8]
    public let nexus: String
    /// `dataOutLength` checked it with nothing in between (a command that waited for no data).
    public let prechecked: Bool
    /// Its table entry lets it try the event loop first (`InlineRule`, `runWithoutWaiting`).
    public let inline: Bool
    /// Its table entry lets it share a work item with others of its pass (`CommandSpec.batches`).
    public let batches: Bool

    /// Runs the command on the logical unit; may block on disk I/O (a thread pool's work).
    public func run() -> SCSIResult {
        self.unit.execute(self.cdb, data: self.data, nexus: self.nexus, prechecked: self.prechecked)
    }

    /// Runs the command if the engine can serve it without waiting (an event loop's work); nil
    /// when it cannot, and `run` must run it on a thread pool.
    public func runWithoutWaiting() -> SCSIResult? {
        guard self.inline else { return nil }
        return self.unit.executeWithoutWaiting(self.cdb, nexus: self.nexus, prechecked: self.prechecked)
    }
}

public struct ISCSISession {
    public enum Action {
        /// Send this PDU; its data segment is `data` when given, else `pdu.data`.
        case send(PDU, data: ArraySlice<UInt8>?)
        /// Run this command, then report its result with `complete(_:result:)`.
        case execute(CommandExecution)
        /// Send what is queued, then close the connection.
        case close
    }

    /// Write data the session holds for commands still receiving it; past this, R2Ts wait.
    static let bufferedBytesMax = 64 << 20
    /// Text a request may gather across PDUs with the C bit.
    static let textBytesMax = 64 << 10

    public let parameters: SessionParameters
    public let tsih: UInt16
    /// The I_T nexus: initiator name and ISID (RFC 7143 §4.4.1), as `name,i,0x<ISID>`.
    public let nexus: String
    /// The logical unit of a Normal session; nil in a Discovery session.
    public let unit: LogicalUnit?
    /// Where SendTargets looks; the connection sets a `TargetList` it fetched off the event loop
    /// before it hands over each Text Request.
    public var directory: any SendTargetsDirectory
    /// `address:port` of the portal this connection came in on (for SendTargets).
    let portal: String
    var logger: Logger

    public internal(set) var statusSequence: UInt32
    public internal(set) var expectedCommand: UInt32
    /// Non-immediate commands that arrived ahead of ExpCmdSN, inside the window.
    var held: [UInt32: PDU] = [:]
    var commands: [UInt32: PendingCommand] = [:]
    /// Commands executing, and the bytes they may bring back (their EDTLs).
    public internal(set) var running = 0
    public internal(set) var runningBytes = 0
    /// Write data held for commands still receiving it.
    public internal(set) var bufferedBytes = 0
    /// Commands waiting for room to solicit their data.
    var waitingForR2T: [UInt32] = []
    var nextTransferTag: UInt32 = 1
    /// A SendTargets answer longer than one PDU, sent in pieces (Text with the C bit).
    var textRemainder: (tag: UInt32, bytes: [UInt8])?
    var textPending: [UInt8] = []
    /// Task management responses waiting for running commands to finish.
    var managementWaits: [Int: ManagementWait] = [:]
    var nextManagementWait = 0
    /// What the calls in progress have to say; handed out at their end.
    var outbox: [Action] = []

    public init(
        parameters: SessionParameters, tsih: UInt16, nexus: String, unit: LogicalUnit?,
        directory: any SendTargetsDirectory, portal: String, statusSequence: UInt32, expectedCommand: UInt32,
        logger: Logger
    ) {
        self.parameters = parameters
        self.tsih = tsih
        self.nexus = nexus
        self.unit = unit
        self.directory = directory
        self.portal = portal
        self.statusSequence = statusSequence
        self.expectedCommand = expectedCommand
        self.logger = logger
    }

    /// The last CmdSN the window takes.
    public var maxCommand: UInt32 { self.expectedCommand &+ TargetLimits.commandWindow &- 1 }

    /// Commands the session knows, running or still receiving data.
    public var commandCount: Int { self.commands.count }

    // MARK: Entry points

    /// Takes one PDU of the full feature phase.
    public mutating func receive(_ pdu: PDU) -> [Action] {
        self.handle(pdu)
        return self.drain()
    }

    /// Takes the result of a command `execute` asked for; answers it unless it was aborted.
    public mutating func complete(_ tag: UInt32, result: SCSIResult) -> [Action] {
        guard var command = self.commands.removeValue(forKey: tag) else {
            preconditionFailure("tag \(tag): completed but not pending")
        }
        precondition(command.running, "tag \(tag): completed but never executed")
        self.running -= 1
        self.runningBytes -= command.expectedLength
        self.bufferedBytes -= command.data.count
        if !command.aborted { self.respond(command, result: result) }
        for waiter in command.waiters { self.managementWaitEnded(waiter) }
        command.waiters = []
        self.serveWaitingR2T()
        return self.drain()
    }

    /// A Reject of `header` (framing errors the connection finds before a PDU is whole).
    public mutating func reject(header: [UInt8], reason: RejectReason) -> [Action] {
        self.reject(header, reason: reason)
        return self.drain()
    }

    /// The connection is gone: nothing running will be answered.
    public mutating func connectionLost() {
        for tag in self.commands.keys { self.commands[tag]?.aborted = true }
    }

    mutating func drain() -> [Action] {
        defer { self.outbox = [] }
        return self.outbox
    }

    // MARK: The CmdSN window

    private mutating func handle(_ pdu: PDU) {
        guard let opcode = pdu.opcode else {
            self.reject(pdu.header, reason: .commandNotSupported)
            return
        }
        switch opcode {
        case .dataOut:
            self.dataOut(pdu)
            return
        case .scsiCommand, .nopOut, .taskManagementRequest, .textRequest, .logoutRequest:
            break
        case .snackRequest:
            self.reject(pdu.header, reason: .protocolError)
            return
        default:
            self.reject(pdu.header, reason: .commandNotSupported)
            return
        }
        if opcode == .nopOut && pdu.initiatorTaskTag == PDU.reservedTag {
            return  // an answer to a NOP-In ping; this target sends none, so nothing to do
        }
        if pdu.immediate {
            self.perform(pdu)
            return
        }
        // RFC 7143 §4.2.2.1: commands outside the window are ignored silently.
        let sequence = pdu.commandSequenceNumber
        guard self.inWindow(sequence) else {
            self.logger.debug("iSCSI CmdSN \(sequence) outside [\(self.expectedCommand), \(self.maxCommand)]; ignored")
            return
        }
        if sequence != self.expectedCommand {
            self.held[sequence] = pdu
            return
        }
        self.expectedCommand &+= 1
        self.perform(pdu)
        self.performHeld()
    }

    func inWindow(_ sequence: UInt32) -> Bool {
        SerialNumber.lessOrEqual(self.expectedCommand, sequence) && SerialNumber.lessOrEqual(sequence, self.maxCommand)
    }

    /// Runs the held commands that are now next in CmdSN order.
    mutating func performHeld() {
        while let next = self.held.removeValue(forKey: self.expectedCommand) {
            self.expectedCommand &+= 1
            self.perform(next)
        }
    }

    private mutating func perform(_ pdu: PDU) {
        switch pdu.opcode {
        case .scsiCommand: self.command(pdu)
        case .nopOut: self.nop(pdu)
        case .taskManagementRequest: self.taskManagement(pdu)
        case .textRequest: self.text(pdu)
        case .logoutRequest: self.logout(pdu)
        default: self.reject(pdu.header, reason: .commandNotSupported)
        }
    }

    // MARK: Responses

    /// Stamps a response with StatSN (advancing it when `advance`), ExpCmdSN and MaxCmdSN.
    mutating func stamp(_ pdu: inout PDU, advance: Bool = true) {
        pdu.statusSequenceNumber = self.statusSequence
        if advance { self.statusSequence &+= 1 }
        pdu.expectedCommandSequenceNumber = self.expectedCommand
        pdu.maxCommandSequenceNumber = self.maxCommand
    }

    mutating func send(_ pdu: PDU, data: ArraySlice<UInt8>? = nil) {
        self.outbox.append(.send(pdu, data: data))
    }

    mutating func reject(_ header: [UInt8], reason: RejectReason) {
        var pdu = PDU(.reject)
        pdu.response = reason.rawValue
        pdu.initiatorTaskTag = PDU.reservedTag
        self.stamp(&pdu)
        pdu.data = header
        self.send(pdu)
    }

    private mutating func nop(_ request: PDU) {
        var pdu = PDU(.nopIn)
        pdu.lun = request.lun
        pdu.initiatorTaskTag = request.initiatorTaskTag
        pdu.targetTransferTag = PDU.reservedTag
        self.stamp(&pdu)
        pdu.data = Array(request.data.prefix(self.parameters.initiatorMaxReceiveDataLength))
        self.send(pdu)
    }

    private mutating func logout(_ request: PDU) {
        var pdu = PDU(.logoutResponse)
        pdu.initiatorTaskTag = request.initiatorTaskTag
        let reason = request.function
        pdu.response = reason == 2 ? 2 : 0  // removing a connection for recovery needs ERL 2
        self.stamp(&pdu)
        self.send(pdu)
        if reason == 2 { return }
        self.logger.info("iSCSI session \(self.tsih) logged out")
        self.unit?.nexusLost(self.nexus, session: self.tsih)
        self.outbox.append(.close)
    }

    /// A fresh Target Transfer Tag (never the reserved one).
    mutating func takeTransferTag() -> UInt32 {
        let tag = self.nextTransferTag
        self.nextTransferTag = self.nextTransferTag &+ 1 == PDU.reservedTag ? 1 : self.nextTransferTag &+ 1
        return tag
    }
}
