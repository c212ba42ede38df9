// One iSCSI connection (one session: MaxConnections=1): login through `Login`, then the full
// feature phase of RFC 7143: SCSI commands in CmdSN order inside the command window, write
// data as immediate data, unsolicited Data-Out and R2T-solicited bursts, Data-In with status
// in the final PDU, NOP, Text (SendTargets), task management, Logout, and Reject for what the
// target cannot take.
//
// SCSI commands run on the thread pool (the engine blocks on disk I/O); replies go out as each
// completes. The connection stops reading while the socket is not writable or too many
// commands are running, and buffers at most a bounded amount of write data: unsolicited data is
// limited by FirstBurstLength and R2Ts are issued only while the buffered total is low.

import Logging
import NIOCore
import NIOPosix
import StrataCore
import StrataFrontEnd

final class ISCSIConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: all state is touched on the channel's event loop only.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let loginSeconds: Int64 = 30
    static let runningMax = 64
    /// Bytes the running commands may bring back (their Expected Data Transfer Lengths).
    static let runningBytesMax = 64 << 20
    /// Write data the connection will hold for commands still receiving it.
    static let bufferedBytesMax = 64 << 20

    /// A SCSI command from its arrival to its status.
    final class Task {
        let pdu: PDU
        let cdb: CDB
        let tag: UInt32
        let lun: UInt64
        let expectedLength: Int
        /// Bytes the command takes from the initiator: min(EDTL, what the CDB transfers).
        let wanted: Int
        /// What the CDB itself would transfer out (for the residual).
        let commandLength: Int
        var data: [UInt8] = []
        /// Unsolicited bytes still to come (InitialR2T=No).
        var unsolicitedEnd = 0
        var r2tSequence: UInt32 = 0
        var transferTag: UInt32 = PDU.reservedTag
        var burstEnd = 0
        /// DataSN the next Data-Out must carry; each sequence (unsolicited, or one R2T's) starts at 0.
        var nextDataSequence: UInt32 = 0
        var running = false
        var aborted = false
        /// Task management responses waiting for this task to finish.
        var onFinish: [() -> Void] = []

        init(pdu: PDU, cdb: CDB, wanted: Int, commandLength: Int) {
            self.pdu = pdu
            self.cdb = cdb
            self.tag = pdu.initiatorTaskTag
            self.lun = pdu.lun
            self.expectedLength = Int(pdu.uint32(at: 20))
            self.wanted = wanted
            self.commandLength = commandLength
        }

        var readWanted: Bool { self.pdu.flags & 0x40 != 0 }
    }

    enum Phase {
        case login(Login)
        case fullFeature
        case loggingOut
        case closed
    }

    let target: ISCSITarget
    var logger: Logger
    var phase: Phase
    /// During login both sides may send at most 8192 bytes per PDU (RFC 7143 §13.12's default).
    var framing = FramingSettings(maxReceiveDataLength: TargetLimits.loginDataLength)
    var cumulation = ByteBuffer()
    var context: ChannelHandlerContext?
    var loginTimer: Scheduled<Void>?
    var reading = false

    // Session state (full feature phase).
    var parameters = SessionParameters()
    var tsih: UInt16 = 0
    var nexus = ""
    var unit: LogicalUnit?
    var statusSequence: UInt32 = 0
    var expectedCommand: UInt32 = 0
    /// Non-immediate commands that arrived ahead of ExpCmdSN, inside the window.
    var held: [UInt32: PDU] = [:]
    var tasks: [UInt32: Task] = [:]
    var running = 0
    var runningBytes = 0
    var bufferedBytes = 0
    /// Tasks waiting for room to solicit their data.
    var waitingForR2T: [UInt32] = []
    var nextTransferTag: UInt32 = 1
    /// A SendTargets answer longer than one PDU, sent in pieces (Text with the C bit).
    var textRemainder: (tag: UInt32, bytes: [UInt8])?
    var textPending: [UInt8] = []
    var outputClosed = false

    init(target: ISCSITarget) {
        self.target = target
        self.logger = target.logger
        self.phase = .login(Login(environment: target))
    }

    var maxCommand: UInt32 { self.expectedCommand &+ TargetLimits.commandWindow &- 1 }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        self.logger[metadataKey: "peer"] = "\(context.remoteAddress?.description ?? "?")"
        self.target.registry.add(context.channel, protocolName: "iscsi")
        self.loginTimer = context.eventLoop.scheduleTask(in: .seconds(Self.loginSeconds)) { [weak self] in
            guard let self, let context = self.context, case .login = self.phase else { return }
            self.logger.info("closing iSCSI connection: login not complete within \(Self.loginSeconds) s")
            context.close(promise: nil)
        }
        self.readMore(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.phase = .closed
        self.loginTimer?.cancel()
        self.target.registry.remove(context.channel)
        if self.tsih != 0 {
            self.target.closeSession(self.tsih)
            self.unit?.reservations.nexusLost(self.nexus)
        }
        for task in self.tasks.values { task.aborted = true }
        self.context = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.cumulation.cumulate(self.unwrapInboundIn(data))
        self.reading = false
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.process(context: context)
        context.flush()
        self.readMore(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.process(context: context)
            context.flush()
            self.readMore(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            // Shutdown: let running commands answer, then close.
            self.phase = .loggingOut
            self.closeIfIdle(context: context)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .seconds(10)) { bound.value.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("iSCSI connection error: \(error)")
        context.close(promise: nil)
    }

    private func readMore(context: ChannelHandlerContext) {
        guard !self.reading, context.channel.isActive, context.channel.isWritable,
            self.running < Self.runningMax, self.runningBytes < Self.runningBytesMax
        else { return }
        switch self.phase {
        case .login, .fullFeature:
            self.reading = true
            context.read()
        default:
            return
        }
    }

    private func closeIfIdle(context: ChannelHandlerContext) {
        guard case .loggingOut = self.phase, self.running == 0 else { return }
        self.phase = .closed
        self.flushThenClose(context: context)
    }

    /// Writes what is queued, then closes.
    private func flushThenClose(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }

    // MARK: Framing

    private func process(context: ChannelHandlerContext) {
        while context.channel.isWritable {
            switch self.phase {
            case .login, .fullFeature: break
            default: return
            }
            guard self.running < Self.runningMax, self.runningBytes < Self.runningBytesMax else { return }
            let pdu: PDU
            do {
                guard let next = try PDUFramer.decode(&self.cumulation, settings: self.framing) else { return }
                pdu = next
            } catch {
                self.framingFailed(error, context: context)
                return
            }
            switch self.phase {
            case .login(var login):
                let step = login.handle(pdu)
                self.phase = .login(login)
                self.loginStep(step, login: login, context: context)
            case .fullFeature:
                self.receive(pdu, context: context)
            default:
                return
            }
        }
    }

    private func framingFailed(_ error: FramingError, context: ChannelHandlerContext) {
        switch error {
        case .dataSegmentTooLong(let header, let length, let limit):
            self.logger.notice("iSCSI PDU data segment of \(length) bytes exceeds \(limit); closing the connection")
            switch self.phase {
            case .fullFeature:
                self.reject(header, reason: .protocolError, context: context)
            case .login(var login):
                if case .fail(let refusal, _) = login.failure(.initiatorError, PDU(header: header), "text too long") {
                    self.send(refusal, context: context)
                }
            default:
                break
            }
        case .headerDigest:
            self.logger.notice("iSCSI header digest mismatch; closing the connection")
        case .dataDigest(let header):
            self.logger.notice("iSCSI data digest mismatch; closing the connection")
            if case .fullFeature = self.phase { self.reject(header, reason: .dataDigestError, context: context) }
        }
        self.shutdown(context: context)
    }

    private func send(_ pdu: PDU, data: ArraySlice<UInt8>? = nil, context: ChannelHandlerContext) {
        guard !self.outputClosed else { return }
        var buffer = context.channel.allocator.buffer(capacity: PDU.headerLength + (data?.count ?? pdu.data.count) + 12)
        PDUFramer.encode(pdu, data: data, into: &buffer, settings: self.framing)
        context.write(self.wrapOutboundOut(buffer), promise: nil)
    }

    /// Sends what is queued and closes.
    private func shutdown(context: ChannelHandlerContext) {
        self.phase = .closed
        self.outputClosed = true
        self.flushThenClose(context: context)
    }

    // MARK: Login

    private func loginStep(_ step: Login.Step, login: Login, context: ChannelHandlerContext) {
        switch step {
        case .respond(let pdu):
            self.send(pdu, context: context)
        case .fail(let pdu, let reason):
            self.logger.notice("iSCSI login refused: \(reason)")
            self.send(pdu, context: context)
            self.shutdown(context: context)
        case .complete(var pdu, let parameters):
            if login.requestedTSIH != 0 {
                // Adding a connection to a session: MaxConnections is 1.
                var failed = login
                let status: LoginStatus = self.target.sessionExists(login.requestedTSIH) ? .tooManyConnections : .sessionDoesNotExist
                if case .fail(let refusal, _) = failed.failure(status, pdu, "TSIH \(login.requestedTSIH)") {
                    self.send(refusal, context: context)
                }
                self.shutdown(context: context)
                return
            }
            if parameters.sessionType == .normal {
                guard let object = login.object else { return }
                switch Result(catching: { () throws(StrataError) in try self.target.unit(for: object) }) {
                case .success(let unit):
                    self.unit = unit
                    self.target.registry.attach(context.channel, export: object, volumeID: unit.handle.id)
                case .failure(let error):
                    var failed = login
                    if case .fail(let refusal, _) = failed.failure(.targetRemoved, pdu, error.message) {
                        self.send(refusal, context: context)
                    }
                    self.shutdown(context: context)
                    return
                }
            }
            self.parameters = parameters
            // The I_T nexus: initiator name and ISID (RFC 7143 §4.4.1), as `name,i,0x<ISID>`.
            self.nexus = "\(parameters.initiatorName),i," + Chap.encode(login.initiatorSessionID)
            self.tsih = self.target.openSession(nexus: self.nexus, channel: context.channel)
            pdu.set(self.tsih, at: 14)
            self.statusSequence = login.statusSequenceNumber
            self.expectedCommand = pdu.uint32(at: 28)
            self.loginTimer?.cancel()
            self.send(pdu, context: context)
            context.flush()
            // Digests apply from the first PDU after the final login response.
            self.framing = FramingSettings(
                headerDigest: parameters.headerDigest, dataDigest: parameters.dataDigest,
                maxReceiveDataLength: TargetLimits.maxReceiveDataLength)
            self.phase = .fullFeature
            self.logger.info(
                "iSCSI session \(self.tsih) of \(parameters.initiatorName) logged in to \(parameters.targetName ?? "discovery")")
        }
    }

    // MARK: Full feature phase

    /// Stamps a response with StatSN (advancing it when `advance`), ExpCmdSN and MaxCmdSN.
    private func stamp(_ pdu: inout PDU, advance: Bool = true) {
        pdu.set(self.statusSequence, at: 24)
        if advance { self.statusSequence &+= 1 }
        pdu.set(self.expectedCommand, at: 28)
        pdu.set(self.maxCommand, at: 32)
    }

    private func receive(_ pdu: PDU, context: ChannelHandlerContext) {
        guard let opcode = pdu.opcode else {
            self.reject(pdu.header, reason: .commandNotSupported, context: context)
            return
        }
        switch opcode {
        case .dataOut:
            self.dataOut(pdu, context: context)
            return
        case .scsiCommand, .nopOut, .taskManagementRequest, .textRequest, .logoutRequest:
            break
        case .snackRequest:
            self.reject(pdu.header, reason: .protocolError, context: context)
            return
        default:
            self.reject(pdu.header, reason: .commandNotSupported, context: context)
            return
        }
        if opcode == .nopOut && pdu.initiatorTaskTag == PDU.reservedTag {
            return  // an answer to a NOP-In ping; this target sends none, so nothing to do
        }
        if pdu.immediate {
            self.perform(pdu, context: context)
            return
        }
        // RFC 7143 §4.2.2.1: commands outside the window are ignored silently.
        let sequence = pdu.commandSequenceNumber
        guard SerialNumber.lessOrEqual(self.expectedCommand, sequence), SerialNumber.lessOrEqual(sequence, self.maxCommand)
        else {
            self.logger.debug("iSCSI CmdSN \(sequence) outside [\(self.expectedCommand), \(self.maxCommand)]; ignored")
            return
        }
        if sequence != self.expectedCommand {
            self.held[sequence] = pdu
            return
        }
        self.expectedCommand &+= 1
        self.perform(pdu, context: context)
        self.performHeld(context: context)
    }

    /// Runs the held commands that are now next in CmdSN order.
    private func performHeld(context: ChannelHandlerContext) {
        while let next = self.held.removeValue(forKey: self.expectedCommand) {
            self.expectedCommand &+= 1
            self.perform(next, context: context)
        }
    }

    private func perform(_ pdu: PDU, context: ChannelHandlerContext) {
        switch pdu.opcode {
        case .scsiCommand: self.command(pdu, context: context)
        case .nopOut: self.nop(pdu, context: context)
        case .taskManagementRequest: self.taskManagement(pdu, context: context)
        case .textRequest: self.text(pdu, context: context)
        case .logoutRequest: self.logout(pdu, context: context)
        default: self.reject(pdu.header, reason: .commandNotSupported, context: context)
        }
    }

    private func reject(_ header: [UInt8], reason: RejectReason, context: ChannelHandlerContext) {
        var pdu = PDU(.reject)
        pdu.header[2] = reason.rawValue
        pdu.initiatorTaskTag = PDU.reservedTag
        self.stamp(&pdu)
        pdu.data = header
        self.send(pdu, context: context)
    }

    private func nop(_ request: PDU, context: ChannelHandlerContext) {
        var pdu = PDU(.nopIn)
        pdu.lun = request.lun
        pdu.initiatorTaskTag = request.initiatorTaskTag
        pdu.targetTransferTag = PDU.reservedTag
        self.stamp(&pdu)
        pdu.data = Array(request.data.prefix(self.parameters.initiatorMaxReceiveDataLength))
        self.send(pdu, context: context)
    }

    private func logout(_ request: PDU, context: ChannelHandlerContext) {
        var pdu = PDU(.logoutResponse)
        pdu.initiatorTaskTag = request.initiatorTaskTag
        let reason = request.flags & 0x7f
        pdu.header[2] = reason == 2 ? 2 : 0  // removing a connection for recovery needs ERL 2
        self.stamp(&pdu)
        self.send(pdu, context: context)
        if reason == 2 { return }
        self.logger.info("iSCSI session \(self.tsih) logged out")
        self.unit?.reservations.nexusLost(self.nexus)
        self.shutdown(context: context)
    }

    // MARK: Text (SendTargets)

    private func text(_ request: PDU, context: ChannelHandlerContext) {
        var response = PDU(.textResponse)
        response.initiatorTaskTag = request.initiatorTaskTag
        response.lun = request.lun
        let limit = self.parameters.initiatorMaxReceiveDataLength
        if request.targetTransferTag != PDU.reservedTag {
            // The initiator asks for the rest of a long answer.
            guard let remainder = self.textRemainder, remainder.tag == request.targetTransferTag else {
                self.reject(request.header, reason: .invalidPDUField, context: context)
                return
            }
            self.sendText(&response, remainder.bytes, limit: limit, context: context)
            return
        }
        self.textPending += request.data
        guard self.textPending.count <= 64 << 10 else {
            self.textPending = []
            self.reject(request.header, reason: .outOfResources, context: context)
            return
        }
        if request.flags & 0x40 != 0 {
            // More text to come (C bit): acknowledge with an empty response.
            response.flags = 0
            response.targetTransferTag = PDU.reservedTag
            self.stamp(&response)
            self.send(response, context: context)
            return
        }
        let keys = TextKeys.parse(self.textPending)
        self.textPending = []
        guard let keys else {
            self.reject(request.header, reason: .protocolError, context: context)
            return
        }
        var answer = TextKeys()
        for (key, value) in keys.pairs {
            if key == "SendTargets" {
                answer.pairs += self.sendTargets(value, context: context).pairs
            } else {
                answer.append(key, "NotUnderstood")
            }
        }
        self.sendText(&response, answer.bytes, limit: limit, context: context)
    }

    private func sendText(_ response: inout PDU, _ bytes: [UInt8], limit: Int, context: ChannelHandlerContext) {
        if bytes.count > limit {
            let tag = self.nextTransferTag
            self.nextTransferTag = self.nextTransferTag &+ 1 == PDU.reservedTag ? 1 : self.nextTransferTag &+ 1
            self.textRemainder = (tag, Array(bytes[limit...]))
            response.flags = 0x40
            response.targetTransferTag = tag
            response.data = Array(bytes[..<limit])
        } else {
            self.textRemainder = nil
            response.flags = 0x80
            response.targetTransferTag = PDU.reservedTag
            response.data = bytes
        }
        self.stamp(&response)
        self.send(response, context: context)
    }

    /// SendTargets=All lists every target; =NAME that one; empty, the session's own target.
    private func sendTargets(_ value: String, context: ChannelHandlerContext) -> TextKeys {
        var keys = TextKeys()
        let address = Self.portalAddress(context.channel.localAddress)
        let objects: [String]
        switch value {
        case "All":
            objects = self.target.pool.targets().map(\.name)
        case "":
            objects = self.unit.map { [$0.handle.name] } ?? []
        default:
            objects = self.target.object(forTargetName: value).map { [$0] } ?? []
        }
        for object in objects {
            keys.append("TargetName", TargetNames.targetName(for: object))
            keys.append("TargetAddress", "\(address),\(TargetLimits.portalGroupTag)")
        }
        return keys
    }

    static func portalAddress(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "127.0.0.1:3260" }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }

    // MARK: SCSI commands

    private func command(_ pdu: PDU, context: ChannelHandlerContext) {
        guard self.parameters.sessionType == .normal, let unit = self.unit else {
            self.reject(pdu.header, reason: .protocolError, context: context)
            return
        }
        // A CDB longer than 16 bytes continues in an extended-CDB AHS (type 1).
        var cdbBytes = Array(pdu.header[32..<48])
        if pdu.additionalHeader.count >= 4, pdu.additionalHeader[2] == 0x01 {
            let length = Int(pdu.additionalHeader[0]) << 8 | Int(pdu.additionalHeader[1])
            cdbBytes += pdu.additionalHeader.dropFirst(4).prefix(max(0, length - 1))
        }
        let cdb = CDB(cdbBytes)
        let tag = pdu.initiatorTaskTag
        if self.tasks[tag] != nil {
            self.reject(pdu.header, reason: .taskInProgress, context: context)
            return
        }
        if pdu.lun != 0 {
            self.finishEarly(pdu, result: self.wrongLUN(cdb), context: context)
            return
        }
        let writes = pdu.flags & 0x20 != 0
        var wanted = 0
        var commandLength = 0
        switch unit.dataOutLength(cdb, nexus: self.nexus, expectedLength: Int(pdu.uint32(at: 20))) {
        case .failure(let early):
            self.finishEarly(pdu, result: early.result, context: context)
            return
        case .success(let length):
            commandLength = length
            wanted = writes ? min(length, Int(pdu.uint32(at: 20))) : 0
        }
        let task = Task(pdu: pdu, cdb: cdb, wanted: wanted, commandLength: commandLength)
        self.tasks[tag] = task
        if wanted == 0 {
            self.run(task, context: context)
            return
        }
        // Immediate data, then unsolicited Data-Out up to FirstBurstLength, then R2Ts.
        task.data = Array(pdu.data.prefix(wanted))
        self.bufferedBytes += task.data.count
        let unsolicitedLimit = min(self.parameters.firstBurstLength, task.expectedLength)
        task.unsolicitedEnd = self.parameters.initialR2T ? pdu.data.count : max(unsolicitedLimit, pdu.data.count)
        self.advanceWrite(task, context: context)
    }

    /// Runs the command once its data is in; otherwise solicits the next burst when the
    /// unsolicited data is over.
    private func advanceWrite(_ task: Task, context: ChannelHandlerContext) {
        if task.data.count >= task.wanted {
            self.run(task, context: context)
            return
        }
        if task.data.count < min(task.unsolicitedEnd, task.wanted) { return }  // unsolicited data still coming
        if task.burstEnd > task.data.count { return }  // an R2T is outstanding
        guard self.bufferedBytes < Self.bufferedBytesMax else {
            if !self.waitingForR2T.contains(task.tag) { self.waitingForR2T.append(task.tag) }
            return
        }
        let offset = task.data.count
        let length = min(self.parameters.maxBurstLength, task.wanted - offset)
        task.transferTag = self.nextTransferTag
        self.nextTransferTag = self.nextTransferTag &+ 1 == PDU.reservedTag ? 1 : self.nextTransferTag &+ 1
        task.burstEnd = offset + length
        task.nextDataSequence = 0
        var r2t = PDU(.readyToTransfer)
        r2t.lun = task.lun
        r2t.initiatorTaskTag = task.tag
        r2t.targetTransferTag = task.transferTag
        self.stamp(&r2t, advance: false)
        r2t.set(task.r2tSequence, at: 36)
        task.r2tSequence &+= 1
        r2t.set(UInt32(offset), at: 40)
        r2t.set(UInt32(length), at: 44)
        self.send(r2t, context: context)
    }

    private func dataOut(_ pdu: PDU, context: ChannelHandlerContext) {
        guard let task = self.tasks[pdu.initiatorTaskTag], !task.running else {
            // Data for a command already answered (ended early) or unknown: dropped.
            return
        }
        let offset = Int(pdu.uint32(at: 40))
        let solicited = pdu.targetTransferTag != PDU.reservedTag
        if solicited && pdu.targetTransferTag != task.transferTag {
            self.reject(pdu.header, reason: .invalidPDUField, context: context)
            return
        }
        if !solicited && offset + pdu.data.count > max(task.unsolicitedEnd, self.parameters.firstBurstLength) {
            self.reject(pdu.header, reason: .protocolError, context: context)
            return
        }
        guard pdu.uint32(at: 36) == task.nextDataSequence else {
            // ErrorRecoveryLevel 0 cannot recover a lost or reordered Data-Out (RFC 7143 §7.1.4.1):
            // the PDU is rejected and the command ends in DATA PHASE ERROR.
            self.logger.notice("iSCSI Data-Out DataSN \(pdu.uint32(at: 36)) where \(task.nextDataSequence) was due")
            self.reject(pdu.header, reason: .protocolError, context: context)
            self.tasks[task.tag] = nil
            self.bufferedBytes -= task.data.count
            self.waitingForR2T.removeAll { $0 == task.tag }
            self.respond(task, result: .check(.dataPhaseError), context: context)
            return
        }
        task.nextDataSequence &+= 1
        guard offset == task.data.count || offset + pdu.data.count <= task.data.count else {
            // DataPDUInOrder=Yes: data must come in order, without gaps.
            self.reject(pdu.header, reason: .protocolError, context: context)
            return
        }
        if offset == task.data.count {
            let usable = pdu.data.prefix(max(0, task.wanted - offset))
            task.data += usable
            self.bufferedBytes += usable.count
        }
        if pdu.final && !solicited {
            task.unsolicitedEnd = min(task.unsolicitedEnd, offset + pdu.data.count)
        }
        if pdu.final && solicited && task.data.count < task.burstEnd {
            // The burst ended short of what was asked: a protocol error.
            self.reject(pdu.header, reason: .protocolError, context: context)
            return
        }
        self.advanceWrite(task, context: context)
    }

    /// The answer to a command on a LUN other than 0 (SPC-4 §8.1.7: INQUIRY and REPORT LUNS still work).
    private func wrongLUN(_ cdb: CDB) -> SCSIResult {
        switch cdb.opcode {
        case SCSIOpcode.inquiry.rawValue:
            var data = Inquiry.standard()
            data[0] = 0x7f  // no device at this LUN
            return .good(data.truncated(to: cdb.uint16(3)))
        case SCSIOpcode.reportLUNs.rawValue:
            return self.unit?.execute(cdb, data: [], nexus: self.nexus) ?? .check(.lunNotSupported)
        default:
            return .check(.lunNotSupported)
        }
    }

    private func finishEarly(_ pdu: PDU, result: SCSIResult, context: ChannelHandlerContext) {
        let task = Task(pdu: pdu, cdb: CDB(Array(pdu.header[32..<48])), wanted: 0, commandLength: 0)
        self.respond(task, result: result, context: context)
    }

    /// Whether the command's table entry lets it run on the event loop (`InlineRule`).
    private func runsInline(_ task: Task, unit: LogicalUnit) -> Bool {
        guard let spec = CommandTable.spec(for: task.cdb) else { return false }
        return spec.runsInline(
            task.cdb, expectedLength: task.expectedLength, writeCache: unit.writeCache.load(ordering: .relaxed))
    }

    private func run(_ task: Task, context: ChannelHandlerContext) {
        guard let unit = self.unit else { return }
        task.running = true
        self.running += 1
        self.runningBytes += task.expectedLength
        let nexus = self.nexus
        let cdb = task.cdb
        let data = task.data
        if self.runsInline(task, unit: unit) {
            let result = unit.execute(cdb, data: data, nexus: nexus, prechecked: task.wanted == 0)
            self.finish(task, result: result, dataCount: data.count, context: context, resume: false)
            return
        }
        // A command that waited for no data was checked by `dataOutLength` just now; one that
        // waited for its data is checked again, since a reservation or the size may have changed.
        let prechecked = task.wanted == 0
        let future = self.target.threadPool.runIfActive(eventLoop: context.eventLoop) {
            unit.execute(cdb, data: data, nexus: nexus, prechecked: prechecked)
        }
        let bound = NIOLoopBound((context, task), eventLoop: context.eventLoop)
        future.whenComplete { outcome in
            let (context, task) = bound.value
            let result: SCSIResult
            switch outcome {
            case .success(let value): result = value
            case .failure: result = .check(.hardwareError)
            }
            self.finish(task, result: result, dataCount: data.count, context: context, resume: true)
        }
    }

    /// A command's end: its answer, then whatever waited for it. `resume` when called from
    /// outside `process` (a thread-pool completion), which then goes on reading.
    private func finish(_ task: Task, result: SCSIResult, dataCount: Int, context: ChannelHandlerContext, resume: Bool) {
        self.running -= 1
        self.runningBytes -= task.expectedLength
        self.bufferedBytes -= dataCount
        self.tasks[task.tag] = nil
        if !task.aborted {
            switch self.phase {
            case .fullFeature, .loggingOut: self.respond(task, result: result, context: context)
            default: break
            }
        }
        for waiter in task.onFinish { waiter() }
        self.serveWaitingR2T(context: context)
        guard resume else { return }
        context.flush()
        self.closeIfIdle(context: context)
        if case .fullFeature = self.phase {
            self.process(context: context)
            context.flush()
            self.readMore(context: context)
        }
    }

    private func serveWaitingR2T(context: ChannelHandlerContext) {
        while !self.waitingForR2T.isEmpty && self.bufferedBytes < Self.bufferedBytesMax {
            let tag = self.waitingForR2T.removeFirst()
            if let task = self.tasks[tag] { self.advanceWrite(task, context: context) }
        }
    }

    /// Sends a command's data and status: Data-In PDUs (the last one carrying GOOD status when
    /// it can), or a SCSI Response with sense data.
    private func respond(_ task: Task, result: SCSIResult, context: ChannelHandlerContext) {
        let expected = task.expectedLength
        var residualFlag: UInt8 = 0
        var residual = 0
        var dataInCount: UInt32 = 0
        var payload: [UInt8] = []
        if task.readWanted {
            payload = result.data
            if payload.count > expected {
                residualFlag = 0x04
                residual = payload.count - expected
                payload = Array(payload[0..<expected])
            } else if payload.count < expected {
                residualFlag = 0x02
                residual = expected - payload.count
            }
        } else if task.pdu.flags & 0x20 != 0 {
            if task.commandLength > expected {
                residualFlag = 0x04
                residual = task.commandLength - expected
            } else if task.commandLength < expected {
                residualFlag = 0x02
                residual = expected - task.commandLength
            }
        } else if expected > 0 {
            residualFlag = 0x02
            residual = expected
        }
        let collapse = result.status == .good && !payload.isEmpty
        if !payload.isEmpty {
            let segment = max(512, self.parameters.initiatorMaxReceiveDataLength)
            var offset = 0
            while offset < payload.count {
                let count = min(segment, payload.count - offset)
                let last = offset + count == payload.count
                var pdu = PDU(.dataIn, flags: 0)
                let burstBoundary = (offset + count) % self.parameters.maxBurstLength == 0
                if last || burstBoundary { pdu.flags |= 0x80 }
                pdu.lun = task.lun
                pdu.initiatorTaskTag = task.tag
                pdu.targetTransferTag = PDU.reservedTag
                pdu.set(dataInCount, at: 36)
                dataInCount += 1
                pdu.set(UInt32(offset), at: 40)
                if last && collapse {
                    pdu.flags |= 0x01 | residualFlag
                    pdu.header[3] = result.status.rawValue
                    self.stamp(&pdu)
                    pdu.set(UInt32(residual), at: 44)
                } else {
                    pdu.set(self.expectedCommand, at: 28)
                    pdu.set(self.maxCommand, at: 32)
                }
                self.send(pdu, data: payload[offset..<offset + count], context: context)
                offset += count
            }
            if collapse { return }
        }
        var response = PDU(.scsiResponse, flags: 0x80 | residualFlag)
        response.header[2] = 0x00  // command completed at target
        response.header[3] = result.status.rawValue
        response.initiatorTaskTag = task.tag
        self.stamp(&response)
        response.set(task.readWanted ? dataInCount : task.r2tSequence, at: 36)
        response.set(UInt32(residual), at: 44)
        if !result.sense.isEmpty {
            response.data = BigEndian.bytes(UInt64(result.sense.count), 2) + result.sense
        }
        self.send(response, context: context)
    }

    // MARK: Task management

    private func taskManagement(_ request: PDU, context: ChannelHandlerContext) {
        let function = request.flags & 0x7f
        var response = PDU(.taskManagementResponse)
        response.initiatorTaskTag = request.initiatorTaskTag
        let answer: (UInt8) -> Void = { [weak self] code in
            guard let self, let context = self.context else { return }
            response.header[2] = code
            self.stamp(&response)
            self.send(response, context: context)
            context.flush()
        }
        if self.parameters.sessionType != .normal {
            answer(5)
            return
        }
        switch function {
        case 1:  // ABORT TASK
            let referenced = request.uint32(at: 20)
            guard let task = self.tasks[referenced] else {
                // RFC 7143 §11.5.1: a command that never arrived but whose CmdSN is inside the
                // window, before the TMF's, counts as received and aborted; otherwise the task
                // is gone (it completed) or never existed.
                let referencedSequence = request.uint32(at: 32)
                let missing =
                    SerialNumber.lessOrEqual(self.expectedCommand, referencedSequence)
                    && SerialNumber.lessOrEqual(referencedSequence, self.maxCommand)
                    && SerialNumber.less(referencedSequence, request.commandSequenceNumber)
                if missing {
                    self.held[referencedSequence] = nil
                    if referencedSequence == self.expectedCommand {
                        self.expectedCommand &+= 1
                        self.performHeld(context: context)
                    }
                }
                answer(missing ? 0 : 1)
                return
            }
            self.abort([task], then: { answer(0) })
        case 2, 4, 5, 6, 7:  // ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET WARM/COLD RESET
            if (function == 2 || function == 4 || function == 5) && request.lun != 0 {
                answer(2)
                return
            }
            let all = Array(self.tasks.values)
            self.held = [:]
            if function >= 5 { self.unit?.reservations.reset(by: self.nexus) }
            self.abort(all) {
                answer(0)
                if function == 7, let context = self.context { self.shutdown(context: context) }
            }
        case 8:
            answer(4)  // TASK REASSIGN needs ErrorRecoveryLevel 2
        default:
            answer(5)
        }
    }

    /// Aborts `tasks`: ones still receiving data end now, running ones end when the engine
    /// returns; `then` runs when none is left.
    private func abort(_ tasks: [Task], then: @escaping () -> Void) {
        var remaining = 0
        for task in tasks {
            task.aborted = true
            if task.running {
                remaining += 1
            } else {
                self.bufferedBytes -= task.data.count
                self.tasks[task.tag] = nil
                self.waitingForR2T.removeAll { $0 == task.tag }
            }
        }
        guard remaining > 0 else {
            then()
            return
        }
        var left = remaining
        for task in tasks where task.running {
            task.onFinish.append {
                left -= 1
                if left == 0 { then() }
            }
        }
    }
}
