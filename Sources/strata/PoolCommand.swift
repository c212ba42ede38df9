import ArgumentParser
import Foundation
import StrataCore
import StrataServer

struct PoolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Create a pool and show its state.",
        subcommands: [PoolInit.self, PoolStatusCommand.self])
}

struct PoolInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Create a thin pool: a sparse file in the pool directory.")

    @OptionGroup var options: PoolOptions
    @Option(help: "Capacity of the pool file (sparse; default 64G).") var size: String = "64G"
    @Option(name: .customLong("chunk-size"), help: "Allocation unit, a power of two from 4K to 1M (default 64K).")
    var chunkSize: String = "64K"
    @Option(
        name: .customLong("metadata-size"),
        help: "Metadata region (sparse); default: a 4 KiB page per chunk, at most 1/16 of the pool.")
    var metadataSize: String?

    func validate() throws {
        _ = try parseSize(self.size, option: "--size")
        _ = try parseSize(self.chunkSize, option: "--chunk-size")
        if let metadataSize { _ = try parseSize(metadataSize, option: "--metadata-size") }
    }

    func run() throws {
        let bytes = try parseSize(self.size, option: "--size")
        let chunk = try parseSize(self.chunkSize, option: "--chunk-size")
        let metadata = try self.metadataSize.map { try parseSize($0, option: "--metadata-size") }
        let directory = self.options.directory
        try failing { () throws(StrataError) in
            try Pool.create(directory: directory, size: bytes, chunkSize: chunk, metadataSize: metadata)
        }
        guard case .status(let status) = try self.options.execute(.poolStatus) else { return }
        print(
            "created pool \(directory): capacity \(SizeParser.format(status.capacityBytes)), chunk size \(SizeParser.format(status.chunkSize)), metadata \(SizeParser.format(status.metadataBytes))"
        )
    }
}

struct PoolStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Capacity, usage, chunk size, counts and committed generation.")

    @OptionGroup var options: PoolOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .status(let status) = try self.options.execute(.poolStatus) else { return }
        if self.json { return printJSON(status) }
        let percent = status.capacityBytes == 0 ? 0 : Double(status.dataUsedBytes) * 100 / Double(status.capacityBytes)
        print("pool:        \(self.options.directory)")
        print("capacity:    \(SizeParser.format(status.capacityBytes)) (\(status.capacityBytes) bytes)")
        print("data used:   \(SizeParser.format(status.dataUsedBytes)) (\(String(format: "%.1f", percent))%)")
        print("data free:   \(SizeParser.format(status.dataFreeBytes))")
        print("metadata:    \(SizeParser.format(status.metadataUsedBytes)) used of \(SizeParser.format(status.metadataBytes))")
        print("chunk size:  \(SizeParser.format(status.chunkSize))")
        print("volumes:     \(status.volumes)")
        print("snapshots:   \(status.snapshots)")
        print("generation:  \(status.generation)")
        print("created:     \(status.createdAt)")
        print("uuid:        \(status.uuid)")
        for (volume, problem) in status.unavailable.sorted(by: { $0.key < $1.key }) {
            print("unavailable: \(volume): \(problem)")
        }
        for hydration in status.hydrations ?? [] { print("hydrating:   \(hydrationLine(hydration))") }
    }
}
