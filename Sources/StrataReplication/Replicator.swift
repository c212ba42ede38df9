// The source side of daemon-to-daemon replication: one job per replicated volume, each on a
// thread of its own that `run` starts and awaits (the daemon runs it as a service). A cycle takes a snapshot `repl-<time>` (unless the newest one has not reached the
// replica yet), asks the replica what it holds, and sends the delta from the newest snapshot
// both sides share (a full stream the first time; the rest of a staged receive when one was
// interrupted), then keeps the newest N replicated snapshots on both sides. A failed cycle is
// retried with exponential backoff (1 s doubling to `backoffSecondsMax`) and resumes where the
// replica's staging stopped, so killing either daemon costs at most the unfinished chunk.
//
// Jobs persist in `replication.json` in the pool directory (mode 0600; it names the secret
// file, not the secret) and restart with the daemon.

import Foundation
import Logging
import StrataCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A replication job as `replicate start` defines it.
public struct ReplicationJob: Codable, Sendable, Equatable {
    public var volume: String
    public var host: String
    public var port: Int
    public var everySeconds: Double
    public var keep: Int
    public var secretFile: String

    public init(volume: String, host: String, port: Int, everySeconds: Double, keep: Int, secretFile: String) {
        self.volume = volume
        self.host = host
        self.port = port
        self.everySeconds = everySeconds
        self.keep = keep
        self.secretFile = secretFile
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
    var lastReplicatedNanos: Int64?
}

public final class Replicator: Sendable {
    public static let fileName = "replication.json"
    public static let snapshotPrefix = "repl-"

    let pool: Pool
    let directory: String
    let logger: Logger
    let jobs = Mutex<[String: JobRunner]>([:])
    /// Jobs to start: `launch` yields them, `run` starts each on its own thread.
    let launches: AsyncStream<JobRunner>
    let launcher: AsyncStream<JobRunner>.Continuation

    public init(pool: Pool, directory: String, logger: Logger) {
        self.pool = pool
        self.directory = directory
        self.logger = logger
        (self.launches, self.launcher) = AsyncStream.makeStream(of: JobRunner.self)
    }

    /// Runs every job (each on a thread of its own) until `close`; returns once every job has
    /// stopped.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await runner in self.launches {
                group.addTask {
                    await DedicatedThread.run(name: "strata-replicate-\(runner.job.volume)") { runner.run() }
                }
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

    /// Starts (or replaces) the job for `job.volume` and saves it.
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
        let runner = JobRunner(job: job, pool: self.pool, logger: self.logger)
        // Registered and yielded under one lock, so `close` either sees the job or refuses it.
        let launched = self.jobs.withLock { jobs in
            guard case .enqueued = self.launcher.yield(runner) else { return false }
            // A job it replaces stops; `run` still awaits its thread.
            jobs.updateValue(runner, forKey: job.volume)?.requestStop()
            return true
        }
        guard launched else { throw StrataError(.busy, "replicate \(job.volume): the daemon is shutting down") }
    }

    private func save() throws(StrataError) {
        let jobs = self.jobs.withLock { $0.values.map(\.job) }.sorted { $0.volume < $1.volume }
        let data: Data
        do {
            data = try JSONEncoder().encode(jobs)
        } catch {
            throw StrataError(.io, "replicate: cannot encode the jobs for \(self.path): \(error)")
        }
        try AtomicFile.write(data, to: self.path, operation: "replicate: save jobs")
    }
}

/// One job's thread: cycles on schedule, retries with backoff.
final class JobRunner: Sendable {
    let job: ReplicationJob
    let pool: Pool
    let logger: Logger
    let status: Mutex<ReplicationStatus>
    /// Whether `run` has begun, and whether a stop was asked: one lock, so a stop either waits
    /// for a running job or finds it not yet started (and `run` then returns at once).
    let life = Mutex((started: false, stopping: false))
    let wake = DispatchSemaphore(value: 0)
    /// The socket of the transfer in progress, so `stop` can cut it.
    let socket = Mutex<Int32>(-1)
    let finished = DispatchSemaphore(value: 0)

    init(job: ReplicationJob, pool: Pool, logger: Logger) {
        self.job = job
        self.pool = pool
        self.logger = logger
        self.status = Mutex(ReplicationStatus(volume: job.volume, peer: "\(job.host):\(job.port)"))
    }

    /// Asks the job to stop: cuts its transfer and wakes it. Does not wait.
    /// - Returns: whether the job had started (and so will signal `finished`).
    @discardableResult
    func requestStop() -> Bool {
        let started = self.life.withLock { life in
            life.stopping = true
            return life.started
        }
        let fd = self.socket.withLock { $0 }
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        self.wake.signal()
        return started
    }

    /// Stops the job and waits for it to end.
    func stop() {
        if self.requestStop() { self.finished.wait() }
    }

    var isStopping: Bool { self.life.withLock { $0.stopping } }

    /// Cycles until stopped (on a thread of the replicator's `run`).
    func run() {
        let stopped = self.life.withLock { life in
            life.started = true
            return life.stopping
        }
        defer { self.finished.signal() }
        if !stopped { self.cycles() }
    }

    private func cycles() {
        var failures = 0
        while !self.isStopping {
            let outcome = Result { () throws(StrataError) in try self.cycle() }
            var delay = self.job.everySeconds
            switch outcome {
            case .success:
                failures = 0
                self.status.withLock {
                    $0.state = "idle"
                    $0.cycles += 1
                    $0.lastError = nil
                }
            case .failure(let error):
                if self.isStopping { break }
                failures += 1
                delay = min(pow(2.0, Double(failures - 1)), Limits.replicationBackoffSecondsMax)
                self.logger.warning("replicate \(self.job.volume): \(error.message); retrying in \(delay) s")
                self.status.withLock {
                    $0.state = "retrying"
                    $0.errors += 1
                    $0.lastError = error.message
                }
            }
            _ = self.wake.wait(timeout: .now() + delay)
        }
    }

    /// One cycle: snapshot if needed, then send until the replica holds the newest snapshot.
    private func cycle() throws(StrataError) {
        let secret = try ReplicationWire.readSecret(self.job.secretFile)
        var state = try self.request(.state(volume: self.job.volume), secret: secret).state
        guard var replica = state else { throw StrataError(.io, "replicate: the peer sent no state") }
        let replicaGUIDs = Set(replica.snapshots.map(\.guid))
        let ours = try self.pool.listSnapshots(of: self.job.volume).filter { $0.name.hasPrefix(Replicator.snapshotPrefix) }
        if ours.last.map({ replicaGUIDs.contains($0.guid) }) ?? true {
            try self.pool.createSnapshot(self.job.volume, Self.snapshotName())
            try self.pool.flush()
        }
        // At most a resumed stream and then the newest: two sends bring the replica up to date.
        for _ in 0..<3 {
            guard try self.sendNext(replica: replica, secret: secret) else { break }
            state = try self.request(.state(volume: self.job.volume), secret: secret).state
            guard let next = state else { throw StrataError(.io, "replicate: the peer sent no state") }
            replica = next
        }
        let held = Set(replica.snapshots.map(\.guid))
        if let last = try self.pool.listSnapshots(of: self.job.volume).last(where: { held.contains($0.guid) }) {
            let nanos = Int64((ISO8601DateFormatter.strata.date(from: last.createdAt)?.timeIntervalSince1970 ?? 0) * 1e9)
            self.status.withLock {
                $0.lastReplicated = "\(self.job.volume)@\(last.name)"
                $0.lastReplicatedAt = last.createdAt
                $0.lastReplicatedNanos = nanos
            }
        }
        try self.prune(secret: secret)
    }

    /// Sends the next stream the replica needs; false when it holds the newest snapshot.
    private func sendNext(replica: ReplicaState, secret: [UInt8]) throws(StrataError) -> Bool {
        let volume = self.job.volume
        let all = try self.pool.listSnapshots(of: volume)
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
        let summary = try self.transfer(request, secret: secret)
        self.logger.info("replicate \(volume)@\(target.name): sent \(summary.streamBytes) bytes to \(self.job.host):\(self.job.port)")
        return true
    }

    private func transfer(_ request: SendRequest, secret: [UInt8]) throws(StrataError) -> SendSummary {
        let fd = try self.connect(secret: secret)
        defer { self.disconnect(fd) }
        try self.writeRequest(.receive(volume: self.job.volume), fd: fd)
        self.status.withLock { $0.state = "sending" }
        let output = FileDescriptorStream(fd: fd, name: "replica \(self.job.host):\(self.job.port)")
        let sent = Result { () throws(StrataError) in
            try StreamSender.send(pool: self.pool, request, to: output) { done, total in
                self.status.withLock {
                    $0.transferDone = done
                    $0.transferTotal = total
                }
            }
        }
        // The replica's answer explains a failed send (it stops reading when it refuses).
        let reply = try self.readReply(fd)
        if let error = reply.error { throw StrataError(StrataError.Code(rawValue: reply.errorCode ?? "") ?? .io, error) }
        let summary = try sent.get()
        self.status.withLock { $0.bytesSent += summary.streamBytes }
        return summary
    }

    private func prune(secret: [UInt8]) throws(StrataError) {
        _ = try self.request(
            .prune(volume: self.job.volume, prefix: Replicator.snapshotPrefix, keep: self.job.keep), secret: secret)
        try ReplicationServer.prune(self.pool, self.job.volume, prefix: Replicator.snapshotPrefix, keep: self.job.keep)
    }

    /// A request without a stream; throws the replica's error.
    private func request(_ request: ReplicationRequest, secret: [UInt8]) throws(StrataError) -> ReplicationReply {
        let fd = try self.connect(secret: secret)
        defer { self.disconnect(fd) }
        try self.writeRequest(request, fd: fd)
        let reply = try self.readReply(fd)
        if let error = reply.error { throw StrataError(StrataError.Code(rawValue: reply.errorCode ?? "") ?? .io, error) }
        return reply
    }

    private func connect(secret: [UInt8]) throws(StrataError) -> Int32 {
        if self.isStopping { throw StrataError(.io, "replicate \(self.job.volume): stopping") }
        let fd = try TCPSocket.connect(host: self.job.host, port: self.job.port)
        self.socket.withLock { $0 = fd }
        let greeting = Result { () throws(StrataError) in
            let hello = try TCPSocket.read(fd, count: ReplicationWire.greeting.count + ReplicationWire.challengeBytes, what: "its greeting")
            guard Array(hello.prefix(ReplicationWire.greeting.count)) == ReplicationWire.greeting else {
                throw StrataError(.invalidArgument, "replicate: \(self.job.host):\(self.job.port) is not a Strata replication port")
            }
            let challenge = Array(hello.suffix(ReplicationWire.challengeBytes))
            try TCPSocket.write(fd, ReplicationWire.answer(challenge, secret: secret), what: "the authentication answer")
        }
        if case .failure(let error) = greeting {
            self.disconnect(fd)
            throw error
        }
        return fd
    }

    private func disconnect(_ fd: Int32) {
        self.socket.withLock { $0 = -1 }
        close(fd)
    }

    private func writeRequest(_ request: ReplicationRequest, fd: Int32) throws(StrataError) {
        guard var data = try? JSONEncoder().encode(request) else { throw StrataError(.invalidArgument, "replicate: bad request") }
        data.append(UInt8(ascii: "\n"))
        try TCPSocket.write(fd, Array(data), what: "the request")
    }

    private func readReply(_ fd: Int32) throws(StrataError) -> ReplicationReply {
        let line = try TCPSocket.readLine(fd, what: "its reply")
        guard let reply = try? JSONDecoder().decode(ReplicationReply.self, from: Data(line)) else {
            throw StrataError(.io, "replicate: unreadable reply from \(self.job.host):\(self.job.port)")
        }
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
