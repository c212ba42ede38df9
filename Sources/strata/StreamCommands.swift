// `strata send` and `strata receive`: snapshot streams (docs/STREAM.md). With a daemon running,
// the command hands the daemon its stream's descriptor over the stream socket (the daemon holds
// the pool); without one, it opens the pool itself. Either way the work is `PoolService`.

import ArgumentParser
import Foundation
import StrataCore
import StrataReplication
import StrataServer

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with a progress callback that draws a bar labelled `label` (none when nil).
func withProgress<T>(_ label: String?, _ body: (@escaping (UInt64, UInt64) -> Void) throws -> T) rethrows -> T {
    let box = ProgressBox()
    box.progress = label.map { Progress(total: 0, label: $0) }
    defer { box.progress?.finish() }
    return try body { done, total in
        if box.progress?.total != total, let label { box.progress = Progress(total: total, label: label) }
        box.progress?.update(done, force: done == total)
    }
}

/// The bar `withProgress` redraws (replaced when the total changes).
final class ProgressBox {
    var progress: Progress?
}

/// Writes `text` and a newline to standard error.
func printNote(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

struct SendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Write a snapshot as a stream: full, or incremental from a base snapshot.",
        discussion: """
            A full stream carries the snapshot's data; with --from, only the extents that differ \
            from the base. `strata receive` applies it on another pool. The stream goes to \
            standard output (never a terminal) or to -o FILE. Progress and the summary go to \
            standard error; --json prints the summary as JSON (on standard output with -o).
            """)
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@SNAPSHOT to send.") var snapshot: String
    @Option(name: .long, help: "VOLUME@BASE the receiver holds: send only the changes since it.") var from: String?
    @Option(name: .shortAndLong, help: "Write the stream to FILE instead of standard output.") var output: String?
    @Option(help: "Stream format: strata (checksummed, resumable) or rbd-diff (Ceph's rbd diff v1).")
    var format: String = "strata"
    @Option(help: "Resume an interrupted receive from the token it printed.") var resume: String?
    @Flag(help: "Deflate data records where that makes them smaller (strata format).") var compress = false
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard StreamFormatName(rawValue: self.format) != nil else {
            throw ValidationError("invalid --format '\(self.format)'; use strata or rbd-diff")
        }
        guard Names.split(self.snapshot).snapshot != nil else {
            throw ValidationError("name the snapshot to send as VOLUME@SNAPSHOT, such as vm1@monday")
        }
    }

    func run() throws {
        let request = SendRequest(
            snapshot: self.snapshot, base: self.from, resumeToken: self.resume, format: StreamFormatName(rawValue: self.format)!,
            compress: self.compress)
        var fd: Int32 = 1
        if let output = self.output {
            fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                printError("send \(self.snapshot): cannot create \(output) (\(String(cString: strerror(errno))))")
                throw ExitCode(1)
            }
        } else if isatty(1) == 1 {
            printError("send \(self.snapshot): refusing to write a stream to a terminal; redirect standard output or pass -o FILE")
            throw ExitCode(1)
        }
        defer { if fd != 1 { close(fd) } }
        let result: ControlResult
        do {
            result = try self.options.execute(.send(request), stream: fd, progressLabel: "send")
        } catch {
            if let output = self.output { unlink(output) }
            throw error
        }
        guard case .sent(let summary) = result else { return }
        if self.json {
            if self.output != nil { printJSON(summary) } else { printNote(jsonText(summary)) }
        } else {
            printNote(
                "sent \(summary.snapshot)\(self.from.map { " from \($0)" } ?? ""): \(summary.records) records, \(SizeParser.format(summary.dataBytes)) of data, \(summary.streamBytes) stream bytes"
            )
        }
    }
}

struct ReceiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Apply a stream from `strata send` (or `rbd export-diff`) to a volume.",
        discussion: """
            A full stream creates VOLUME and its snapshot; an incremental one needs VOLUME's newest \
            snapshot to be the stream's base and VOLUME unchanged since (--force rolls it back and \
            deletes newer snapshots). The snapshot appears only once the whole stream is verified. \
            An interrupted receive keeps what it applied and prints a resume token for \
            `strata send --resume`; --token prints it again, --abort discards it.
            """)
    @OptionGroup var options: PoolOptions
    @Argument(help: "Target volume.") var volume: String
    @Option(name: .shortAndLong, help: "Read the stream from FILE instead of standard input.") var input: String?
    @Flag(help: "Roll the target back to the stream's base first, deleting newer snapshots.") var force = false
    @Flag(help: "Discard an interrupted receive into VOLUME.") var abort = false
    @Flag(help: "Print the resume token of an interrupted receive into VOLUME.") var token = false
    @Flag(help: "Print the summary as JSON.") var json = false

    func run() throws {
        if self.abort || self.token {
            let request: ControlRequest = self.abort ? .abortReceive(volume: self.volume) : .receiveToken(volume: self.volume)
            let result = try self.options.execute(request)
            if case .token(let token) = result { print(token) } else { print("discarded the interrupted receive into \(self.volume)") }
            return
        }
        var fd: Int32 = 0
        if let input = self.input {
            fd = open(input, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                printError("receive \(self.volume): cannot open \(input) (\(String(cString: strerror(errno))))")
                throw ExitCode(1)
            }
        } else if isatty(0) == 1 {
            printError("receive \(self.volume): standard input is a terminal; pipe a stream in or pass -i FILE")
            throw ExitCode(1)
        }
        defer { if fd != 0 { close(fd) } }
        let result = try self.options.execute(
            .receive(volume: self.volume, force: self.force), stream: fd, progressLabel: "receive")
        guard case .received(let summary) = result else { return }
        if self.json {
            printJSON(summary)
        } else {
            print("received \(summary.snapshot): \(summary.records) records, \(SizeParser.format(summary.dataBytes)) of data")
        }
    }
}

/// A value as one line of JSON.
func jsonText<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
}
