// One iSCSI connection (one session: MaxConnections=1), as NIO glue: it frames PDUs, runs the
// login through `Login`, then hands every full-feature PDU to the `ISCSISession` state machine
// and carries out what it returns: PDUs to write, commands to execute, the connection to close.
//
// Execution: a small READ (its `CommandTable` entry's `InlineRule`) is answered on the event loop
// when the engine can serve it without waiting (`Waiting.never`: try-locks, tree nodes in memory,
// data in the page cache); every other command, and a READ that would wait, runs on the
// target's thread pool (the engine blocks on disk I/O), and its reply goes out when it
// completes. Writes never run on the event loop: nothing proves a buffered write cannot wait
// (ext4 refuses RWF_NOWAIT for buffered writes). READs and WRITEs decoded in one pass go to the
// pool in at most `lanes` work items, each run in order on one thread, whose results come back
// in one hop: at depth 32 that saves two thread wake-ups per command (as NBD does). Setting up
// takes the pool's locks too (target lookup, CHAP settings, opening the logical unit; the target
// list of SendTargets): each login PDU, and each Text Request's target list, is handled on the
// workers with decoding paused until it returns. The connection stops reading while the socket
// is not writable or too many commands (or command bytes) are running; the session bounds the
// write data it buffers.

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
    /// A login step or a target listing is running on the workers: nothing more is decoded
    /// until it returns.
    var setupRunning = false
    var unit: LogicalUnit?
    /// The full feature phase, from the final login response on.
    var session: ISCSISession?
    var outputClosed = false
    /// Commands of this pass for the thread pool, not sent yet (`dispatchPending`).
    var pending: [CommandExecution] = []
    /// Work items the READs and WRITEs of one pass are split into, so they still run in parallel.
    static let lanes = 4

    init(target: ISCSITarget) {
        self.target = target
        self.logger = target.logger
        self.phase = .login(Login(environment: target))
    }

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
        if let session = self.session {
            self.target.closeSession(session.tsih)
            self.unit?.nexusLost(session.nexus, session: session.tsih)
        }
        self.session?.connectionLost()
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

    /// Whether another command may start: few enough running, and few enough bytes coming back.
    /// (Read through optional chaining: `guard let` would copy the whole session each call.)
    private var hasRoom: Bool {
        (self.session?.running ?? 0) < Self.runningMax && (self.session?.runningBytes ?? 0) < Self.runningBytesMax
    }

    private func readMore(context: ChannelHandlerContext) {
        guard !self.reading, !self.setupRunning, context.channel.isActive, context.channel.isWritable, self.hasRoom
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
        guard case .loggingOut = self.phase, (self.session?.running ?? 0) == 0 else { return }
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

    /// Decodes and carries out every PDU the buffer holds, as far as limits allow, then sends
    /// the commands this left for the thread pool.
    private func process(context: ChannelHandlerContext) {
        self.processPDUs(context: context)
        self.dispatchPending(context: context)
    }

    private func processPDUs(context: ChannelHandlerContext) {
        while context.channel.isWritable {
            switch self.phase {
            case .login, .fullFeature: break
            default: return
            }
            guard self.hasRoom, !self.setupRunning else { return }
            let pdu: PDU
            do {
                guard let next = try PDUFramer.decode(&self.cumulation, settings: self.framing) else { return }
                pdu = next
            } catch {
                self.framingFailed(error, context: context)
                return
            }
            switch self.phase {
            case .login(let login):
                self.runLoginStep(login, pdu, context: context)
            case .fullFeature where pdu.opcode == .textRequest:
                let target = self.target
                self.offLoop({ TargetList(target.targetObjects()) }, context: context) { list, context in
                    self.session?.directory = list
                    guard let actions = self.session?.receive(pdu) else { return }
                    self.apply(actions, context: context)
                }
            case .fullFeature:
                guard let actions = self.session?.receive(pdu) else { return }
                self.apply(actions, context: context)
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
                if let actions = self.session?.reject(header: header, reason: .protocolError) {
                    self.apply(actions, context: context)
                }
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
            if case .fullFeature = self.phase, let actions = self.session?.reject(header: header, reason: .dataDigestError) {
                self.apply(actions, context: context)
            }
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

    /// Runs `work` on the workers with decoding paused, then `then` on the event loop, then goes
    /// on decoding. Workers that refuse it (shutting down) close the connection.
    private func offLoop<T: Sendable>(
        _ work: @escaping @Sendable () -> T, context: ChannelHandlerContext,
        then: @escaping (T, ChannelHandlerContext) -> Void
    ) {
        self.setupRunning = true
        let bound = NIOLoopBound((context, then), eventLoop: context.eventLoop)
        self.target.workers.run(on: context.eventLoop, work).whenComplete { result in
            let (context, then) = bound.value
            self.setupRunning = false
            switch result {
            case .success(let value):
                then(value, context)
            case .failure(let error):
                self.logger.error("closing iSCSI connection: the engine workers refused work: \(error)")
                self.shutdown(context: context)
            }
            self.process(context: context)
            context.flush()
            self.readMore(context: context)
        }
    }

    // MARK: Login

    /// Handles one login PDU on the workers: the step, and for a final step of a Normal
    /// session the logical unit it opens.
    private func runLoginStep(_ login: Login, _ pdu: PDU, context: ChannelHandlerContext) {
        let target = self.target
        self.offLoop(
            { () -> (Login, Login.Step, Result<LogicalUnit, StrataError>?) in
                var login = login
                let step = login.handle(pdu)
                guard case .complete(_, let parameters) = step, login.requestedTSIH == 0,
                    parameters.sessionType == .normal, let object = login.object
                else { return (login, step, nil) }
                return (login, step, Result { () throws(StrataError) in try target.unit(for: object) })
            }, context: context
        ) { outcome, context in
            guard case .login = self.phase else { return }
            let (login, step, unit) = outcome
            self.phase = .login(login)
            self.loginStep(step, login: login, unit: unit, context: context)
        }
    }

    /// Carries out a login step; `unit` is the logical unit a completed Normal login opened.
    private func loginStep(
        _ step: Login.Step, login: Login, unit: Result<LogicalUnit, StrataError>?, context: ChannelHandlerContext
    ) {
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
                guard let object = login.object, let unit else { return }
                switch unit {
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
            // The I_T nexus: initiator name and ISID (RFC 7143 §4.4.1), as `name,i,0x<ISID>`.
            let nexus = "\(parameters.initiatorName),i," + Chap.encode(login.initiatorSessionID)
            let tsih = self.target.openSession(nexus: nexus, channel: context.channel)
            self.unit?.nexusJoined(nexus, session: tsih)
            pdu.tsih = tsih
            // The target list is fetched afresh for each Text Request (`processPDUs`).
            self.session = ISCSISession(
                parameters: parameters, tsih: tsih, nexus: nexus, unit: self.unit, directory: TargetList([]),
                portal: Self.portalAddress(context.channel.localAddress),
                statusSequence: login.statusSequenceNumber, expectedCommand: pdu.expectedCommandSequenceNumber,
                logger: self.logger)
            self.loginTimer?.cancel()
            self.send(pdu, context: context)
            context.flush()
            // Digests apply from the first PDU after the final login response.
            self.framing = FramingSettings(
                headerDigest: parameters.headerDigest, dataDigest: parameters.dataDigest,
                maxReceiveDataLength: TargetLimits.maxReceiveDataLength)
            self.phase = .fullFeature
            self.logger.info(
                "iSCSI session \(tsih) of \(parameters.initiatorName) logged in to \(parameters.targetName ?? "discovery")")
        }
    }

    static func portalAddress(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "127.0.0.1:3260" }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }

    // MARK: Carrying out the session's actions

    private func apply(_ actions: [ISCSISession.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let pdu, let data):
                // After the connection closed nothing is answered (the session still counts).
                if case .closed = self.phase { continue }
                self.send(pdu, data: data, context: context)
            case .execute(let execution):
                self.execute(execution, context: context)
            case .close:
                if case .closed = self.phase { continue }
                self.shutdown(context: context)
            }
        }
    }

    /// Runs a command on the event loop if it can without waiting; else leaves it for the
    /// thread pool (`dispatchPending`, at the end of the pass).
    private func execute(_ execution: CommandExecution, context: ChannelHandlerContext) {
        if let result = execution.runWithoutWaiting() {
            if let actions = self.session?.complete(execution.tag, result: result) {
                self.apply(actions, context: context)
            }
            return
        }
        self.pending.append(execution)
    }

    /// Sends the pass's commands to the workers: READs and WRITEs in at most `lanes` work
    /// items, each run in order on one thread (`CommandSpec.batches`), every other command in
    /// one of its own; each work item's results reach the session in one hop.
    private func dispatchPending(context: ChannelHandlerContext) {
        guard !self.pending.isEmpty else { return }
        let batch = self.pending
        self.pending.removeAll(keepingCapacity: true)
        var batched: [CommandExecution] = []
        var items: [[CommandExecution]] = []
        for execution in batch {
            if execution.batches {
                batched.append(execution)
            } else {
                items.append([execution])
            }
        }
        items += batched.dealt(into: Self.lanes)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        for executions in items {
            let future = self.target.workers.run(on: context.eventLoop) {
                // Taps (a mirror's legs) may finish the item's writes together, before any status goes out.
                TapScope.run { executions.map { $0.run() } }
            }
            future.whenComplete { outcome in
                let context = bound.value
                let results: [SCSIResult]
                switch outcome {
                case .success(let values): results = values
                case .failure: results = Array(repeating: .check(.hardwareError), count: executions.count)
                }
                for (execution, result) in zip(executions, results) {
                    if let actions = self.session?.complete(execution.tag, result: result) {
                        self.apply(actions, context: context)
                    }
                }
                // Called from outside `process`: go on reading.
                context.flush()
                self.closeIfIdle(context: context)
                if case .fullFeature = self.phase {
                    self.process(context: context)
                    context.flush()
                    self.readMore(context: context)
                } else {
                    self.dispatchPending(context: context)
                }
            }
        }
    }
}
