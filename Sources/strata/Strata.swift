// The `strata` command line: one executable, one subcommand per verb. Commands only parse,
// call the engine and print; no engine logic lives here. Until the daemon exists, each
// command opens the pool itself under its lock and commits before it exits.

import ArgumentParser
import Foundation
import StrataCore
import StrataServer

@main
struct Strata: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "Thin-provisioned volumes with instant snapshots and clones.",
        discussion: """
            `strata serve` runs the daemon; every other command talks to it through the control \
            socket in the pool directory, or opens the pool itself when no daemon runs. \
            Every command takes --pool DIR; without it, $STRATA_POOL, else ./strata-data. \
            Volumes are named [A-Za-z0-9._-]{1,64}; a snapshot is VOLUME@SNAPSHOT. \
            Sizes are bytes or take a K, M, G or T suffix (powers of 1024).
            """,
        version: Self.version,
        subcommands: [
            SendCommand.self, ReceiveCommand.self, ReplicateCommand.self, MirrorCommand.self,
            ServeCommand.self, PoolCommand.self, VolumeCommand.self, SnapshotCommand.self, CloneCommand.self,
            ImportCommand.self, ExportCommand.self, DiffCommand.self, CheckCommand.self, ConnectionsCommand.self,
            ISCSICommand.self, LayerCommand.self, OverlayCommand.self, RemoteCommand.self, PushCommand.self,
            PullCommand.self,
        ]
    )
}

/// `--pool DIR`, shared by every command.
struct PoolOptions: ParsableArguments {
    @Option(name: .long, help: "Pool directory (default: $STRATA_POOL, else ./strata-data).")
    var pool: String?

    var directory: String {
        if let pool { return pool }
        if let environment = ProcessInfo.processInfo.environment["STRATA_POOL"], !environment.isEmpty {
            return environment
        }
        return "./strata-data"
    }

    /// Runs a request on the running daemon, or on the pool opened here when no daemon runs;
    /// the result is the same either way. `stream` is the descriptor of a `send` or `receive`
    /// stream (-1 for other requests). Engine errors exit 1 with the message.
    func execute(_ request: ControlRequest, stream: Int32 = -1, progressLabel: String? = nil) throws -> ControlResult {
        try withProgress(progressLabel) { report in try self.execute(request, stream: stream, report: report) }
    }

    private func execute(_ request: ControlRequest, stream: Int32, report: @escaping (UInt64, UInt64) -> Void) throws
        -> ControlResult
    {
        try failing { () throws(StrataError) in
            if let client = ControlClient.connect(directory: self.directory, for: request) {
                return try client.send(request, stream: stream, progress: report)
            }
            if request == .check { return .check(try Pool.check(directory: self.directory)) }
            let pool = try Pool.openServing(directory: self.directory, readOnly: request.isReadOnly)
            do throws(StrataError) {
                let result = try PoolService(pool: pool, registry: nil).execute(
                    request, stream: StreamDescriptor(fd: stream), progress: report)
                try pool.close()
                return result
            } catch {
                // Keep what succeeded before the failure durable; the failure is what we report.
                _ = Result { () throws(StrataError) in try pool.close() }
                throw error
            }
        }
    }
}

/// Runs `body`; a `StrataError` is printed as `strata: MESSAGE` on stderr and exits 1.
func failing<T>(_ body: () throws(StrataError) -> T) throws -> T {
    do throws(StrataError) {
        return try body()
    } catch {
        printError(error.message)
        throw ExitCode(1)
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("strata: \(message)\n".utf8))
}

/// Parses a size argument (bytes or K/M/G/T suffix).
func parseSize(_ text: String, option: String) throws -> UInt64 {
    guard let value = SizeParser.parse(text) else {
        throw ValidationError("invalid size '\(text)' for \(option); use bytes or a K, M, G or T suffix, such as 10G")
    }
    return value
}

/// Prints a value as pretty, key-sorted JSON on stdout.
func printJSON<T: Encodable>(_ value: T) {
    let data = (try? ControlJSON.encode(value)) ?? Data("null\n".utf8)
    FileHandle.standardOutput.write(data)
}

/// Prints rows as aligned columns under a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { column, cell in
            column == cells.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}
