// `strata replicate`: daemon-to-daemon replication jobs (start, stop, status) and failover
// (promote). Jobs run in the source's daemon; the replica's daemon accepts them with
// `strata serve --replication ADDR:PORT --replication-secret-file FILE`.

import ArgumentParser
import Foundation
import StrataCore
import StrataReplication
import StrataServer

struct ReplicateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replicate",
        abstract: "Replicate volumes to another Strata daemon, and fail over to a replica.",
        subcommands: [Start.self, Stop.self, Status.self, Promote.self])

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshot VOLUME and send the delta to a peer now and then every DURATION.",
            discussion: """
                Each cycle takes a snapshot repl-TIME, sends what changed since the last snapshot the \
                replica holds (the whole volume the first time), and keeps the newest --keep \
                replicated snapshots on both sides. A lost connection is retried with backoff and the \
                transfer resumes where the replica stopped. The job survives daemon restarts.
                """)
        @OptionGroup var options: PoolOptions
        @Argument(help: "Volume to replicate.") var volume: String
        @Option(help: "The replica daemon's replication address, HOST:PORT.") var to: String
        @Option(name: .customLong("secret-file"), help: "File holding the secret the replica expects.")
        var secretFile: String
        @Option(help: "Time between cycles: seconds, or with an s, m or h suffix.") var every: String = "60s"
        @Option(help: "Replicated snapshots to keep on each side.") var keep: Int = 3
        @Option(help: "Bound on the rate the job sends at, bytes per second (K, M, G suffixes), such as 50M.")
        var rate: String?

        func validate() throws {
            _ = try ServeCommand.parseAddress(self.to, option: "to", example: "10.0.0.2:10810")
            guard parseDuration(self.every) != nil else {
                throw ValidationError("invalid --every '\(self.every)'; use seconds or a suffix, such as 30s, 5m or 1h")
            }
            guard self.keep >= 1 else { throw ValidationError("--keep must be at least 1") }
            if let rate, try parseSize(rate, option: "--rate") == 0 { throw ValidationError("--rate must be positive") }
        }

        func run() throws {
            let (host, port) = try ServeCommand.parseAddress(self.to, option: "to", example: "10.0.0.2:10810")!
            let job = ReplicationJob(
                volume: self.volume, host: host, port: port, everySeconds: parseDuration(self.every)!, keep: self.keep,
                secretFile: URL(fileURLWithPath: self.secretFile).standardizedFileURL.path,
                rateBytesPerSecond: try self.rate.map { try parseSize($0, option: "--rate") })
            _ = try self.options.execute(.replicateStart(job))
            let bound = job.rateBytesPerSecond.map { ", at most \(SizeParser.format($0))/s" } ?? ""
            print("replicating \(self.volume) to \(self.to) every \(self.every), keeping \(self.keep) snapshots\(bound)")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop replicating VOLUME.")
        @OptionGroup var options: PoolOptions
        @Argument(help: "Volume.") var volume: String

        func run() throws {
            _ = try self.options.execute(.replicateStop(volume: self.volume))
            print("stopped replicating \(self.volume)")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Each job: peer, state, last replicated snapshot, lag, bytes sent, errors.")
        @OptionGroup var options: PoolOptions
        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "Draw a progress bar (bytes, rate, ETA) while a transfer runs, then print the status.")
        var watch = false

        func run() throws {
            if self.watch { try self.watchTransfer() }
            let result = try self.options.execute(.replicateStatus)
            guard case .replication(let jobs) = result else { return }
            if self.json { return printJSON(jobs) }
            printTable(
                ["VOLUME", "PEER", "STATE", "LAST REPLICATED", "LAG", "SENT", "ERRORS", "TRANSFER", "RATE LIMIT"],
                jobs.map { job in
                    [
                        job.volume, job.peer, job.state, job.lastReplicated ?? "-",
                        job.lagSeconds.map { String(format: "%.0fs", $0) } ?? "-", SizeParser.format(job.bytesSent),
                        job.lastError.map { "\(job.errors) (\($0))" } ?? "\(job.errors)",
                        job.state == "sending" ? "\(SizeParser.format(job.transferDone))/\(SizeParser.format(job.transferTotal))" : "-",
                        job.rateLimitBytesPerSecond.map { "\(SizeParser.format($0))/s" } ?? "-",
                    ]
                })
        }

        /// Polls the daemon and draws the transfer in progress until no job is sending.
        private func watchTransfer() throws {
            var bar: Progress?
            while true {
                let result = try self.options.execute(.replicateStatus)
                guard case .replication(let jobs) = result,
                    let job = jobs.first(where: { $0.state == "sending" && $0.transferTotal > 0 })
                else { break }
                if bar?.total != job.transferTotal { bar = Progress(total: job.transferTotal, label: "replicate \(job.volume)") }
                bar?.update(job.transferDone, force: true)
                usleep(200_000)
            }
            bar?.finish()
        }
    }

    struct Promote: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a replica writable (failover); replication into it stops being accepted.")
        @OptionGroup var options: PoolOptions
        @Argument(help: "Replica volume.") var volume: String

        func run() throws {
            _ = try self.options.execute(.promote(volume: self.volume))
            print("promoted \(self.volume): it is writable")
        }
    }
}

/// Parses "90", "30s", "5m", "1h" into seconds.
func parseDuration(_ text: String) -> Double? {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600]
    var body = Substring(text)
    var scale = 1.0
    if let last = body.last, let unit = units[last] {
        scale = unit
        body = body.dropLast()
    }
    guard let value = Double(body), value > 0 else { return nil }
    return value * scale
}
