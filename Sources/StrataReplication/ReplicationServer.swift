// The replica side of daemon-to-daemon replication (`strata serve --replication ADDR:PORT`).
//
// Wire protocol, one request per connection (a `Transport`: TCP on SwiftNIO in the daemon, the
// simulated network in tests); the bytes are the same on every transport:
// 1. The server sends `STRATA-REPLICATION 1\n` and a 32-byte random challenge.
// 2. The client answers with HMAC-SHA-256(secret, challenge) (32 bytes) and one JSON line, a
//    `ReplicationRequest`. A wrong answer is refused with an error line and logged.
// 3. `state` is answered with the volume's snapshots and any staged receive; `receive` is
//    followed by a send stream (docs/STREAM.md) which the server applies with `StreamReceiver`
//    into a replica volume (read-only until promoted); `prune` deletes the oldest replicated
//    snapshots beyond a count. Every answer is one JSON line, a `ReplicationReply`.
//    `mirror` opens a remote mirror leg's session: after the answer line the connection carries
//    the leg's binary messages (MirrorWire.swift, ReplicationServer+Mirror.swift).
//
// The secret never crosses the wire, and each challenge is fresh, so a recorded answer cannot be
// replayed. The stream itself is protected by its checksums, not encrypted: run replication over
// a trusted network or a tunnel.

import Crypto
import Foundation
import Logging
import StrataCore
import StrataFrontEnd
import Synchronization

/// What a replication client asks.
public enum ReplicationRequest: Codable, Sendable {
    case state(volume: String)
    case receive(volume: String)
    case prune(volume: String, prefix: String, keep: Int)
    case mirror(MirrorLegOpen)
}

/// A snapshot as replication compares them: by GUID.
public struct ReplicaSnapshot: Codable, Sendable, Equatable {
    public let name: String
    public let guid: String
}

/// What the replica holds of a volume.
public struct ReplicaState: Codable, Sendable {
    public var exists: Bool
    public var isReplica: Bool
    /// Oldest first.
    public var snapshots: [ReplicaSnapshot]
    /// The resume token of an interrupted receive, if one is staged.
    public var resumeToken: String?
}

/// One answer line.
public struct ReplicationReply: Codable, Sendable {
    public var state: ReplicaState?
    public var received: ReceiveSummary?
    public var error: String?
    public var errorCode: String?
}

enum ReplicationWire {
    static let greeting = Array("STRATA-REPLICATION 1\n".utf8)
    static let challengeBytes = 32

    /// The client's answer to a challenge: HMAC-SHA-256(secret, challenge), 32 bytes.
    static func answer(_ challenge: [UInt8], secret: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: challenge, using: SymmetricKey(data: secret)))
    }

    /// Whether `answer` is right for `challenge`, compared in constant time (swift-crypto's
    /// `isValidAuthenticationCode`), so a wrong guess's refusal time tells nothing of the secret.
    static func verify(_ answer: [UInt8], challenge: [UInt8], secret: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(answer, authenticating: challenge, using: SymmetricKey(data: secret))
    }

    /// `reply` as one line. A reply that cannot be encoded goes as an error reply saying so,
    /// never as an empty object the client would take for success.
    static func line(_ reply: ReplicationReply) -> [UInt8] {
        var data: [UInt8]
        do {
            data = Array(try JSONEncoder().encode(reply))
        } catch {
            let failure = ReplicationReply(error: "replication: cannot encode the reply (\(error))", errorCode: "io")
            // Two strings always encode: failing here is a bug in this file, not an input.
            guard let encoded = try? JSONEncoder().encode(failure) else {
                preconditionFailure("replication: an error reply of two strings did not encode")
            }
            data = Array(encoded)
        }
        data.append(UInt8(ascii: "\n"))
        return data
    }

    static func readSecret(_ path: String) throws(StrataError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StrataError(.notFound, "replication: cannot read the secret file \(path)")
        }
        let secret = Array(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard secret.count >= 8 else {
            throw StrataError(.invalidArgument, "replication: the secret in \(path) is shorter than 8 bytes; use a long random one")
        }
        return secret
    }
}

/// Accepts replication from peers that know the secret. `bind` listens on a transport; `run`
/// serves each connection as a child task until `close`, and returns once every connection has
/// ended. Replication requests (state, receive, prune) run at most
/// `Limits.replicationConnectionsMax` at once, later ones waiting their turn; remote mirror
/// legs hold their session's connection for as long as they are open, so they have their own
/// bound (`Limits.mirrorSessionsMax`; one more is refused with the fix) and never take a
/// replication's turn. The listener admits the sum of both. Engine work (reading state,
/// applying a stream, pruning) runs on `workers`; a stream's bytes reach it through a bounded
/// `BytePipe`.
public final class ReplicationServer: Sendable {
    let listener: any TransportListener
    let secret: [UInt8]
    let pool: Pool
    let workers: any EngineWorkers
    let logger: Logger
    /// The copies this daemon holds for remote mirror legs; nil refuses mirror sessions.
    let targets: MirrorLegTargets?
    /// The port listened on (useful when bound to port 0).
    public var port: Int { self.listener.address.port }
    /// Replication requests served at once.
    let transfers = AsyncLimiter(permits: Limits.replicationConnectionsMax)
    /// Mirror leg sessions open now, and the most this daemon serves.
    let mirrorSessions = Mutex(0)
    let mirrorSessionsMax: Int

    private init(
        listener: any TransportListener, secret: [UInt8], pool: Pool, workers: any EngineWorkers, logger: Logger,
        targets: MirrorLegTargets?, mirrorSessionsMax: Int
    ) {
        self.targets = targets
        self.mirrorSessionsMax = mirrorSessionsMax
        self.listener = listener
        self.secret = secret
        self.pool = pool
        self.workers = workers
        self.logger = logger
    }

    /// Listens on `address` through `transport` for replicas into `pool`; `run` serves them.
    /// With `directory` (the pool's), it also holds copies for remote mirror legs, serving at most
    /// `mirrorSessionsMax` of their sessions at once.
    /// - Throws: `.notFound`/`.invalidArgument` for the secret file, `.io` when the port is taken,
    ///   `.corrupt` for an unreadable `mirror-copies.json`.
    public static func bind(
        _ address: TransportAddress, secretFile: String, pool: Pool, transport: any Transport, workers: any EngineWorkers,
        logger: Logger, directory: String? = nil, mirrorSessionsMax: Int = Limits.mirrorSessionsMax
    ) async throws(StrataError) -> ReplicationServer {
        let secret = try ReplicationWire.readSecret(secretFile)
        var targets: MirrorLegTargets?
        if let directory { targets = try MirrorLegTargets(pool: pool, directory: directory) }
        return ReplicationServer(
            listener: try await transport.listen(on: address), secret: secret, pool: pool, workers: workers,
            logger: logger, targets: targets, mirrorSessionsMax: mirrorSessionsMax)
    }

    /// Accepts and serves until `close`; returns when every connection has ended.
    public func run() async {
        await self.listener.serve(limit: Limits.replicationConnectionsMax + self.mirrorSessionsMax) { connection in
            await self.serve(connection)
        }
    }

    /// Stops accepting and cuts every connection (their receives keep what they applied); `run`
    /// returns once they have ended. Does not block.
    public func close() {
        self.listener.close()
    }

    private func serve(_ connection: any TransportConnection) async {
        let peer = connection.peer
        let reader = TransportReader(connection)
        var generator = SystemRandomNumberGenerator()
        let challenge = (0..<ReplicationWire.challengeBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let reply: ReplicationReply
        do throws(StrataError) {
            try await connection.write(ReplicationWire.greeting + challenge)
            let answer = try await reader.read(count: 32, what: "the authentication answer")
            guard ReplicationWire.verify(answer, challenge: challenge, secret: self.secret) else {
                self.logger.warning("replication: refused \(peer): wrong secret")
                throw StrataError(.unauthorized, "replication: authentication failed: wrong secret")
            }
            let line = try await reader.readLine(limit: Limits.streamRequestBytesMax, what: "the request")
            guard let request = try? JSONDecoder().decode(ReplicationRequest.self, from: Data(line)) else {
                throw StrataError(.invalidArgument, "replication: malformed request")
            }
            if case .mirror(let open) = request {
                try self.admitMirrorSession(open)
                defer { self.mirrorSessions.withLock { $0 -= 1 } }
                return await self.serveMirror(open, connection: connection, reader: reader)
            }
            do {
                try await self.transfers.acquire()
            } catch {
                throw StrataError(.io, "replication: the daemon is shutting down")
            }
            defer { self.transfers.release() }
            reply = try await self.execute(request, reader: reader, peer: peer)
        } catch {
            self.logger.warning("replication from \(peer) failed: \(error.message)")
            reply = ReplicationReply(error: error.message, errorCode: error.code.rawValue)
        }
        do throws(StrataError) {
            try await connection.write(ReplicationWire.line(reply))
        } catch {
            self.logger.info("replication: cannot answer \(peer): \(error.message)")
        }
    }

    /// Counts a mirror leg's session in, or refuses it when `mirrorSessionsMax` are open.
    private func admitMirrorSession(_ open: MirrorLegOpen) throws(StrataError) {
        let admitted = self.mirrorSessions.withLock { open -> Bool in
            guard open < self.mirrorSessionsMax else { return false }
            open += 1
            return true
        }
        guard admitted else {
            throw StrataError(
                .busy,
                "mirror leg \(open.leg) of \(open.volume): this daemon already serves \(self.mirrorSessionsMax) mirror leg sessions, its most; put the leg on another daemon, or remove a leg it holds")
        }
    }

    private func execute(_ request: ReplicationRequest, reader: TransportReader, peer: String) async throws(StrataError)
        -> ReplicationReply
    {
        let pool = self.pool
        switch request {
        case .state(let volume):
            return ReplicationReply(state: try await self.workers.engine { () throws(StrataError) in try Self.state(pool, volume) })
        case .receive(let volume):
            let summary = try await self.receive(volume, reader: reader)
            self.logger.info(
                "replication: received \(summary.snapshot) from \(peer) (\(summary.streamBytes) stream bytes, resumed at byte \(summary.resumedFrom))")
            return ReplicationReply(received: summary)
        case .prune(let volume, let prefix, let keep):
            try await self.workers.engine { () throws(StrataError) in try Self.prune(pool, volume, prefix: prefix, keep: keep) }
            return ReplicationReply()
        case .mirror:
            preconditionFailure("a mirror session is served by serveMirror")
        }
    }

    /// Applies the stream that follows the request, on the thread pool, fed by a pipe that reads
    /// the connection only as the receive asks.
    private func receive(_ volume: String, reader: TransportReader) async throws(StrataError) -> ReceiveSummary {
        let pool = self.pool
        let pipe = BytePipe(capacity: Limits.replicationPipeBytes)
        let outcome = await withDiscardingTaskGroup(returning: Result<ReceiveSummary, StrataError>.self) { group in
            group.addTask { await pipe.fill(from: reader) }
            defer { pipe.fail(StrataError(.io, "replication: the receive into \(volume) has ended")) }
            let targets = self.targets
            return await self.workers.result { () throws(StrataError) in
                if targets?.holds(volume) == true {
                    throw StrataError(
                        .busy,
                        "replication into \(volume): the volume here is a mirror leg's copy; replicate into another name or remove that mirror")
                }
                if let found = try? pool.isReplica(volume), !found {
                    throw StrataError(
                        .readOnly,
                        "replication into \(volume): the volume here is not a replication target (promoted, or created locally); delete or rename it to replicate again")
                }
                // Replication owns its staging: a receive of other snapshots left by an older cycle goes.
                return try StreamReceiver.receive(
                    pool: pool, volume: volume, force: true, replica: true, replaceStaging: true, from: pipe)
            }
        }
        return try outcome.get()
    }

    static func state(_ pool: Pool, _ volume: String) throws(StrataError) -> ReplicaState {
        guard (try? pool.isReplica(volume)) != nil else {
            let token = Result { () throws(StrataError) in try StreamReceiver.token(pool: pool, volume: volume) }
            return ReplicaState(exists: false, isReplica: false, snapshots: [], resumeToken: try? token.get())
        }
        let snapshots = try pool.listSnapshots(of: volume).map { ReplicaSnapshot(name: $0.name, guid: $0.guid) }
        let token = Result { () throws(StrataError) in try StreamReceiver.token(pool: pool, volume: volume) }
        return ReplicaState(
            exists: true, isReplica: try pool.isReplica(volume), snapshots: snapshots, resumeToken: try? token.get())
    }

    /// Deletes the oldest snapshots named `prefix…` of `volume` beyond the newest `keep`.
    public static func prune(_ pool: Pool, _ volume: String, prefix: String, keep: Int) throws(StrataError) {
        let replicated = try pool.listSnapshots(of: volume).filter { $0.name.hasPrefix(prefix) }
        for snapshot in replicated.dropLast(max(keep, 1)) { try pool.deleteSnapshot(volume, snapshot.name) }
        try pool.flush()
    }
}
