import ArgumentParser
import Foundation
import StrataCore
import StrataServer

struct VolumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Create, list, resize, rename and delete volumes.",
        subcommands: [VolumeCreate.self, VolumeList.self, VolumeResize.self, VolumeRename.self, VolumeDelete.self])
}

struct VolumeCreate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a thin volume.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Option(help: "Size (bytes or K/M/G/T).") var size: String

    func validate() throws { _ = try parseSize(self.size, option: "--size") }

    func run() throws {
        let bytes = try parseSize(self.size, option: "--size")
        _ = try self.options.execute(.createVolume(name: self.name, size: bytes))
        print("created volume \(self.name) (\(SizeParser.format(bytes)))")
    }
}

struct VolumeList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List volumes.")
    @OptionGroup var options: PoolOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .volumes(let volumes) = try self.options.execute(.listVolumes) else { return }
        if self.json { return printJSON(volumes) }
        printTable(
            ["NAME", "SIZE", "ALLOCATED", "SNAPSHOTS", "ORIGIN", "CREATED"],
            volumes.map {
                [
                    $0.name, SizeParser.format($0.sizeBytes), SizeParser.format($0.allocatedBytes), "\($0.snapshots)",
                    $0.origin ?? "-", $0.createdAt,
                ]
            })
    }
}

struct VolumeResize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize", abstract: "Grow a volume, or shrink it (freeing chunks past the new end).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Option(help: "New size (bytes or K/M/G/T).") var size: String
    @Flag(name: .customLong("allow-shrink"), help: "Allow a smaller size; data past it is discarded.")
    var allowShrink = false

    func validate() throws { _ = try parseSize(self.size, option: "--size") }

    func run() throws {
        let bytes = try parseSize(self.size, option: "--size")
        _ = try self.options.execute(.resizeVolume(name: self.name, size: bytes, allowShrink: self.allowShrink))
        print("resized volume \(self.name) to \(SizeParser.format(bytes))")
    }
}

struct VolumeRename: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rename", abstract: "Rename a volume; its snapshots follow.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Current name.") var old: String
    @Argument(help: "New name.") var new: String

    func run() throws {
        _ = try self.options.execute(.renameVolume(name: self.old, newName: self.new))
        print("renamed volume \(self.old) to \(self.new)")
    }
}

struct VolumeDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a volume.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Flag(name: [.customShort("r"), .long], help: "Delete its snapshots too.") var recursive = false
    @Flag(help: "Disconnect clients using the volume or its snapshots first.") var force = false

    func run() throws {
        _ = try self.options.execute(.deleteVolume(name: self.name, recursive: self.recursive, force: self.force))
        print("deleted volume \(self.name)")
    }
}
