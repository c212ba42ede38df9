// The source side of daemon-to-daemon replication: one job per replicated volume, each a child
// task of `run` (the daemon runs it as a service in its group). A cycle takes a snapshot
// `repl-<time>` (unless the newest one has not reached the replica yet), asks the replica what
// it holds, and sends the delta from the newest snapshot both sides share (a full stream the
// first time; the rest of a staged receive when one was interrupted), then keeps the newest N
// replicated snapshots on both sides. A failed cycle is retried with exponential backoff (1 s
// doubling to `backoffSecondsMax`) and resumes where the replica's staging stopped, so killing
// either daemon costs at most the unfinished chunk.
//
// Connections go through a `Transport` (SwiftNIO in the daemon, the simulated network in tests);
// engine work (snapshots, listing, the stream itself) runs on a thread pool, and a stream's bytes
// reach the connection through a bounded `BytePipe`. Stopping a job cancels its task: a wait
// between cycles ends, a transfer's connection and pipe fail, and the engine's send stops at its
// next write.
//
// Jobs persist in `replication.json` in the pool directory (mode 0600; it names the secret
// file, not the secret) and restart with the daemon.

import Foundation
import Logging
import NIOCore
import StrataCore
import StrataFrontEnd
import Synchronization

/// A replication job as `replicate start` defines it.
public struct ReplicationJob: Codable, Sendable, Equatable {
    public var volume: String
    public var host: String
    public var port: Int
    public var everySeconds: Double
    public var keep: Int
    public var secretFile: String
    /// A bound on the bytes per second the job sends; nil sends as fast as the link takes them.
    /// (Absent from jobs saved before the bound existed, which then have none.)
    public var rateBytesPerSecond: UInt64?

    public init(
        volume: String, host: String, port: Int, everySeconds: Double, keep: Int, secretFile: String,
        rateBytesPerSecond: UInt64? = nil
    ) {
        self.volume = volume
        self.host = host
        self.port = port
        self.everySeconds = everySeconds
        self.keep = keep
        self.secretFile = secretFile
        self.rateBytesPerSecond = rateBytesPerSecond
    }

    /// Refuses a job no daemon can run (from a control client or a hand-edited jobs file).
    public func validate() throws(StrataError) {
        let what = "replicate \(self.volume)"
        guard self.everySeconds.isFinite && self.everySeconds > 0 else {
            throw StrataError(.invalidArgument, "\(what): the time between cycles must be a positive number of seconds")
        }
        guard self.keep >= 1 else { throw StrataError(.invalidArgument, "\(what): keep at least 1 snapshot") }
        guard (1...65535).contains(self.port) else {
            throw StrataError(.invalidArgument, "\(what): port \(self.port) is not a TCP port (1-65535)")
        }
        if let rate = self.rateBytesPerSecond, rate == 0 {
            throw StrataError(.invalidArgument, "\(what): a rate bound must be positive; leave it out to send at full speed")
        }
    }
}

/// One job's state, for `replicate status`.
public struct ReplicationStatus: Codable, Sendable, Equatable {
    public var volume: String
    public var peer: String
    public var state: String = "starting"
    public var lastReplicated: String?
    public var lastReplicatedAt: String?
    /// Seconds between the last replicated snapshot's creation and now.
    public var lagSeconds: Double?
    public var bytesSent: UInt64 = 0
    public var cycles: UInt64 = 0
    public var errors: UInt64 = 0
    public var lastError: String?
    /// The transfer in progress: bytes done and total.
    public var transferDone: UInt64 = 0
    public var transferTotal: UInt64 = 0
    /// The job's bound on its sending rate, bytes per second; nil when it has none.
    public var rateLimitBytesPerSecond: UInt64?
    var lastReplicatedNanos: Int64?
}

public final class Replicator: Sendable {
    public static let fileName = "replication.json"
    public static let snapshotPrefix = "repl-"

    let pool: Pool
    let directory: String
    let transport: any Transport
    let workers: any EngineWorkers
    let logger: Logger
    let jobs = Mutex<[String: JobRunner]>([:])
    /// Bounds the streams the jobs send at once (each holds one of the `workers`).
    let transfers = AsyncLimiter(permits: Limits.replicationTransfersMax)
    /// Jobs to start: `launch` yields them, `run` starts each as a child task.
    let launches: AsyncStream<JobRunner>
    let launcher: AsyncStream<JobRunner>.Continuation

    /// - Parameters:
    ///   - transport: how to reach replicas.
    ///   - workers: where engine work runs (it blocks: snapshots, flushes, streams).
    public init(pool: Pool, directory: String, transport: any Transport, workers: any EngineWorkers, logger: Logger) {
        self.pool = pool
        self.directory = directory
        self.transport = transport
        self.workers = workers
        self.logger = logger
        (self.launches, self.launcher) = AsyncStream.makeStream(of: JobRunner.self)
    }

    /// Runs every job (each a child task) until `close`; returns once every job has stopped.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await runner in self.launches {
                group.addTask { await runner.run() }
            }
        }
    }

    /// Stops every job (at daemon shutdown; they resume at the next start) and takes no new
    /// ones; `run` returns once they have stopped. Does not block.
    public func close() {
        let runners = self.jobs.withLock { jobs in
            self.launcher.finish()
            defer { jobs.removeAll() }
            return Array(jobs.values)
        }
        for runner in runners { runner.requestStop() }
    }

    /// Queues the jobs saved in the pool directory (they start when `run` runs). The daemon calls
    /// it before it accepts requests, so a saved job never races a `replicate start`.
    public func resumeSavedJobs() {
        guard let data = FileManager.default.contents(atPath: self.path),
            let saved = try? JSONDecoder().decode([ReplicationJob].self, from: data)
        else { return }
        for job in saved {
            do throws(StrataError) {
                try self.launch(job)
            } catch {
                self.logger.warning("replicate \(job.volume): \(error.message)")
            }
        }
    }

    var path: String { self.directory + "/" + Self.fileName }

    /// Starts (or replaces) the job for `job.volume` and saves it. Blocks until a job it replaces
    /// has stopped: call it from a thread that may wait (the control socket's thread pool).
    public func start(_ job: ReplicationJob) throws(StrataError) {
        _ = try self.pool.handle(job.volume)
        _ = try ReplicationWire.readSecret(job.secretFile)
        self.stop(job.volume, save: false)
        try self.launch(job)
        try self.save()
    }

    /// Stops the job for `volume` (its transfer is cut; the replica keeps what it staged) and
    /// waits for it to end. Blocks: call it from a thread that may wait.
    public func stop(_ volume: String, save: Bool = true) {
        let runner = self.jobs.withLock { $0.removeValue(forKey: volume) }
        runner?.stop()
        if save { _ = Result { () throws(StrataError) in try self.save() } }
    }

    public func status() -> [ReplicationStatus] {
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        return self.jobs.withLock { $0.values.map { $0.status.withLock { $0 } } }
            .map { status in
                var status = status
                if let nanos = status.lastReplicatedNanos { status.lagSeconds = Double(now - nanos) / 1e9 }
                return status
            }
            .sorted { $0.volume < $1.volume }
    }

    private func launch(_ job: ReplicationJob) throws(StrataError) {
        try job.validate()
        let runner = JobRunner(
            job: job, pool: self.pool, transport: self.transport, workers: self.workers,
            transfers: self.transfers, logger: self.logger)
        // Registered and yielded under one lock, so `close` either sees the job or refuses it.
        let launched = self.jobs.withLock { jobs in
            guard case .enqueued = self.launcher.yield(runner) else { return false }
            // A job it replaces stops; `run` still awaits its task.
            jobs.updateValue(runner, forKey: job.volume)?.requestStop()
            return true
        }
        guard launched else { throw StrataError(.busy, "replicate \(job.volume): the daemon is shutting down") }
    }

    private func save() throws(StrataError) {
        let jobs = self.jobs.withLock { $0.values.map(\.job) }.sorted { $0.volume < $1.volume }
        try AtomicFile.writeJSON(jobs, to: self.path, operation: "replicate: save jobs")
    }
}

/// One job's task: cycles on schedule, retries with backoff.
final class JobRunner: Sendable {
    let job: ReplicationJob
    let pool: Pool
    let transport: any Transport
    let workers: any EngineWorkers
    let transfers: AsyncLimiter
    let logger: Logger
    let status: Mutex<ReplicationStatus>
    /// Whether `run` has begun, and whether a stop was asked: one lock, so a stop either waits
    /// for a running job or finds it not yet started (and `run` then returns at once).
    let life = Mutex((started: false, stopping: false))
    /// Finished by `requestStop`: `run` then cancels the cycles.
    let stopRequests: AsyncStream<Void>
    let stopper: AsyncStream<Void>.Continuation
    let finished = DispatchSemaphore(value: 0)

    var address: TransportAddress { TransportAddress(host: self.job.host, port: self.job.port) }

    init(
        job: ReplicationJob, pool: Pool, transport: any Transport, workers: any EngineWorkers, transfers: AsyncLimiter,
        logger: Logger
    ) {
        self.job = job
        self.pool = pool
        self.transport = transport
        self.workers = workers
        self.transfers = transfers
        self.logger = logger
        var status = ReplicationStatus(volume: job.volume, peer: "\(job.host):\(job.port)")
        status.rateLimitBytesPerSecond = job.rateBytesPerSecond
        self.status = Mutex(status)
        (self.stopRequests, self.stopper) = AsyncStream.makeStream(of: Void.self)
    }

    /// Asks the job to stop: cancels its cycles (and so its transfer). Does not wait.
    /// - Returns: whether the job had started (and so will signal `finished`).
    @discardableResult
    func requestStop() -> Bool {
        let started = self.life.withLock { life in
            life.stopping = true
            return life.started
        }
        self.stopper.finish()
        return started
    }

    /// Stops the job and waits for it to end. Blocks.
    func stop() {
        if self.requestStop() { self.finished.wait() }
    }

    /// Cycles until stopped (a child task of the replicator's `run`).
    func run() async {
        let stopped = self.life.withLock { life in
            life.started = true
            return life.stopping
        }
        defer { self.finished.signal() }
        guard !stopped else { return }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.cycles() }
            for await _ in self.stopRequests {}
            group.cancelAll()
        }
    }

    private func cycles() async {
        var failures = 0
        while !Task.isCancelled {
            var delay = self.job.everySeconds
            do throws(StrataError) {
                try await self.cycle()
                failures = 0
                self.status.withLock {
                    $0.state = "idle"
                    $0.cycles += 1
                    $0.lastError = nil
                }
            } catch {
                if Task.isCancelled { break }
                failures += 1
                delay = min(pow(2.0, Double(failures - 1)), Limits.replicationBackoffSecondsMax)
                self.logger.warning("replicate \(self.job.volume): \(error.message); retrying in \(delay) s")
                self.status.withLock {
                    $0.state = "retrying"
                    $0.errors += 1
                    $0.lastError = error.message
                }
            }
            // Cancellation (a stop) ends the wait early; the loop then ends.
            try? await Task.sleep(for: .seconds(delay))
        }
    }

    /// One cycle: snapshot if needed, then send until the replica holds the newest snapshot.
    private func cycle() async throws(StrataError) {
        let secret = try ReplicationWire.readSecret(self.job.secretFile)
        var replica = try await self.replicaState(secret: secret)
        let replicaGUIDs = Set(replica.snapshots.map(\.guid))
        let (pool, volume) = (self.pool, self.job.volume)
        try await self.workers.engine { () throws(StrataError) in
            let ours = try pool.listSnapshots(of: volume).filter { $0.name.hasPrefix(Replicator.snapshotPrefix) }
            if ours.last.map({ replicaGUIDs.contains($0.guid) }) ?? true {
                try pool.createSnapshot(volume, Self.snapshotName())
                try pool.flush()
            }
        }
        // At most a resumed stream and then the newest: two sends bring the replica up to date.
        for _ in 0..<3 {
            guard try await self.sendNext(replica: replica, secret: secret) else { break }
            replica = try await self.replicaState(secret: secret)
        }
        let held = Set(replica.snapshots.map(\.guid))
        let all = try await self.workers.engine { () throws(StrataError) in try pool.listSnapshots(of: volume) }
        if let last = all.last(where: { held.contains($0.guid) }) {
            let nanos = Int64((ISO8601DateFormatter.strata.date(from: last.createdAt)?.timeIntervalSince1970 ?? 0) * 1e9)
            self.status.withLock {
                $0.lastReplicated = "\(volume)@\(last.name)"
                $0.lastReplicatedAt = last.createdAt
                $0.lastReplicatedNanos = nanos
            }
        }
        try await self.prune(secret: secret)
    }

    private func replicaState(secret: [UInt8]) async throws(StrataError) -> ReplicaState {
        guard let state = try await self.request(.state(volume: self.job.volume), secret: secret).state else {
            throw StrataError(.io, "replicate: the peer sent no state")
        }
        return state
    }

    /// Sends the next stream the replica needs; false when it holds the newest snapshot.
    private func sendNext(replica: ReplicaState, secret: [UInt8]) async throws(StrataError) -> Bool {
        let (pool, volume) = (self.pool, self.job.volume)
        let all = try await self.workers.engine { () throws(StrataError) in try pool.listSnapshots(of: volume) }
        guard let newest = all.last(where: { $0.name.hasPrefix(Replicator.snapshotPrefix) }) else { return false }
        let held = Set(replica.snapshots.map(\.guid))
        if held.contains(newest.guid) { return false }
        let base = all.last(where: { held.contains($0.guid) && $0.name.hasPrefix(Replicator.snapshotPrefix) })
        if replica.exists && base == nil {
            throw StrataError(
                .invalidArgument,
                "replicate \(volume): the replica shares no snapshot with this volume; delete the replica's copy to start over")
        }
        var target = newest
        var token: String?
        if let staged = replica.resumeToken,
            let parsed = Result(catching: { () throws(StrataError) in try ResumeToken(parsing: staged, operation: "replicate") }).get2(),
            let stagedTarget = all.first(where: { $0.guid == parsed.target.description }),
            parsed.base.description == (base?.guid ?? StrataGUID.zero.description) || (base == nil && parsed.base.isZero)
        {
            target = stagedTarget
            token = staged
        }
        let request = SendRequest(
            snapshot: "\(volume)@\(target.name)", base: base.map { "\(volume)@\($0.name)" }, resumeToken: token)
        let summary = try await self.transfer(request, secret: secret)
        self.logger.info("replicate \(volume)@\(target.name): sent \(summary.streamBytes) bytes to \(self.address)")
        return true
    }

    /// Sends one stream: the engine writes it into a pipe on the thread pool while a child task
    /// drains the pipe into the connection; then the replica's answer.
    private func transfer(_ request: SendRequest, secret: [UInt8]) async throws(StrataError) -> SendSummary {
        // Taken before connecting, so a stream that waits for its turn holds no connection the
        // replica would time out.
        do {
            try await self.transfers.acquire()
        } catch {
            throw StrataError(.failed, "replicate \(self.job.volume): stopped while waiting for a transfer slot")
        }
        defer { self.transfers.release() }
        let summary = try await self.transport.withConnection(to: self.address) { connection async throws(StrataError) in
            let reader = try await self.open(connection, secret: secret)
            try await self.write(Self.line(.receive(volume: self.job.volume)), to: connection, reader: reader)
            self.status.withLock { $0.state = "sending" }
            let pipe = BytePipe(capacity: Limits.replicationPipeBytes)
            let sent = await withDiscardingTaskGroup(returning: Result<SendSummary, StrataError>.self) { group in
                group.addTask { try? await pipe.drain(to: connection, rateBytesPerSecond: self.job.rateBytesPerSecond) }
                return await self.workers.result { () throws(StrataError) in
                    do throws(StrataError) {
                        let summary = try StreamSender.send(pool: self.pool, request, to: pipe) { done, total in
                            self.status.withLock {
                                $0.transferDone = done
                                $0.transferTotal = total
                            }
                        }
                        pipe.finish()
                        return summary
                    } catch {
                        pipe.fail(error)
                        throw error
                    }
                }
            }
            // The replica's answer explains a failed send (it stops reading when it refuses).
            _ = try await self.readReply(reader)
            return try sent.get()
        }
        self.status.withLock { $0.bytesSent += summary.streamBytes }
        return summary
    }

    private func prune(secret: [UInt8]) async throws(StrataError) {
        let (pool, volume, keep) = (self.pool, self.job.volume, self.job.keep)
        _ = try await self.request(.prune(volume: volume, prefix: Replicator.snapshotPrefix, keep: keep), secret: secret)
        try await self.workers.engine { () throws(StrataError) in
            try ReplicationServer.prune(pool, volume, prefix: Replicator.snapshotPrefix, keep: keep)
        }
    }

    /// A request without a stream; throws the replica's error.
    private func request(_ request: ReplicationRequest, secret: [UInt8]) async throws(StrataError) -> ReplicationReply {
        try await self.transport.withConnection(to: self.address) { connection async throws(StrataError) in
            let reader = try await self.open(connection, secret: secret)
            try await self.write(Self.line(request), to: connection, reader: reader)
            return try await self.readReply(reader)
        }
    }

    /// Writes the request after the authentication answer. A replica that refused the answer
    /// sends its reason and closes, which can fail this write before the reason is read: then
    /// the reason, when it arrived, is the error, not the broken connection.
    private func write(_ bytes: [UInt8], to connection: any TransportConnection, reader: TransportReader)
        async throws(StrataError)
    {
        do throws(StrataError) {
            try await connection.write(bytes)
        } catch {
            do throws(StrataError) {
                _ = try await self.readReply(reader)
            } catch let refusal where refusal.code != .io {
                // The replica's own error (a wrong secret is `.unauthorized`).
                throw refusal
            } catch {
                // No readable reason: the connection broke before it, or the peer sent none.
            }
            throw error
        }
    }

    /// Answers the replica's greeting and challenge; returns the reader for the rest.
    private func open(_ connection: any TransportConnection, secret: [UInt8]) async throws(StrataError) -> TransportReader {
        if self.life.withLock({ $0.stopping }) { throw StrataError(.io, "replicate \(self.job.volume): stopping") }
        let reader = TransportReader(connection)
        let hello = try await reader.read(
            count: ReplicationWire.greeting.count + ReplicationWire.challengeBytes, what: "its greeting")
        guard Array(hello.prefix(ReplicationWire.greeting.count)) == ReplicationWire.greeting else {
            throw StrataError(.invalidArgument, "replicate: \(self.address) is not a Strata replication port")
        }
        let challenge = Array(hello.suffix(ReplicationWire.challengeBytes))
        try await connection.write(ReplicationWire.answer(challenge, secret: secret))
        return reader
    }

    static func line(_ request: ReplicationRequest) throws(StrataError) -> [UInt8] {
        guard var data = try? JSONEncoder().encode(request) else { throw StrataError(.invalidArgument, "replicate: bad request") }
        data.append(UInt8(ascii: "\n"))
        return Array(data)
    }

    /// The replica's answer line; its error, if it sent one, is thrown.
    private func readReply(_ reader: TransportReader) async throws(StrataError) -> ReplicationReply {
        let line = try await reader.readLine(limit: 1 << 20, what: "its reply")
        guard let reply = try? JSONDecoder().decode(ReplicationReply.self, from: Data(line)) else {
            throw StrataError(.io, "replicate: unreadable reply from \(self.address)")
        }
        if let error = reply.error { throw StrataError(StrataError.Code(rawValue: reply.errorCode ?? "") ?? .io, error) }
        return reply
    }

    static func snapshotName() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        return Replicator.snapshotPrefix + formatter.string(from: Date())
    }
}

extension Result {
    /// The success value, or nil.
    func get2() -> Success? {
        if case .success(let value) = self { return value }
        return nil
    }
}

extension ISO8601DateFormatter {
    /// Parses the timestamps `snapshot list` prints.
    static var strata: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
