// The mirror's side of a remote leg's connection: one `MirrorLink` per open leg, each a child
// task of `MirrorLinks.run` (the daemon runs it as a service), over the replication transport.
//
// A link connects, answers the leg daemon's challenge as replication does (same secret file, same
// HMAC: ReplicationServer.swift), sends the `mirror` request line and reads the answer line; then
// it is full duplex. Callers (the mirror's writers, each on its own thread, blocking: a
// `MirrorLeg` is synchronous) tag each request with an id, send it on the connection from their
// own thread (`TransportConnection.send`: what several send at once goes in one write, and no
// task wakes to pass it on) and wait for their own answer, which the reader task hands to them
// by id. So the requests of many writers are in flight together and each write costs one round
// trip, not a turn in a queue of stop-and-wait calls. The callers bound what is in flight: one
// request per waiting writer.
//
// Failure. A reset, a timeout (a caller's answer later than the leg's `--timeout`), a protocol
// error or `close` fails the link for good: every caller waiting gets the error, every later call
// fails at once, and the connection is closed. The mirror then counts the leg as degraded and
// opens a new link when it tries the leg again; the leg daemon fences off the old session.

import Dispatch
import Foundation
import NIOCore
import StrataCore
import Synchronization

/// Runs the connections of a daemon's remote mirror legs.
public final class MirrorLinks: Sendable {
    let transport: any Transport
    private let launches: AsyncStream<MirrorLink>
    private let launcher: AsyncStream<MirrorLink>.Continuation
    private let open = Mutex<[ObjectIdentifier: MirrorLink]>([:])

    public init(transport: any Transport) {
        self.transport = transport
        (self.launches, self.launcher) = AsyncStream.makeStream(of: MirrorLink.self)
    }

    /// Runs every link (each a child task) until `close`; returns once every link has ended.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await link in self.launches {
                group.addTask {
                    await link.run(self.transport)
                    _ = self.open.withLock { $0.removeValue(forKey: ObjectIdentifier(link)) }
                }
            }
        }
    }

    /// Takes no new links and closes the open ones; `run` returns once they have ended. Does not block.
    public func close() {
        let links = self.open.withLock { open in
            self.launcher.finish()
            return Array(open.values)
        }
        for link in links { link.close() }
    }

    /// Connects to the leg daemon at `address` and opens the leg's session. Blocks until the
    /// session is open, the leg daemon refuses it, or `timeoutMillis` (0: none) has passed.
    /// - Throws: the leg daemon's refusal (with its code: a wrong secret is `.unauthorized`), or
    ///   `.io` when it cannot be reached in time.
    public func connect(
        to address: TransportAddress, secretFile: String, open: MirrorLegOpen, timeoutMillis: UInt64
    ) throws(StrataError) -> MirrorLink {
        let secret = try ReplicationWire.readSecret(secretFile)
        let link = MirrorLink(address: address, secret: secret, open: open, timeoutMillis: timeoutMillis)
        let queued = self.open.withLock { links -> Bool in
            guard case .enqueued = self.launcher.yield(link) else { return false }
            links[ObjectIdentifier(link)] = link
            return true
        }
        guard queued else { throw StrataError(.busy, "mirror leg \(open.leg) of \(open.volume): the daemon is shutting down") }
        do throws(StrataError) {
            try link.waitOpened()
        } catch {
            link.close()
            throw error
        }
        return link
    }
}

/// One remote leg's connection. See the file's note.
public final class MirrorLink: Sendable {
    public let address: TransportAddress
    let secret: [UInt8]
    let request: MirrorLegOpen
    let timeoutMillis: UInt64

    /// A caller waiting for its answer.
    final class Waiter: Sendable {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<[UInt8], StrataError>?>(nil)

        func finish(_ result: Result<[UInt8], StrataError>) {
            self.result.withLock { $0 = result }
            self.done.signal()
        }
    }

    /// What to do with an answer (or the link's failure).
    public typealias Completion = @Sendable (Result<[UInt8], StrataError>) -> Void

    private struct State {
        var nextID: UInt64 = 1
        var waiting: [UInt64: Completion] = [:]
        var failure: StrataError?
        /// The session's connection, from the leg daemon's answer until the link fails.
        var connection: (any TransportConnection)?
    }
    private let state = Mutex(State())
    private let opened = Waiter()
    private let stops: AsyncStream<Void>
    private let stopper: AsyncStream<Void>.Continuation

    init(address: TransportAddress, secret: [UInt8], open: MirrorLegOpen, timeoutMillis: UInt64) {
        self.address = address
        self.secret = secret
        self.request = open
        self.timeoutMillis = timeoutMillis
        (self.stops, self.stopper) = AsyncStream.makeStream(of: Void.self)
    }

    /// The leg's timeout, milliseconds (0: none).
    public var timeout: UInt64 { self.timeoutMillis }

    public var name: String { "mirror leg \(self.request.leg) of \(self.request.volume) at \(self.address)" }

    /// Connects and serves until the link fails or is closed (a child task of `MirrorLinks.run`).
    func run(_ transport: any Transport) async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                await self.connectAndServe(transport)
                self.stopper.finish()
            }
            for await _ in self.stops {}
            group.cancelAll()
        }
    }

    private func connectAndServe(_ transport: any Transport) async {
        do throws(StrataError) {
            try await transport.withConnection(to: self.address) {
                (connection: any TransportConnection) async throws(StrataError) -> Void in
                let reader = try await self.handshake(connection)
                self.state.withLock { $0.connection = connection }
                self.opened.finish(.success([]))
                let ended = await self.serve(reader)
                throw ended
            }
        } catch {
            self.fail(error)
        }
    }

    /// Answers the challenge, asks for the leg's session and reads the answer line.
    private func handshake(_ connection: any TransportConnection) async throws(StrataError) -> TransportReader {
        let reader = TransportReader(connection)
        let hello = try await reader.read(
            count: ReplicationWire.greeting.count + ReplicationWire.challengeBytes, what: "its greeting")
        guard Array(hello.prefix(ReplicationWire.greeting.count)) == ReplicationWire.greeting else {
            throw StrataError(.invalidArgument, "\(self.name): not a Strata replication port")
        }
        try await connection.write(ReplicationWire.answer(Array(hello.suffix(ReplicationWire.challengeBytes)), secret: self.secret))
        guard var line = try? JSONEncoder().encode(ReplicationRequest.mirror(self.request)) else {
            preconditionFailure("a mirror request of strings and integers did not encode")
        }
        line.append(UInt8(ascii: "\n"))
        try await connection.write(Array(line))
        let answer = try await reader.readLine(limit: Limits.streamRequestBytesMax, what: "its answer")
        guard let reply = try? JSONDecoder().decode(ReplicationReply.self, from: Data(answer)) else {
            throw StrataError(.io, "\(self.name): unreadable answer")
        }
        if let error = reply.error {
            let code = StrataError.Code(rawValue: reply.errorCode ?? "") ?? .io
            let fix = code == .unauthorized ? "; give the leg daemon's --secret-file" : ""
            throw StrataError(code, "\(self.name): the leg daemon refused: \(error)\(fix)")
        }
        return reader
    }

    /// Hands answers to their callers until the connection fails.
    private func serve(_ reader: TransportReader) async -> StrataError {
        var buffer = ByteBuffer()
        while true {
            do throws(StrataError) {
                while let reply = try MirrorReplyMessage.decode(&buffer) { self.deliver(reply) }
                guard var more = try await reader.next() else {
                    return StrataError(.io, "\(self.name): the leg daemon closed the connection")
                }
                buffer.dropDecoded()
                buffer.writeBuffer(&more)
            } catch {
                return error
            }
        }
    }

    private func deliver(_ reply: MirrorReplyMessage) {
        let completion = self.state.withLock { $0.waiting.removeValue(forKey: reply.id) }
        completion?(reply.result)
    }

    /// Fails the link for good: every waiting caller gets `error`, later calls fail at once.
    func fail(_ error: StrataError) {
        let waiters = self.state.withLock { state -> [Completion] in
            if state.failure == nil { state.failure = error }
            state.connection = nil
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        self.opened.finish(.failure(error))
        for waiter in waiters { waiter(.failure(error)) }
        self.stopper.finish()
    }

    /// Closes the link (its session on the leg daemon ends).
    public func close() {
        self.fail(StrataError(.io, "\(self.name): closed"))
    }

    func waitOpened() throws(StrataError) {
        guard self.wait(self.opened) else {
            throw StrataError(
                .io,
                "\(self.name): no answer within \(self.timeoutMillis) ms; is the leg daemon up and reachable? (A leg daemon with --tls-certificates accepts only TLS: this daemon then needs --tls-certificates from the same CA.)"
            )
        }
        _ = try self.opened.result.withLock { $0 }!.get()
    }

    private func wait(_ waiter: Waiter) -> Bool {
        let deadline: DispatchTime = self.timeoutMillis == 0 ? .distantFuture : .now() + .milliseconds(Int(self.timeoutMillis))
        return waiter.done.wait(timeout: deadline) == .success
    }

    /// Sends one request without waiting: `completion` runs with its answer, or with the link's
    /// failure (on the link's task or the failing caller's thread). Nothing blocks, so a writer
    /// can do its own part meanwhile.
    /// - Throws: the link's failure when it has failed already (`completion` then never runs).
    public func send(
        _ operation: MirrorOperation, flags: UInt8 = 0, offset: UInt64 = 0, length: UInt64 = 0, payload: [UInt8] = [],
        completion: @escaping Completion
    ) throws(StrataError) {
        let taken = self.state.withLock { state -> Result<(UInt64, any TransportConnection), StrataError> in
            if let failure = state.failure { return .failure(failure) }
            guard let connection = state.connection else {
                return .failure(StrataError(.io, "\(self.name): the session is not open"))
            }
            let id = state.nextID
            state.nextID += 1
            state.waiting[id] = completion
            return .success((id, connection))
        }
        let (tag, connection) = try taken.get()
        var buffer = ByteBuffer()
        MirrorRequestMessage(id: tag, operation: operation, flags: flags, offset: offset, length: length, payload: payload)
            .encode(into: &buffer)
        connection.send(buffer)
    }

    /// Sends one request and waits for its answer (at most the leg's timeout; a later answer
    /// fails the link).
    /// - Returns: the answer's payload.
    /// - Throws: the leg daemon's error, or the link's failure.
    public func call(
        _ operation: MirrorOperation, flags: UInt8 = 0, offset: UInt64 = 0, length: UInt64 = 0, payload: [UInt8] = []
    ) throws(StrataError) -> [UInt8] {
        let waiter = Waiter()
        try self.send(operation, flags: flags, offset: offset, length: length, payload: payload) { waiter.finish($0) }
        guard self.wait(waiter) else {
            let error = StrataError(
                .io, "\(self.name): no answer to a \(operation) within \(self.timeoutMillis) ms; the leg is degraded until it answers again")
            self.fail(error)
            throw error
        }
        return try waiter.result.withLock { $0 }!.get()
    }
}
