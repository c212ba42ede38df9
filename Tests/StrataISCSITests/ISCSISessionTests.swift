// The full feature phase state machine, driven directly with PDUs and command results (no
// sockets): the CmdSN window's edges, R2T sequences across MaxBurstLength, Data-Out errors,
// Data-In splitting with the status in the last PDU, task management (ABORT TASK, LOGICAL UNIT
// RESET, TARGET COLD RESET) and SendTargets.

import Logging
import StrataCore
import StrataTesting
import Testing

@testable import StrataISCSI

struct FakeDirectory: SendTargetsDirectory {
    func targetObjects() -> [String] { ["vm1", "vm1@s1"] }
    func object(forTargetName name: String) -> String? { name == TargetNames.targetName(for: "vm1") ? "vm1" : nil }
}

/// A directory whose pool fails every lookup with an engine error.
struct FailingDirectory: SendTargetsDirectory {
    func targetObjects() -> [String] { [] }
    func object(forTargetName name: String) throws(StrataError) -> String? {
        throw StrataError(.io, "open \(name): read failed (errno=5)")
    }
}

/// A SCSI Command PDU: CmdSN, tag, CDB, Expected Data Transfer Length, R/W and immediate data.
func scsiCommand(
    tag: UInt32, sequence: UInt32, cdb: [UInt8], expectedLength: Int, read: Bool = false, write: Bool = false,
    data: [UInt8] = [], lun: UInt64 = 0
) -> PDU {
    var pdu = PDU(.scsiCommand, flags: PDU.Flag.final | (read ? PDU.Flag.read : 0) | (write ? PDU.Flag.write : 0))
    pdu.lun = lun
    pdu.initiatorTaskTag = tag
    pdu.set(UInt32(expectedLength), at: 20)
    pdu.set(sequence, at: 24)
    for (index, byte) in cdb.enumerated() { pdu.header[32 + index] = byte }
    pdu.data = data
    return pdu
}

func dataOut(tag: UInt32, transferTag: UInt32, sequence: UInt32, offset: Int, data: [UInt8], final: Bool) -> PDU {
    var pdu = PDU(.dataOut, flags: final ? PDU.Flag.final : 0)
    pdu.initiatorTaskTag = tag
    pdu.targetTransferTag = transferTag
    pdu.dataSequenceNumber = sequence
    pdu.bufferOffset = UInt32(offset)
    pdu.data = data
    return pdu
}

func nopOut(tag: UInt32, sequence: UInt32, immediate: Bool = false) -> PDU {
    var pdu = PDU(.nopOut)
    if immediate { pdu.header[0] |= 0x40 }
    pdu.initiatorTaskTag = tag
    pdu.targetTransferTag = PDU.reservedTag
    pdu.set(sequence, at: 24)
    return pdu
}

func taskManagement(
    _ function: TaskManagementFunction, tag: UInt32, sequence: UInt32, referenced: UInt32 = PDU.reservedTag,
    referencedSequence: UInt32 = 0, lun: UInt64 = 0
) -> PDU {
    var pdu = PDU(.taskManagementRequest, flags: PDU.Flag.final | function.rawValue)
    pdu.header[0] |= 0x40  // immediate, as initiators send them
    pdu.lun = lun
    pdu.initiatorTaskTag = tag
    pdu.set(referenced, at: 20)
    pdu.set(sequence, at: 24)
    pdu.set(referencedSequence, at: 32)
    return pdu
}

/// The PDUs among `actions`, with the data segment each carries.
func sent(_ actions: [ISCSISession.Action]) -> [(pdu: PDU, data: [UInt8])] {
    actions.compactMap {
        if case .send(let pdu, let data) = $0 { return (pdu, data.map(Array.init) ?? pdu.data) }
        return nil
    }
}

func executions(_ actions: [ISCSISession.Action]) -> [CommandExecution] {
    actions.compactMap {
        if case .execute(let execution) = $0 { return execution }
        return nil
    }
}

func closes(_ actions: [ISCSISession.Action]) -> Bool {
    actions.contains { if case .close = $0 { return true } else { return false } }
}

@Suite("iSCSI session state machine")
struct ISCSISessionTests {
    let unit: LogicalUnit
    static let testUnitReady: [UInt8] = [0x00, 0, 0, 0, 0, 0]

    init() throws {
        self.unit = try makeTestUnit()
    }

    func session(
        expectedCommand: UInt32 = 10, directory: any SendTargetsDirectory = FakeDirectory(), unit: LogicalUnit? = nil,
        configure: (inout SessionParameters) -> Void = { _ in }
    ) -> ISCSISession {
        var parameters = SessionParameters()
        parameters.initiatorName = "iqn.2026-11.org.example:host"
        configure(&parameters)
        return ISCSISession(
            parameters: parameters, tsih: 1, nexus: "iqn.2026-11.org.example:host,i,0x800000000001", unit: unit ?? self.unit,
            directory: directory, portal: "127.0.0.1:3260", statusSequence: 500,
            expectedCommand: expectedCommand, logger: Logger(label: "test"))
    }

    /// Sends WRITE(10) of 8 blocks with no immediate data at CmdSN 10; returns its first R2T.
    static func startWrite(tag: UInt32, on session: inout ISCSISession) throws -> PDU {
        let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0] as [UInt8]
        let actions = session.receive(scsiCommand(tag: tag, sequence: 10, cdb: write, expectedLength: 4096, write: true))
        let r2t = try #require(sent(actions).first?.pdu)
        #expect(r2t.opcode == .readyToTransfer)
        return r2t
    }

    // MARK: CmdSN window

    @Test func theWindowTakesExactlyExpCmdSNThroughMaxCmdSN() {
        var session = self.session()
        #expect(session.maxCommand == 10 + TargetLimits.commandWindow - 1)
        // Just below and just above the window: ignored silently, nothing changes.
        #expect(session.receive(nopOut(tag: 1, sequence: 9)).isEmpty)
        #expect(session.receive(nopOut(tag: 2, sequence: session.maxCommand &+ 1)).isEmpty)
        // The window's far edge and one ahead of ExpCmdSN wait.
        #expect(session.receive(nopOut(tag: 3, sequence: session.maxCommand)).isEmpty)
        #expect(session.receive(nopOut(tag: 4, sequence: 11)).isEmpty)
        #expect(session.expectedCommand == 10)
        // ExpCmdSN arrives: it and the held 11 run, in order; the far edge still waits.
        let answers = sent(session.receive(nopOut(tag: 5, sequence: 10)))
        #expect(answers.map(\.pdu.initiatorTaskTag) == [5, 4])
        #expect(answers.map(\.pdu.statusSequenceNumber) == [500, 501])
        // Each answer carries the window as it stood when that command ran.
        #expect(answers.map(\.pdu.expectedCommandSequenceNumber) == [11, 12])
        #expect(answers.map(\.pdu.maxCommandSequenceNumber) == [11, 12].map { $0 + TargetLimits.commandWindow - 1 })
        #expect(session.expectedCommand == 12)
        // An immediate command is answered whatever its CmdSN, and does not move the window.
        let immediate = sent(session.receive(nopOut(tag: 6, sequence: 9999, immediate: true)))
        #expect(immediate.map(\.pdu.initiatorTaskTag) == [6])
        #expect(session.expectedCommand == 12)
    }

    @Test func theWindowWrapsAroundSerialNumberSpace() {
        var session = self.session(expectedCommand: UInt32.max)
        #expect(session.receive(nopOut(tag: 1, sequence: 0)).isEmpty)  // one ahead, across the wrap: held
        #expect(session.receive(nopOut(tag: 2, sequence: UInt32.max - 1)).isEmpty)  // behind: ignored
        let answers = sent(session.receive(nopOut(tag: 3, sequence: UInt32.max)))
        #expect(answers.map(\.pdu.initiatorTaskTag) == [3, 1])
        #expect(session.expectedCommand == 1)
    }

    // MARK: Write data and R2T

    /// WRITE(10) of 20480 bytes with 1024 of immediate data, MaxBurstLength 8192: R2Ts of 8192,
    /// 8192 and 3072 at the right offsets with R2TSN 0, 1, 2, each burst's DataSN from 0, then
    /// the command runs and its response carries ExpDataSN 3. R2Ts do not advance StatSN.
    @Test func r2tSequencesCoverTheDataInMaxBurstLengthPieces() throws {
        var session = self.session { $0.maxBurstLength = 8192 }
        let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 40, 0] as [UInt8]
        let payload = (0..<20480).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var actions = session.receive(
            scsiCommand(tag: 9, sequence: 10, cdb: write, expectedLength: 20480, write: true, data: Array(payload[0..<1024])))
        var offset = 1024
        var bursts: [(UInt32, Int, Int)] = []
        while executions(actions).isEmpty {
            let r2ts = sent(actions).map(\.pdu)
            try #require(r2ts.count == 1)
            let r2t = r2ts[0]
            #expect(r2t.opcode == .readyToTransfer)
            #expect(r2t.statusSequenceNumber == 500)
            #expect(Int(r2t.bufferOffset) == offset)
            let length = Int(r2t.desiredDataTransferLength)
            bursts.append((r2t.dataSequenceNumber, offset, length))
            // Each burst in two Data-Out PDUs (DataSN 0 and 1), the last one final.
            let half = length / 2
            let first = session.receive(
                dataOut(tag: 9, transferTag: r2t.targetTransferTag, sequence: 0, offset: offset,
                        data: Array(payload[offset..<offset + half]), final: false))
            #expect(first.isEmpty)
            actions = session.receive(
                dataOut(tag: 9, transferTag: r2t.targetTransferTag, sequence: 1, offset: offset + half,
                        data: Array(payload[offset + half..<offset + length]), final: true))
            offset += length
        }
        #expect(bursts.map(\.0) == [0, 1, 2])
        #expect(bursts.map(\.1) == [1024, 9216, 17408])
        #expect(bursts.map(\.2) == [8192, 8192, 3072])
        let execution = try #require(executions(actions).first)
        #expect(execution.data == payload)
        #expect(!execution.inline)  // a write never runs on the event loop
        #expect(session.bufferedBytes == 20480)
        let response = try #require(sent(session.complete(9, result: execution.run())).first?.pdu)
        #expect(response.opcode == .scsiResponse)
        #expect(response.status == SCSIStatus.good.rawValue)
        #expect(response.dataSequenceNumber == 3)  // ExpDataSN: the R2Ts sent
        #expect(response.statusSequenceNumber == 500)
        #expect(session.bufferedBytes == 0 && session.running == 0 && session.commandCount == 0)
    }

    /// ErrorRecoveryLevel 0: a Data-Out with the wrong DataSN is rejected and the command ends
    /// in DATA PHASE ERROR; a Data-Out for a Target Transfer Tag not issued is rejected.
    @Test func aDataOutOutOfSequenceEndsTheCommand() throws {
        var session = self.session()
        let r2t = try Self.startWrite(tag: 4, on: &session)
        let wrongTag = sent(session.receive(
            dataOut(tag: 4, transferTag: r2t.targetTransferTag &+ 1, sequence: 0, offset: 0, data: [1], final: false)))
        #expect(wrongTag.map(\.pdu.opcode) == [.reject])
        #expect(wrongTag.first?.pdu.response == RejectReason.invalidPDUField.rawValue)
        let answers = sent(session.receive(
            dataOut(tag: 4, transferTag: r2t.targetTransferTag, sequence: 1, offset: 0,
                    data: [UInt8](repeating: 0, count: 512), final: false)))
        #expect(answers.map(\.pdu.opcode) == [.reject, .scsiResponse])
        #expect(answers[1].pdu.status == SCSIStatus.checkCondition.rawValue)
        #expect(session.commandCount == 0 && session.bufferedBytes == 0)
    }

    // MARK: Data-In

    /// 10000 bytes of GOOD read data with MaxRecvDataSegmentLength 4096 and MaxBurstLength 8192:
    /// three Data-In PDUs (4096, 4096, 1808) with DataSN 0–2, F at the burst boundary and at the
    /// end, and status, residual and StatSN only in the last. No SCSI Response follows.
    @Test func dataInIsSplitWithTheStatusInTheLastPDU() throws {
        var session = self.session {
            $0.initiatorMaxReceiveDataLength = 4096
            $0.maxBurstLength = 8192
        }
        let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 20, 0] as [UInt8]
        let actions = session.receive(scsiCommand(tag: 3, sequence: 10, cdb: read, expectedLength: 10240, read: true))
        let execution = try #require(executions(actions).first)
        let data = (0..<10000).map { UInt8(truncatingIfNeeded: $0) }
        let pieces = sent(session.complete(execution.tag, result: .good(data)))
        #expect(pieces.map(\.pdu.opcode) == [.dataIn, .dataIn, .dataIn])
        #expect(pieces.map(\.data.count) == [4096, 4096, 1808])
        #expect(pieces.map(\.pdu.dataSequenceNumber) == [0, 1, 2])
        #expect(pieces.map(\.pdu.bufferOffset) == [0, 4096, 8192])
        #expect(pieces.map { $0.pdu.final } == [false, true, true])
        #expect(pieces.map { $0.pdu.flags & PDU.Flag.status != 0 } == [false, false, true])
        #expect(pieces.flatMap(\.data) == data)
        let last = pieces[2].pdu
        #expect(last.status == SCSIStatus.good.rawValue)
        #expect(last.flags & PDU.Flag.residualUnderflow != 0)
        #expect(last.residualCount == 240)
        #expect(last.statusSequenceNumber == 500)
        #expect(session.statusSequence == 501)
    }

    /// More data than the initiator expects is cut at EDTL with an overflow residual; a CHECK
    /// CONDITION comes in a SCSI Response with its sense data and no Data-In.
    @Test func overflowIsCutAndFailuresComeAsAResponse() throws {
        var session = self.session()
        let inquiry = [0x12, 0, 0, 0, 36, 0] as [UInt8]
        let first = session.receive(scsiCommand(tag: 1, sequence: 10, cdb: inquiry, expectedLength: 16, read: true))
        let execution = try #require(executions(first).first)
        let pieces = sent(session.complete(execution.tag, result: execution.run()))
        #expect(pieces.count == 1)
        #expect(pieces[0].data.count == 16)
        #expect(pieces[0].pdu.flags & PDU.Flag.residualOverflow != 0)
        #expect(pieces[0].pdu.residualCount == 20)
        let read = [0x28, 0, 0, 0, 0x10, 0, 0, 0, 1, 0] as [UInt8]  // LBA 4096: past the end
        let refused = sent(session.receive(scsiCommand(tag: 2, sequence: 11, cdb: read, expectedLength: 512, read: true)))
        #expect(refused.map(\.pdu.opcode) == [.scsiResponse])
        #expect(refused[0].pdu.status == SCSIStatus.checkCondition.rawValue)
        #expect(refused[0].pdu.flags & PDU.Flag.residualUnderflow != 0)
        #expect(refused[0].pdu.residualCount == 512)
        #expect(refused[0].data.count == 2 + 18)  // sense length, then fixed-format sense
    }

    // MARK: Task management

    /// ABORT TASK of a command still receiving data ends it at once; its later Data-Out is
    /// dropped. ABORT TASK of a running command answers when the engine returns, and the
    /// command's own result is not sent.
    @Test func abortTaskEndsWaitingCommandsAtOnceAndRunningOnesWhenTheyReturn() throws {
        var session = self.session()
        let r2t = try Self.startWrite(tag: 4, on: &session)
        let aborted = sent(session.receive(taskManagement(.abortTask, tag: 50, sequence: 11, referenced: 4)))
        #expect(aborted.map(\.pdu.opcode) == [.taskManagementResponse])
        #expect(aborted[0].pdu.response == TaskManagementResponse.functionComplete.rawValue)
        #expect(session.commandCount == 0)
        #expect(session.receive(
            dataOut(tag: 4, transferTag: r2t.targetTransferTag, sequence: 0, offset: 0,
                    data: [UInt8](repeating: 0, count: 4096), final: true)).isEmpty)

        let running = try #require(
            executions(session.receive(scsiCommand(tag: 5, sequence: 11, cdb: Self.testUnitReady, expectedLength: 0)))
                .first)
        #expect(session.receive(taskManagement(.abortTask, tag: 51, sequence: 12, referenced: 5)).isEmpty)
        let answers = sent(session.complete(running.tag, result: running.run()))
        #expect(answers.map(\.pdu.opcode) == [.taskManagementResponse])
        #expect(answers[0].pdu.initiatorTaskTag == 51)
        #expect(session.running == 0)
    }

    /// A running SANITIZE outlives its command (`CommandSpec.outlivesAbort`): ABORT TASK and
    /// LOGICAL UNIT RESET answer at once instead of waiting minutes for the overwrite, and the
    /// SANITIZE's own answer is dropped when the engine returns. (libiscsi's Sanitize.Reset sends
    /// both while the sanitize runs; an answer that waited would end the sanitize first.)
    @Test func taskManagementDoesNotWaitForARunningSanitize() throws {
        // A 64 KiB volume with room for every block of the overwrite.
        let unit = try UnitFixture(chunk: 4096, dataChunks: 32, volumeSize: 64 << 10).unit
        var session = self.session(unit: unit)
        let list: [UInt8] = [0x01, 0] + BigEndian.bytes(1, 2) + [0xa5]
        let sanitize: [UInt8] = [0x48, 0x01, 0, 0, 0, 0, 0] + BigEndian.bytes(UInt64(list.count), 2) + [0]
        let running = try #require(
            executions(session.receive(
                scsiCommand(tag: 8, sequence: 10, cdb: sanitize, expectedLength: list.count, write: true, data: list)))
                .first)
        let aborted = sent(session.receive(taskManagement(.abortTask, tag: 80, sequence: 11, referenced: 8)))
        #expect(aborted.map(\.pdu.initiatorTaskTag) == [80])
        #expect(aborted.first?.pdu.response == TaskManagementResponse.functionComplete.rawValue)
        let reset = sent(session.receive(taskManagement(.logicalUnitReset, tag: 81, sequence: 11)))
        #expect(reset.map(\.pdu.initiatorTaskTag) == [81])
        #expect(session.running == 1, "the sanitize still runs")

        let result = running.run()
        #expect(result.status == .good)
        #expect(sent(session.complete(running.tag, result: result)).isEmpty, "an aborted SANITIZE is not answered")
        #expect(session.running == 0)
        #expect(session.commandCount == 0)
        // The overwrite finished all the same: every block holds the pattern.
        let read = unit.execute(CDB([0x28, 0, 0, 0, 0, 0, 0, 0, 128, 0]), data: [], nexus: "iqn.x,i,0x1")
        #expect(read.data == [UInt8](repeating: 0xa5, count: 64 << 10))
    }

    /// RFC 7143 §11.5.1: ABORT TASK naming a command that never arrived, with a RefCmdSN inside
    /// the window and before the TMF's, counts it as received and aborted (the window moves
    /// on); naming one outside the window answers "task does not exist".
    @Test func abortTaskOfACommandThatNeverArrived() {
        var session = self.session()
        let missing = sent(session.receive(
            taskManagement(.abortTask, tag: 60, sequence: 11, referenced: 77, referencedSequence: 10)))
        #expect(missing.first?.pdu.response == TaskManagementResponse.functionComplete.rawValue)
        #expect(session.expectedCommand == 11)
        let gone = sent(session.receive(
            taskManagement(.abortTask, tag: 61, sequence: 11, referenced: 78, referencedSequence: 3)))
        #expect(gone.first?.pdu.response == TaskManagementResponse.taskDoesNotExist.rawValue)
    }

    /// LOGICAL UNIT RESET aborts everything (held commands too) and answers after the running
    /// ones return; on a LUN that does not exist it answers so. TARGET COLD RESET closes.
    @Test func resetsAbortEverythingAndColdResetCloses() throws {
        var session = self.session()
        let running = try #require(
            executions(session.receive(scsiCommand(tag: 1, sequence: 10, cdb: Self.testUnitReady, expectedLength: 0)))
                .first)
        #expect(session.receive(scsiCommand(tag: 2, sequence: 12, cdb: Self.testUnitReady, expectedLength: 0)).isEmpty)
        let wrongLUN = sent(session.receive(taskManagement(.logicalUnitReset, tag: 70, sequence: 11, lun: 1 << 48)))
        #expect(wrongLUN.first?.pdu.response == TaskManagementResponse.lunDoesNotExist.rawValue)
        #expect(session.receive(taskManagement(.logicalUnitReset, tag: 71, sequence: 11)).isEmpty)
        let answers = sent(session.complete(running.tag, result: running.run()))
        #expect(answers.map(\.pdu.initiatorTaskTag) == [71])
        #expect(answers[0].pdu.response == TaskManagementResponse.functionComplete.rawValue)
        // The held command (CmdSN 12) went with the reset: 11 arriving now runs alone.
        let next = session.receive(scsiCommand(tag: 3, sequence: 11, cdb: Self.testUnitReady, expectedLength: 0))
        #expect(executions(next).map(\.tag) == [3])
        _ = session.complete(3, result: .good())

        let cold = session.receive(taskManagement(.targetColdReset, tag: 72, sequence: 12))
        #expect(sent(cold).first?.pdu.response == TaskManagementResponse.functionComplete.rawValue)
        #expect(closes(cold))
        let reassign = sent(session.receive(taskManagement(.taskReassign, tag: 73, sequence: 12)))
        #expect(reassign.first?.pdu.response == TaskManagementResponse.taskAllegianceReassignmentNotSupported.rawValue)
    }

    // MARK: SendTargets

    /// SendTargets=NAME when the lookup fails with an engine error: the Text Response (which has
    /// no status) lists nothing, and the session goes on (the error is logged, not hidden as
    /// "no such target" by a `try?`).
    /// Sends Text SendTargets=`value` at CmdSN 10; the keys of the (final) Text Response.
    func sendTargets(_ value: String, session: inout ISCSISession) throws -> TextKeys {
        var request = PDU(.textRequest)
        request.initiatorTaskTag = 8
        request.targetTransferTag = PDU.reservedTag
        request.set(UInt32(10), at: 24)
        request.data = TextKeys([("SendTargets", value)]).bytes
        let answer = try #require(sent(session.receive(request)).first)
        #expect(answer.pdu.opcode == .textResponse)
        #expect(answer.pdu.final)
        return try #require(TextKeys.parse(answer.data))
    }

    @Test func sendTargetsOfATargetWhoseLookupFailsListsNothing() throws {
        var session = self.session(directory: FailingDirectory())
        let keys = try self.sendTargets("iqn.2026-11.org.strata:vm1", session: &session)
        #expect(keys.pairs.filter { $0.0 == "TargetName" }.isEmpty)
    }

    @Test func sendTargetsListsTargetsAtThePortal() throws {
        var session = self.session()
        let keys = try self.sendTargets("All", session: &session)
        #expect(keys.pairs.filter { $0.0 == "TargetName" }.map(\.1) == ["iqn.2026-11.org.strata:vm1", "iqn.2026-11.org.strata:vm1:s1"])
        #expect(keys.pairs.filter { $0.0 == "TargetAddress" }.map(\.1) == ["127.0.0.1:3260,1", "127.0.0.1:3260,1"])
    }
}
