// A command's answer (RFC 7143 §11.4 and §11.7): its Data-In, split into PDUs of at most the
// initiator's MaxRecvDataSegmentLength, with F set at the end of each MaxBurstLength sequence;
// the status rides in the last Data-In when it is GOOD (the S bit, with the residual), and
// otherwise comes in a SCSI Response with the sense data. Residuals: a read's against the data
// the command produced, a write's against what its CDB transfers, and a command that moves no
// data underflows by the whole Expected Data Transfer Length.

import StrataCore

extension ISCSISession {
    /// Sends a command's data and status.
    mutating func respond(_ command: PendingCommand, result: SCSIResult) {
        let expected = command.expectedLength
        var payload: [UInt8] = []
        let residual: (flag: UInt8, count: Int)
        if command.readExpected {
            payload = result.data
            residual = Self.residual(transferred: payload.count, expected: expected)
            if payload.count > expected { payload = Array(payload[0..<expected]) }
        } else if command.writeExpected {
            residual = Self.residual(transferred: command.commandLength, expected: expected)
        } else {
            residual = expected > 0 ? (PDU.Flag.residualUnderflow, expected) : (0, 0)
        }
        let collapse = result.status == .good && !payload.isEmpty
        var dataInCount: UInt32 = 0
        if !payload.isEmpty {
            dataInCount = self.sendDataIn(
                payload, command: command, final: collapse ? (result.status.rawValue, residual) : nil)
            if collapse { return }
        }
        var response = PDU(.scsiResponse, flags: PDU.Flag.final | residual.flag)
        response.response = 0x00  // command completed at target
        response.status = result.status.rawValue
        response.initiatorTaskTag = command.tag
        self.stamp(&response)
        response.dataSequenceNumber = command.readExpected ? dataInCount : command.r2tSequence  // ExpDataSN
        response.residualCount = UInt32(residual.count)
        if !result.sense.isEmpty {
            response.data = BigEndian.bytes(UInt64(result.sense.count), 2) + result.sense
        }
        self.send(response)
    }

    /// Overflow or underflow of `transferred` against the initiator's `expected`.
    static func residual(transferred: Int, expected: Int) -> (flag: UInt8, count: Int) {
        if transferred > expected { return (PDU.Flag.residualOverflow, transferred - expected) }
        if transferred < expected { return (PDU.Flag.residualUnderflow, expected - transferred) }
        return (0, 0)
    }

    /// Sends `payload` as Data-In PDUs; the last carries `final`'s status and residual when
    /// given. Returns how many were sent (the ExpDataSN of a SCSI Response that follows).
    private mutating func sendDataIn(
        _ payload: [UInt8], command: PendingCommand, final: (status: UInt8, residual: (flag: UInt8, count: Int))?
    ) -> UInt32 {
        let segment = max(512, self.parameters.initiatorMaxReceiveDataLength)
        var dataInCount: UInt32 = 0
        var offset = 0
        while offset < payload.count {
            let count = min(segment, payload.count - offset)
            let last = offset + count == payload.count
            var pdu = PDU(.dataIn, flags: 0)
            let burstBoundary = (offset + count) % self.parameters.maxBurstLength == 0
            if last || burstBoundary { pdu.flags |= PDU.Flag.final }
            pdu.lun = command.lun
            pdu.initiatorTaskTag = command.tag
            pdu.targetTransferTag = PDU.reservedTag
            pdu.dataSequenceNumber = dataInCount
            dataInCount += 1
            pdu.bufferOffset = UInt32(offset)
            if last, let final {
                pdu.flags |= PDU.Flag.status | final.residual.flag
                pdu.status = final.status
                self.stamp(&pdu)
                pdu.residualCount = UInt32(final.residual.count)
            } else {
                pdu.expectedCommandSequenceNumber = self.expectedCommand
                pdu.maxCommandSequenceNumber = self.maxCommand
            }
            self.send(pdu, data: payload[offset..<offset + count])
            offset += count
        }
        return dataInCount
    }
}
