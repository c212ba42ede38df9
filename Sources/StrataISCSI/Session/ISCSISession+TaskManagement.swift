// Task management (RFC 7143 §11.5–11.6, SAM-5 §7): ABORT TASK, ABORT TASK SET, CLEAR TASK SET,
// LOGICAL UNIT RESET and TARGET WARM/COLD RESET. Commands still receiving data end at once;
// running ones cannot be stopped inside the engine, so they are marked aborted (their result is
// dropped) and the response waits until the last of them returns, except a command whose
// operation outlives it (`CommandSpec.outlivesAbort`, SANITIZE): the sanitize goes on for
// minutes, by design, and the response does not wait for it. The resets also clear the
// nexus's reservations; TARGET COLD RESET then closes the connection. CLEAR ACA and TASK
// REASSIGN (ErrorRecoveryLevel 2) are not supported.

import StrataCore

extension ISCSISession {
    /// A task management response waiting for running commands.
    struct ManagementWait: Sendable {
        var response: PDU
        var remaining: Int
        /// TARGET COLD RESET: close the connection once answered.
        let closeAfter: Bool
    }

    mutating func taskManagement(_ request: PDU) {
        var response = PDU(.taskManagementResponse)
        response.initiatorTaskTag = request.initiatorTaskTag
        guard self.parameters.sessionType == .normal, let function = TaskManagementFunction(rawValue: request.function)
        else {
            self.answer(response, .functionNotSupported)
            return
        }
        switch function {
        case .abortTask:
            self.abortTask(request, response: response)
        case .abortTaskSet, .clearTaskSet, .logicalUnitReset, .targetWarmReset, .targetColdReset:
            if function.addressesLogicalUnit && request.lun != 0 {
                self.answer(response, .lunDoesNotExist)
                return
            }
            self.held = [:]
            if function.resets { self.unit?.reservations.reset(by: self.nexus) }
            self.abort(Array(self.commands.keys), response: response, closeAfter: function == .targetColdReset)
        case .taskReassign:
            self.answer(response, .taskAllegianceReassignmentNotSupported)
        case .clearACA:
            self.answer(response, .functionNotSupported)
        }
    }

    private mutating func abortTask(_ request: PDU, response: PDU) {
        let referenced = request.referencedTaskTag
        guard self.commands[referenced] == nil else {
            self.abort([referenced], response: response, closeAfter: false)
            return
        }
        // RFC 7143 §11.5.1: a command that never arrived but whose CmdSN is inside the window,
        // before the TMF's, counts as received and aborted; otherwise the task is gone (it
        // completed) or never existed.
        let referencedSequence = request.referencedCommandSequenceNumber
        let missing =
            self.inWindow(referencedSequence)
            && SerialNumber.less(referencedSequence, request.commandSequenceNumber)
        if missing {
            self.held[referencedSequence] = nil
            if referencedSequence == self.expectedCommand {
                self.expectedCommand &+= 1
                self.performHeld()
            }
        }
        self.answer(response, missing ? .functionComplete : .taskDoesNotExist)
    }

    /// Aborts the commands of `tags`: ones still receiving data end now, running ones when the
    /// engine returns; the response goes when none is left.
    private mutating func abort(_ tags: [UInt32], response: PDU, closeAfter: Bool) {
        let wait = self.nextManagementWait
        var remaining = 0
        for tag in tags {
            guard var command = self.commands[tag] else { continue }
            command.aborted = true
            if command.running {
                if CommandTable.spec(for: command.cdb)?.outlivesAbort != true {
                    remaining += 1
                    command.waiters.append(wait)
                }
                self.commands[tag] = command
            } else {
                self.bufferedBytes -= command.data.count
                self.commands[tag] = nil
                self.waitingForR2T.removeAll { $0 == tag }
            }
        }
        guard remaining > 0 else {
            self.answer(response, .functionComplete)
            if closeAfter { self.outbox.append(.close) }
            return
        }
        self.nextManagementWait += 1
        self.managementWaits[wait] = ManagementWait(response: response, remaining: remaining, closeAfter: closeAfter)
    }

    /// One command a task management response waited for has finished.
    mutating func managementWaitEnded(_ wait: Int) {
        guard var waiting = self.managementWaits[wait] else { preconditionFailure("management wait \(wait) unknown") }
        waiting.remaining -= 1
        guard waiting.remaining == 0 else {
            self.managementWaits[wait] = waiting
            return
        }
        self.managementWaits[wait] = nil
        self.answer(waiting.response, .functionComplete)
        if waiting.closeAfter { self.outbox.append(.close) }
    }

    private mutating func answer(_ response: PDU, _ code: TaskManagementResponse) {
        var response = response
        response.response = code.rawValue
        self.stamp(&response)
        self.send(response)
    }
}
