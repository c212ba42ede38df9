import ArgumentParser
import Foundation
import Logging
import StrataCore
import StrataServer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: serve volumes over NBD and answer the other commands.",
        discussion: """
            Creates the pool on first start (sparse, --create-size). Exports every volume read-write
            as VOLUME and every snapshot read-only as VOLUME@SNAPSHOT, e.g. nbd://127.0.0.1:10809/vm1.
            Runs until SIGINT or SIGTERM, then finishes requests in flight, commits and exits 0.
            """)

    @OptionGroup var options: PoolOptions
    @Option(help: "NBD listen address, ADDR:PORT.") var nbd: String = "127.0.0.1:10809"
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"
    @Option(name: .customLong("create-size"), help: "Size of a pool created on first start.")
    var createSize: String = "64G"
    @Option(name: .customLong("commit-interval"), help: "Seconds between timer commits.")
    var commitInterval: Double = 1.0

    func parseAddress() throws -> (String, Int) {
        guard let colon = self.nbd.lastIndex(of: ":"), let port = Int(self.nbd[self.nbd.index(after: colon)...]),
            port > 0, port < 65536
        else {
            throw ValidationError("invalid --nbd '\(self.nbd)'; write ADDR:PORT, such as 127.0.0.1:10809")
        }
        var host = String(self.nbd[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func validate() throws {
        _ = try self.parseAddress()
        _ = try parseSize(self.createSize, option: "--create-size")
        guard Logger.Level(rawValue: self.logLevel) != nil else {
            throw ValidationError("invalid --log-level '\(self.logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
        guard self.commitInterval > 0 else { throw ValidationError("--commit-interval must be positive") }
    }

    func run() throws {
        let (host, port) = try self.parseAddress()
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "strata")
        let options = DaemonOptions(
            directory: self.options.directory, nbdHost: host, nbdPort: port,
            createSize: try parseSize(self.createSize, option: "--create-size"), commitIntervalSeconds: self.commitInterval)
        try failing { () throws(StrataError) in
            do {
                try Daemon.run(options, logger: logger)
            } catch let error as StrataError {
                throw error
            } catch {
                throw StrataError(.io, "serve: \(error)")
            }
        }
    }
}
