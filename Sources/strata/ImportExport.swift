// `strata import` and `strata export`: raw images in and out without a network. Import skips
// (or, into an existing volume, trims) every all-zero chunk so the volume stays thin; export
// writes only mapped, non-zero data into a sparse file of the volume's size.

import ArgumentParser
import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    let total: UInt64
    let label: String
    let enabled = isatty(2) == 1
    let start = Date()
    var lastDraw = Date.distantPast

    init(total: UInt64, label: String) {
        self.total = total
        self.label = label
    }

    mutating func update(_ done: UInt64, force: Bool = false) {
        guard self.enabled, force || Date().timeIntervalSince(self.lastDraw) > 0.1 else { return }
        self.lastDraw = Date()
        let fraction = self.total == 0 ? 1 : Double(done) / Double(self.total)
        let width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = max(Date().timeIntervalSince(self.start), 0.001)
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Double(self.total - min(done, self.total)) / rate : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(
            format: "\r%@ [%@] %3.0f%% %@ %@/s ETA %.0fs ", self.label, bar, fraction * 100,
            SizeParser.format(done), SizeParser.format(UInt64(rate)), eta)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard self.enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Copy a raw image file into a volume (all-zero chunks stay unallocated).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Raw image file.") var file: String
    @Argument(help: "Volume name.") var volume: String
    @Flag(help: "Create the volume with the image's size (rounded up to 512 bytes).") var create = false

    func run() throws {
        let path = URL(fileURLWithPath: self.file).standardizedFileURL.path
        guard case .transfer(let summary) = try self.options.execute(
            .importImage(file: path, volume: self.volume, create: self.create), progressLabel: "import")
        else { return }
        print(
            "imported \(self.file) into \(self.volume): \(SizeParser.format(summary.bytesRead)) read, \(SizeParser.format(summary.bytesWritten)) allocated"
        )
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Copy a volume or snapshot into a sparse raw image file.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME or VOLUME@SNAPSHOT") var source: String
    @Argument(help: "Output file (created or replaced).") var file: String

    func run() throws {
        let path = URL(fileURLWithPath: self.file).standardizedFileURL.path
        guard case .transfer(let summary) = try self.options.execute(
            .exportImage(source: self.source, file: path), progressLabel: "export")
        else { return }
        print("exported \(self.source) to \(self.file) (\(SizeParser.format(summary.sizeBytes)))")
    }
}

extension UInt64 {
    var alignedUp512: UInt64 { (self + 511) / 512 * 512 }
}
