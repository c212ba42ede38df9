// Text requests in the full feature phase (RFC 7143 §11.10–11.11): SendTargets (Appendix C),
// every other key NotUnderstood. A request may come in several PDUs (the C bit), gathered up to
// `textBytesMax`; an answer longer than the initiator's MaxRecvDataSegmentLength goes in pieces,
// each fetched by a request carrying the Target Transfer Tag of the last.

import StrataCore

extension ISCSISession {
    mutating func text(_ request: PDU) {
        var response = PDU(.textResponse)
        response.initiatorTaskTag = request.initiatorTaskTag
        response.lun = request.lun
        if request.targetTransferTag != PDU.reservedTag {
            // The initiator asks for the rest of a long answer.
            guard let remainder = self.textRemainder, remainder.tag == request.targetTransferTag else {
                self.reject(request.header, reason: .invalidPDUField)
                return
            }
            self.sendText(&response, remainder.bytes)
            return
        }
        self.textPending += request.data
        guard self.textPending.count <= Self.textBytesMax else {
            self.textPending = []
            self.reject(request.header, reason: .outOfResources)
            return
        }
        if request.continues {
            // More text to come (C bit): acknowledge with an empty response.
            response.flags = 0
            response.targetTransferTag = PDU.reservedTag
            self.stamp(&response)
            self.send(response)
            return
        }
        let keys = TextKeys.parse(self.textPending)
        self.textPending = []
        guard let keys else {
            self.reject(request.header, reason: .protocolError)
            return
        }
        var answer = TextKeys()
        for (key, value) in keys.pairs {
            if key == "SendTargets" {
                answer.pairs += self.sendTargets(value).pairs
            } else {
                answer.append(key, "NotUnderstood")
            }
        }
        self.sendText(&response, answer.bytes)
    }

    private mutating func sendText(_ response: inout PDU, _ bytes: [UInt8]) {
        let limit = self.parameters.initiatorMaxReceiveDataLength
        if bytes.count > limit {
            let tag = self.takeTransferTag()
            self.textRemainder = (tag, Array(bytes[limit...]))
            response.flags = PDU.Flag.continue
            response.targetTransferTag = tag
            response.data = Array(bytes[..<limit])
        } else {
            self.textRemainder = nil
            response.flags = PDU.Flag.final
            response.targetTransferTag = PDU.reservedTag
            response.data = bytes
        }
        self.stamp(&response)
        self.send(response)
    }

    /// SendTargets=All lists every target; =NAME that one; empty, the session's own target.
    func sendTargets(_ value: String) -> TextKeys {
        var keys = TextKeys()
        let objects: [String]
        switch value {
        case "All":
            objects = self.directory.targetObjects()
        case "":
            objects = self.unit.map { [$0.handle.name] } ?? []
        default:
            switch Result(catching: { () throws(StrataError) in try self.directory.object(forTargetName: value) }) {
            case .success(let object): objects = object.map { [$0] } ?? []
            case .failure(let error):
                // A Text Response has no status to carry a target error (RFC 7143 §11.11): the
                // answer lists nothing and the log says why.
                self.logger.error("iSCSI SendTargets=\(value): \(error.message)")
                objects = []
            }
        }
        for object in objects {
            keys.append("TargetName", TargetNames.targetName(for: object))
            keys.append("TargetAddress", "\(self.portal),\(TargetLimits.portalGroupTag)")
        }
        return keys
    }
}
