// One NBD connection: negotiation through `NBDNegotiation`, then the transmission phase.
//
// Requests run on a thread pool (the engine blocks on disk I/O and must never run on the event
// loop); their replies are written as each completes, in any order (proto.md allows it). The
// exception is a READ the engine can serve without waiting (mapping in memory, data in the page
// cache, no lock held against it: `Waiting.never`), which the event loop answers at once and
// flushes with the others decoded in the same pass. Negotiation options run on the thread pool
// too, one at a time with the connection paused (they look exports up in the pool, which takes
// its locks): a handful per connection, so the hop costs nothing a client would notice. A
// request counts as in flight from decoding until its reply has been written to the socket,
// and the connection keeps at most `inflightRequestsMax` requests and `inflightBytesMax` bytes
// in flight; past either, or while the socket is not writable (a client that does not read its
// replies), it stops reading from the socket. So a client can never make the daemon buffer
// more than about those limits for it, in negotiation or in transmission.
//
// TLS (proto.md "TLS support"): after STARTTLS's ACK is written in clear text, an
// `NIOSSLServerHandler` goes in front of this handler before another byte is read, so all that
// follows, the TLS handshake first, passes through it; this handler then sees plain bytes as
// before. Bytes a client sent after STARTTLS without waiting for the ACK would have been clear
// text taken for TLS-protected (the STARTTLS injection attack): the connection is closed instead.

import Logging
import NIOCore
import NIOPosix
import NIOSSL
import StrataCore
import StrataFrontEnd

final class NBDConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: all state is touched on the channel's event loop only.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    static let inflightRequestsMax = 64
    static let inflightBytesMax = 64 << 20
    static let handshakeSeconds: Int64 = 60
    static let drainSeconds: Int64 = 10

    enum Phase {
        case clientFlags
        case negotiating
        case transmission(NBDExport)
        /// Finishing: requests in flight complete and are answered; new ones get ESHUTDOWN.
        case draining(structured: Bool)
        case closed
    }

    let pool: Pool
    let catalog: any NBDExportCatalog
    let workers: any EngineWorkers
    let registry: ConnectionRegistry
    let tls: NBDTLS?
    var logger: Logger
    var phase = Phase.clientFlags
    var negotiation: NBDNegotiation
    var cumulation = ByteBuffer()
    var inflight = 0
    var inflightBytes = 0
    /// Negotiation reply bytes not yet on the socket; options wait while this is high.
    var negotiationBytesPending = 0
    static let negotiationBytesMax = 256 << 10
    var processing = false
    var outputClosed = false
    /// Requests decoded in this pass, with their byte cost, not yet sent to the thread pool.
    var pending: [(NBDRequest, Int)] = []
    /// Work items a batch is split into, so large requests still run in parallel.
    static let lanes = 4
    var processAgain = false
    /// The transmission phase's executor, made when an export is chosen.
    var executor: NBDRequestExecutor?
    /// Replies written on the event loop in this pass, not yet flushed.
    var unflushed = false
    var reading = false
    /// An option is being handled on the thread pool: nothing more is decoded until it returns.
    var optionRunning = false
    var handshakeTimer: Scheduled<Void>?
    var context: ChannelHandlerContext?

    init(
        pool: Pool, catalog: any NBDExportCatalog, workers: any EngineWorkers, registry: ConnectionRegistry, tls: NBDTLS?,
        logger: Logger
    ) {
        self.pool = pool
        self.catalog = catalog
        self.workers = workers
        self.registry = registry
        self.tls = tls
        self.negotiation = NBDNegotiation(tls: tls?.mode ?? .off)
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        self.logger[metadataKey: "peer"] = "\(context.remoteAddress?.description ?? "?")"
        self.registry.add(context.channel, protocolName: "nbd")
        var greeting = context.channel.allocator.buffer(capacity: 18)
        NBDWire.writeGreeting(into: &greeting)
        context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(greeting)), promise: nil)
        self.handshakeTimer = context.eventLoop.scheduleTask(in: .seconds(Self.handshakeSeconds)) { [weak self] in
            guard let self, let context = self.context else { return }
            if case .transmission = self.phase { return }
            self.logger.info("closing NBD connection: no export chosen within \(Self.handshakeSeconds) s")
            context.close(promise: nil)
        }
        self.readMore(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.phase = .closed
        self.handshakeTimer?.cancel()
        self.registry.remove(context.channel)
        self.context = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.cumulation.cumulate(self.unwrapInboundIn(data))
        self.reading = false
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.process(context: context)
        self.readMore(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.process(context: context)
            self.readMore(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            switch self.phase {
            case .transmission:
                // proto.md: finish what is in flight, answer new requests with ESHUTDOWN.
                self.phase = .draining(structured: self.negotiation.structuredReplies)
                self.closeIfDrained(context: context)
                // A client that keeps sending is cut off after a grace period.
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .seconds(Self.drainSeconds)) { bound.value.close(promise: nil) }
            case .closed:
                return
            default:
                self.phase = .closed
                context.close(promise: nil)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case NIOSSLError.uncleanShutdown = error {
            // A client that closes TCP without TLS's close_notify (qemu does): nothing was lost
            // that the client had not given up on.
            self.logger.debug("NBD connection closed without a TLS close_notify")
        } else if error is NIOSSLError || error is BoringSSLError {
            // A refused handshake (wrong CA, no or wrong client certificate, unknown PSK) is
            // worth a line in the log: it is how an operator finds a misconfigured client.
            self.logger.notice("closing NBD connection: TLS failed: \(error)")
        } else {
            self.logger.debug("NBD connection error: \(error)")
        }
        context.close(promise: nil)
    }

    private var canAcceptMore: Bool {
        self.inflight < Self.inflightRequestsMax && self.inflightBytes < Self.inflightBytesMax
    }

    private func readMore(context: ChannelHandlerContext) {
        guard !self.reading, context.channel.isActive, context.channel.isWritable else { return }
        switch self.phase {
        case .closed: return
        case .negotiating where self.negotiationBytesPending >= Self.negotiationBytesMax || self.optionRunning: return
        case .transmission where !self.canAcceptMore: return
        default: break
        }
        self.reading = true
        context.read()
    }

    /// Decodes and handles every complete message the buffer holds, as far as limits allow.
    /// Re-entrant calls (a write that completes at once calls back in) only ask the running
    /// loop to go round again, so a flood of small messages never deepens the stack.
    private func process(context: ChannelHandlerContext) {
        // A closing channel fails its pending writes, and each failure lands here: whatever is
        // still buffered will never be answered, so it is not decoded.
        guard context.channel.isActive else { return }
        if self.processing {
            self.processAgain = true
            return
        }
        self.processing = true
        defer { self.processing = false }
        repeat {
            self.processAgain = false
            self.processOnce(context: context)
        } while self.processAgain && context.channel.isActive
        self.dispatchPending(context: context)
        if self.unflushed {
            self.unflushed = false
            context.flush()
        }
    }

    private func processOnce(context: ChannelHandlerContext) {
        do {
            loop: while true {
                switch self.phase {
                case .clientFlags:
                    guard let flags = try NBDWire.decodeClientFlags(&self.cumulation) else { break loop }
                    self.negotiation.clientFlags(flags)
                    self.phase = .negotiating
                case .negotiating:
                    // Replies the client is not reading stop the negotiation until it does; an
                    // option on the workers (`optionRunning`, set by `negotiate`) stops it until
                    // its outcome is carried out.
                    guard !self.optionRunning, context.channel.isWritable,
                        self.negotiationBytesPending < Self.negotiationBytesMax,
                        let option = try NBDWire.decodeOption(&self.cumulation)
                    else {
                        break loop
                    }
                    self.negotiate(option, context: context)
                case .transmission(let export):
                    guard self.canAcceptMore, context.channel.isWritable,
                        let request = try NBDWire.decodeRequest(&self.cumulation)
                    else { break loop }
                    self.enqueue(request, export: export, context: context)
                case .draining(let structured):
                    // Keep reading so the client's queued requests are answered, not reset.
                    guard context.channel.isWritable, let request = try NBDWire.decodeRequest(&self.cumulation) else {
                        break loop
                    }
                    if request.type == NBD.Command.disconnect.rawValue { continue }
                    var reply = context.channel.allocator.buffer(capacity: 64)
                    let message = "the server is shutting down"
                    if structured {
                        NBDWire.writeErrorChunk(into: &reply, cookie: request.cookie, error: .shutdown, message: message)
                    } else {
                        NBDWire.writeSimpleReply(into: &reply, error: .shutdown, cookie: request.cookie)
                    }
                    context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(reply)), promise: nil)
                case .closed:
                    break loop
                }
            }
        } catch {
            self.logger.info("closing NBD connection: \(error)")
            self.phase = .closed
            context.close(promise: nil)
        }
        // Payloads handed out are slices of this buffer: drop it rather than compact it in place
        // (which would copy), and move the start of an incomplete request into a buffer of its
        // own before the next read is appended (ByteBuffer+Cumulate.swift says why). A large
        // consumed prefix ahead of complete requests is worth reclaiming.
        if self.cumulation.readableBytes == 0 {
            self.cumulation = ByteBuffer()
        } else {
            switch self.phase {
            case .transmission, .draining:
                self.cumulation.keepUnparsed(
                    messageBytes: NBDWire.requestBytes(startOf: self.cumulation), allocator: context.channel.allocator)
            case .clientFlags, .negotiating, .closed:
                break
            }
            if self.cumulation.readerIndex > 4 << 20 {
                self.cumulation.discardReadBytes()
            }
        }
    }

    /// Handles `option` on the thread pool, then carries out its outcome here; decoding waits.
    private func negotiate(_ option: NBDOptionRequest, context: ChannelHandlerContext) {
        self.optionRunning = true
        let negotiation = self.negotiation
        let catalog = self.catalog
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.workers.run(on: context.eventLoop) { () -> (NBDNegotiation, NBDNegotiation.Outcome) in
            var negotiation = negotiation
            let outcome = negotiation.handle(option, catalog: catalog)
            return (negotiation, outcome)
        }.whenComplete { result in
            let context = bound.value
            self.optionRunning = false
            guard case .negotiating = self.phase else { return }
            switch result {
            case .success(let (negotiation, outcome)):
                self.negotiation = negotiation
                self.carryOut(outcome, of: option, context: context)
                self.process(context: context)
                self.readMore(context: context)
            case .failure(let error):
                self.logger.error("closing NBD connection: option \(option.option) could not run: \(error)")
                self.phase = .closed
                context.close(promise: nil)
            }
        }
    }

    private func carryOut(_ outcome: NBDNegotiation.Outcome, of option: NBDOptionRequest, context: ChannelHandlerContext) {
        switch outcome {
        case .reply(let bytes, let engineError):
            if let engineError { self.logger.error("NBD option \(option.option) failed: \(engineError.message)") }
            let count = bytes.readableBytes
            self.negotiationBytesPending += count
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(bytes))).whenComplete { result in
                self.negotiationBytesPending -= count
                guard case .success = result else { return }
                let context = bound.value
                self.process(context: context)
                self.readMore(context: context)
            }
        case .start(let bytes, let export):
            context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(bytes)), promise: nil)
            self.handshakeTimer?.cancel()
            self.phase = .transmission(export)
            self.executor = NBDRequestExecutor(
                pool: export.pool ?? self.pool, export: export, structured: self.negotiation.structuredReplies,
                allocationContext: self.negotiation.allocationContext(for: export.name), logger: self.logger)
            self.registry.attach(context.channel, export: export.name, volumeID: export.handle.id)
            self.logger.info("NBD client attached to \(export.name)")
        case .startTLS(let bytes):
            self.startTLS(acknowledgement: bytes, context: context)
        case .close(let bytes, let engineError):
            if let engineError { self.logger.error("NBD option \(option.option) failed: \(engineError.message)") }
            self.phase = .closed
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(bytes))).whenComplete { _ in bound.value.close(promise: nil) }
        }
    }

    /// Sends STARTTLS's ACK in clear text, then puts TLS in front of this handler: the ACK is
    /// already in the channel's outbound buffer, so it leaves before the first TLS byte.
    private func startTLS(acknowledgement: ByteBuffer, context: ChannelHandlerContext) {
        guard let tls = self.tls else { preconditionFailure("STARTTLS acknowledged without a TLS context") }
        guard self.cumulation.readableBytes == 0 else {
            self.logger.notice("closing NBD connection: bytes sent after STARTTLS before its acknowledgement")
            self.phase = .closed
            context.close(promise: nil)
            return
        }
        context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(acknowledgement)), promise: nil)
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context), position: .first)
        } catch {
            self.logger.error("closing NBD connection: cannot start TLS: \(error)")
            self.phase = .closed
            context.close(promise: nil)
            return
        }
        self.negotiation.tlsStarted()
        self.logger.debug("NBD connection upgraded to TLS")
    }

    /// Takes a decoded request into the batch that goes to the thread pool when decoding stops.
    private func enqueue(_ request: NBDRequest, export: NBDExport, context: ChannelHandlerContext) {
        if request.type == NBD.Command.disconnect.rawValue {
            self.dispatchPending(context: context)
            self.phase = .draining(structured: self.negotiation.structuredReplies)
            self.closeIfDrained(context: context)
            return
        }
        // Answered at once when the engine need not wait; its reply goes out with this pass's
        // flush, and a socket that is not writable stops the decoding of more.
        if let reply = self.executor?.executeWithoutWaiting(request, allocator: context.channel.allocator) {
            context.write(self.wrapOutboundOut(.byteBuffer(reply)), promise: nil)
            self.unflushed = true
            return
        }
        let cost = Int(min(request.length, UInt32(NBDWire.requestBytesMax)))
        self.inflight += 1
        self.inflightBytes += cost
        self.pending.append((request, cost))
    }

    /// Sends the decoded requests to the workers in at most `lanes` work items, each run in
    /// order on one thread, whose replies come back in one hop and go out in one flush. At
    /// depth 32 this saves two thread wake-ups per request; at depth 1 it changes nothing.
    private func dispatchPending(context: ChannelHandlerContext) {
        guard !self.pending.isEmpty, case .transmission = self.phase, let executor = self.executor else { return }
        let batch = self.pending
        self.pending.removeAll(keepingCapacity: true)
        let allocator = context.channel.allocator
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        // sendfile writes around TLS, so a TLS connection's replies carry only bytes.
        let sendingFiles = !self.negotiation.tlsActive
        for requests in batch.dealt(into: Self.lanes) {
            let cost = requests.reduce(0) { $0 + $1.1 }
            let work = self.workers.run(on: context.eventLoop) {
                // Taps (a mirror's legs) may finish the lane's writes together, before any reply goes out.
                TapScope.run {
                    requests.map { executor.execute($0.0, allocator: allocator, sendingFiles: sendingFiles) }
                }
            }
            work.whenComplete { result in
                let context = bound.value
                switch result {
                case .success(let replies):
                    if case .closed = self.phase {
                        for reply in replies { reply.close() }
                        self.finished(count: requests.count, cost: cost, context: context)
                        return
                    }
                    let parts = replies.flatMap(\.parts)
                    for part in parts.dropLast() { context.write(self.wrapOutboundOut(part), promise: nil) }
                    // The requests leave flight when their replies are on the socket, not when queued.
                    context.writeAndFlush(self.wrapOutboundOut(parts.last!)).whenComplete { _ in
                        for reply in replies { reply.close() }
                        self.finished(count: requests.count, cost: cost, context: bound.value)
                    }
                case .failure(let error):
                    self.logger.error("NBD requests failed to run: \(error)")
                    self.finished(count: requests.count, cost: cost, context: context)
                    context.close(promise: nil)
                }
            }
        }
    }

    private func finished(count: Int, cost: Int, context: ChannelHandlerContext) {
        self.inflight -= count
        self.inflightBytes -= cost
        switch self.phase {
        case .draining:
            self.closeIfDrained(context: context)
        case .closed:
            return
        default:
            self.process(context: context)
            self.readMore(context: context)
        }
    }

    /// Once nothing is in flight, closes the sending side (every reply is out) and keeps
    /// reading until the client closes, so requests it still had queued are not answered with a
    /// connection reset that would lose the replies already sent.
    private func closeIfDrained(context: ChannelHandlerContext) {
        guard self.inflight == 0, context.channel.isActive, !self.outputClosed else { return }
        self.outputClosed = true
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.close(mode: .output).whenComplete { _ in
            // The client has seen every reply; give it a moment to close its side first.
            bound.value.eventLoop.scheduleTask(in: .seconds(2)) { bound.value.close(promise: nil) }
        }
    }
}
