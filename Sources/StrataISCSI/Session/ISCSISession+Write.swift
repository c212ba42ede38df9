// SCSI commands up to their execution: the precheck, write data (immediate data, unsolicited
// Data-Out up to FirstBurstLength, then one R2T at a time of at most MaxBurstLength, RFC 7143
// §7.1 and §11.7–11.8), the buffered-data limit that makes R2Ts wait, and the hand-over to the
// connection for execution. DataPDUInOrder and DataSequenceInOrder are Yes and ErrorRecoveryLevel
// is 0: a Data-Out out of order is rejected, and a lost one ends the command.

import StrataCore

extension ISCSISession {
    mutating func command(_ pdu: PDU) {
        guard self.parameters.sessionType == .normal, let unit = self.unit else {
            self.reject(pdu.header, reason: .protocolError)
            return
        }
        let cdb = CDB(pdu.extendedCommandDescriptorBlock)
        let tag = pdu.initiatorTaskTag
        if self.commands[tag] != nil {
            self.reject(pdu.header, reason: .taskInProgress)
            return
        }
        if pdu.lun != 0 {
            self.finishEarly(pdu, result: self.wrongLUN(cdb, unit: unit))
            return
        }
        let expectedLength = Int(pdu.expectedDataTransferLength)
        let plan: LogicalUnit.DataOutPlan
        switch unit.dataOutLength(cdb, nexus: self.nexus, expectedLength: expectedLength) {
        case .failure(let early):
            self.finishEarly(pdu, result: early.result)
            return
        case .success(let value):
            plan = value
        }
        let wanted = pdu.writeExpected ? min(plan.length, expectedLength) : 0
        var command = PendingCommand(pdu, cdb: cdb, wanted: wanted, commandLength: plan.length)
        command.checkedOnArrival = plan.checked
        if wanted == 0 {
            self.commands[tag] = command
            self.run(tag)
            return
        }
        // Immediate data, then unsolicited Data-Out up to FirstBurstLength, then R2Ts.
        command.data = Array(pdu.data.prefix(wanted))
        self.bufferedBytes += command.data.count
        let unsolicitedLimit = min(self.parameters.firstBurstLength, command.expectedLength)
        command.unsolicitedEnd =
            self.parameters.initialR2T ? pdu.data.count : max(unsolicitedLimit, pdu.data.count)
        self.commands[tag] = command
        self.advanceWrite(tag)
    }

    /// The answer to a command on a LUN other than 0 (SPC-4 §8.1.7: INQUIRY and REPORT LUNS still work).
    private func wrongLUN(_ cdb: CDB, unit: LogicalUnit) -> SCSIResult {
        switch cdb.opcode {
        case SCSIOpcode.inquiry.rawValue:
            var data = Inquiry.standard()
            data[0] = 0x7f  // no device at this LUN
            return .good(data.truncated(to: cdb.uint16(3)))
        case SCSIOpcode.reportLUNs.rawValue:
            return unit.execute(cdb, data: [], nexus: self.nexus)
        default:
            return .check(.lunNotSupported)
        }
    }

    /// Answers a command that fails before it takes data or runs.
    mutating func finishEarly(_ pdu: PDU, result: SCSIResult) {
        let command = PendingCommand(pdu, cdb: CDB(pdu.commandDescriptorBlock), wanted: 0, commandLength: 0)
        self.respond(command, result: result)
    }

    /// Runs the command once its data is in; otherwise solicits the next burst when the
    /// unsolicited data is over.
    mutating func advanceWrite(_ tag: UInt32) {
        guard var command = self.commands[tag] else { return }
        if command.data.count >= command.wanted {
            self.run(tag)
            return
        }
        if command.data.count < min(command.unsolicitedEnd, command.wanted) { return }  // unsolicited data still coming
        if command.burstEnd > command.data.count { return }  // an R2T is outstanding
        guard self.bufferedBytes < Self.bufferedBytesMax else {
            if !self.waitingForR2T.contains(tag) { self.waitingForR2T.append(tag) }
            return
        }
        let offset = command.data.count
        let length = min(self.parameters.maxBurstLength, command.wanted - offset)
        command.transferTag = self.takeTransferTag()
        command.burstEnd = offset + length
        command.nextDataSequence = 0
        var r2t = PDU(.readyToTransfer)
        r2t.lun = command.lun
        r2t.initiatorTaskTag = tag
        r2t.targetTransferTag = command.transferTag
        self.stamp(&r2t, advance: false)
        r2t.dataSequenceNumber = command.r2tSequence
        command.r2tSequence &+= 1
        r2t.bufferOffset = UInt32(offset)
        r2t.desiredDataTransferLength = UInt32(length)
        self.commands[tag] = command
        self.send(r2t)
    }

    mutating func dataOut(_ pdu: PDU) {
        guard var command = self.commands[pdu.initiatorTaskTag], !command.running else {
            // Data for a command already answered (ended early) or unknown: dropped.
            return
        }
        let offset = Int(pdu.bufferOffset)
        let solicited = pdu.targetTransferTag != PDU.reservedTag
        if solicited && pdu.targetTransferTag != command.transferTag {
            self.reject(pdu.header, reason: .invalidPDUField)
            return
        }
        if !solicited && offset + pdu.data.count > max(command.unsolicitedEnd, self.parameters.firstBurstLength) {
            self.reject(pdu.header, reason: .protocolError)
            return
        }
        guard pdu.dataSequenceNumber == command.nextDataSequence else {
            // ErrorRecoveryLevel 0 cannot recover a lost or reordered Data-Out (RFC 7143 §7.1.4.1):
            // the PDU is rejected and the command ends in DATA PHASE ERROR.
            self.logger.notice("iSCSI Data-Out DataSN \(pdu.dataSequenceNumber) where \(command.nextDataSequence) was due")
            self.reject(pdu.header, reason: .protocolError)
            self.commands[command.tag] = nil
            self.bufferedBytes -= command.data.count
            self.waitingForR2T.removeAll { $0 == command.tag }
            self.respond(command, result: .check(.dataPhaseError))
            return
        }
        command.nextDataSequence &+= 1
        guard offset == command.data.count || offset + pdu.data.count <= command.data.count else {
            // DataPDUInOrder=Yes: data must come in order, without gaps.
            self.commands[command.tag] = command
            self.reject(pdu.header, reason: .protocolError)
            return
        }
        if offset == command.data.count {
            let usable = pdu.data.prefix(max(0, command.wanted - offset))
            command.data += usable
            self.bufferedBytes += usable.count
        }
        if pdu.final && !solicited {
            command.unsolicitedEnd = min(command.unsolicitedEnd, offset + pdu.data.count)
        }
        self.commands[command.tag] = command
        if pdu.final && solicited && command.data.count < command.burstEnd {
            // The burst ended short of what was asked: a protocol error.
            self.reject(pdu.header, reason: .protocolError)
            return
        }
        self.advanceWrite(command.tag)
    }

    /// Hands a command whose data is in to the connection.
    private mutating func run(_ tag: UInt32) {
        guard var command = self.commands[tag], let unit = self.unit else { return }
        command.running = true
        self.commands[tag] = command
        self.running += 1
        self.runningBytes += command.expectedLength
        let spec = CommandTable.spec(for: command.cdb)
        // A command that waited for no data was checked by `dataOutLength` just now (unless a
        // check would have waited there); one that waited for its data is checked again, since a
        // reservation or the size may have changed.
        self.outbox.append(
            .execute(
                CommandExecution(
                    tag: tag, unit: unit, cdb: command.cdb, data: command.data, nexus: self.nexus,
                    prechecked: command.wanted == 0 && command.checkedOnArrival,
                    inline: spec?.runsInline(expectedLength: command.expectedLength) ?? false,
                    batches: spec?.batches ?? false)))
    }

    /// Solicits data for the commands that waited for the buffered total to go down.
    mutating func serveWaitingR2T() {
        while !self.waitingForR2T.isEmpty && self.bufferedBytes < Self.bufferedBytesMax {
            let tag = self.waitingForR2T.removeFirst()
            if self.commands[tag] != nil { self.advanceWrite(tag) }
        }
    }
}
