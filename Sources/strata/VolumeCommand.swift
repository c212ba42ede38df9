import ArgumentParser
import Foundation
import StrataCore
import StrataServer

struct VolumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Create, list, resize, rename and delete volumes; layers over base images.",
        subcommands: [
            VolumeCreate.self, VolumeList.self, VolumeResize.self, VolumeRename.self, VolumeDelete.self,
            VolumeLayers.self, VolumeFlatten.self, VolumeRebase.self, VolumeHydrate.self, VolumeStatusCommand.self,
        ])
}

struct VolumeCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a thin volume, empty, over a base image file, or over a remote snapshot.",
        discussion: """
            With --base FILE (raw, or qcow2 with its backing chain), every chunk never written reads \
            from FILE, which is opened read-only and never written; --size defaults to its virtual size.
            With --from REMOTE:VOL@SNAP the volume is usable at once: what it never wrote reads from \
            the snapshot in the remote, each object fetched when first read, verified against the \
            manifest and stored into the volume. --hydrate lazy (the default) has the daemon fetch \
            the rest in the background (resumed after a restart; `strata volume status` shows it), \
            now fetches it before the command returns, off leaves it to reads and to \
            `strata volume hydrate`.
            """)
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Option(help: "Size (bytes or K/M/G/T); with --base or --from, defaults to the base's size.") var size: String?
    @Option(help: "A raw or qcow2 image file the volume's unwritten chunks read from.") var base: String?
    @Option(help: "REMOTE:VOLUME@SNAPSHOT: a pushed snapshot the volume's unwritten chunks read from.") var from: String?
    @Option(help: "With --from: lazy (fetch the rest in the background), now (before returning) or off (only what is read).")
    var hydrate: Hydration = .lazy

    func validate() throws {
        if let size { _ = try parseSize(size, option: "--size") }
        if let from { _ = try splitRemoteSnapshot(from) }
        guard self.base == nil || self.from == nil else { throw ValidationError("--base and --from exclude each other") }
        guard self.size != nil || self.base != nil || self.from != nil else {
            throw ValidationError("missing --size SIZE (or --base FILE, whose size it then takes), such as --size 10G")
        }
    }

    func run() throws {
        let bytes = try self.size.map { try parseSize($0, option: "--size") }
        if let from = self.from {
            try createFromRemote(self.options, name: self.name, size: bytes, from: from, hydrate: self.hydrate)
        } else if let base = self.base {
            let path = absolutePath(base)
            _ = try self.options.execute(.createBasedVolume(name: self.name, size: bytes, base: path))
            print("created volume \(self.name) over \(path)")
        } else if let bytes {
            _ = try self.options.execute(.createVolume(name: self.name, size: bytes))
            print("created volume \(self.name) (\(SizeParser.format(bytes)))")
        }
    }
}

/// When a volume created from a remote snapshot copies what it has not read.
enum Hydration: String, ExpressibleByArgument, CaseIterable {
    case now, lazy, off
}

/// `REMOTE:VOLUME@SNAPSHOT` split into its parts.
func splitRemoteSnapshot(_ text: String) throws -> (remote: String, volume: String, snapshot: String) {
    guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
        throw ValidationError("'\(text)' is not a remote snapshot; write REMOTE:VOLUME@SNAPSHOT, such as r1:vm1@s1")
    }
    let (volume, snapshot) = try splitSnapshot(String(text[text.index(after: colon)...]))
    return (String(text[..<colon]), volume, snapshot)
}

/// Creates `name` over the remote snapshot `from`, then hydrates it when asked to now.
func createFromRemote(_ options: PoolOptions, name: String, size: UInt64?, from: String, hydrate: Hydration) throws {
    let (remote, volume, snapshot) = try splitRemoteSnapshot(from)
    _ = try options.execute(
        .createRemoteVolume(name: name, size: size, remote: remote, volume: volume, snapshot: snapshot))
    print("created volume \(name) over \(from)")
    switch hydrate {
    case .off: return
    case .lazy: _ = try options.execute(.hydrateVolume(name: name, rate: nil, mode: .background))
    case .now:
        _ = try options.execute(.hydrateVolume(name: name, rate: nil, mode: .wait), progressLabel: "hydrate \(name)")
        print("hydrated volume \(name): it no longer reads from \(from)")
    }
}

struct VolumeHydrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hydrate",
        abstract: "Fetch everything a volume still reads from its remote snapshot into the pool, then drop the remote base.",
        discussion: """
            With the daemon running, the hydration runs in the background (objects fetched in parallel at \
            most --rate bytes a second; a running one takes the new rate) and resumes after a restart; \
            --wait returns when it is done, or fails naming the object when the store fails (the daemon \
            keeps retrying). On a pool opened by this command it runs in the foreground. I/O to the \
            volume continues meanwhile, and what the volume writes is never overwritten.
            """)
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Option(help: "Fetch at most this many bytes a second (K/M/G suffixes; default 64M), leaving the link to the volume's clients.")
    var rate: String?
    @Flag(help: "Return when the hydration is done.") var wait = false

    func validate() throws {
        if let rate, try parseSize(rate, option: "--rate") == 0 { throw ValidationError("--rate must be positive") }
    }

    func run() throws {
        let bytes = try self.rate.map { try parseSize($0, option: "--rate") }
        _ = try self.options.execute(
            .hydrateVolume(name: self.name, rate: bytes, mode: self.wait ? .wait : .start), progressLabel: "hydrate \(self.name)")
        guard case .volumeStatus(let status) = try self.options.execute(.volumeStatus(name: self.name)) else { return }
        if status.base == nil {
            print("hydrated volume \(self.name): it no longer needs its base")
        } else {
            print("hydrating volume \(self.name) in the background; `strata volume status \(self.name)` shows its progress")
        }
    }
}

struct VolumeStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a volume's base and its hydration: mode, state, objects fetched, bytes, rate, last error.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .volumeStatus(let status) = try self.options.execute(.volumeStatus(name: self.name)) else { return }
        if self.json { return printJSON(status) }
        print("volume:      \(status.volume) (\(SizeParser.format(status.sizeBytes)))")
        print("base:        \(status.base ?? "-")")
        print("hydration:   \(status.hydration)")
        print("state:       \(status.state)")
        print("objects:     \(status.objectsFetched) of \(status.objectsTotal) local")
        print("fetched:     \(SizeParser.format(status.bytesFetched)) (\(status.bytesFetched) bytes)")
        let limit = status.rateLimitBytesPerSecond.map { " (limit \(SizeParser.format($0))/s)" } ?? ""
        print("rate:        \(SizeParser.format(status.rateBytesPerSecond))/s\(limit)")
        if let error = status.lastError { print("last error:  \(error)") }
    }
}

/// One hydration on one line, for `pool status`.
func hydrationLine(_ status: VolumeStatus) -> String {
    let error = status.lastError.map { ": \($0)" } ?? ""
    return "\(status.volume) from \(status.base ?? "-"): \(status.state), \(status.objectsFetched)/\(status.objectsTotal) objects, \(SizeParser.format(status.rateBytesPerSecond))/s\(error)"
}

struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Create a volume from a remote snapshot and fetch all of it (volume create --from … --hydrate now).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "REMOTE:VOLUME@SNAPSHOT") var source: String
    @Argument(help: "New volume name (default: the snapshot's volume name).") var name: String?

    func validate() throws { _ = try splitRemoteSnapshot(self.source) }

    func run() throws {
        let name = try self.name ?? splitRemoteSnapshot(self.source).volume
        try createFromRemote(self.options, name: name, size: nil, from: self.source, hydrate: .now)
    }
}

/// `path` made absolute against this process's working directory (the daemon has its own).
func absolutePath(_ path: String) -> String {
    URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        .standardizedFileURL.path
}

struct VolumeLayers: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layers",
        abstract: "Print the stack a volume reads through, from the top down: the volume, its read-only layers, its base files.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .layers(let layers) = try self.options.execute(.volumeLayers(name: self.name)) else { return }
        printLayers(layers, json: self.json)
    }
}

/// Prints a stack of layers as a table or JSON.
func printLayers(_ layers: [LayerInfo], json: Bool) {
    if json { return printJSON(layers) }
    printTable(
        ["LAYER", "KIND", "SIZE", "MODE", "FORMAT", "STATUS"],
        layers.map {
            [
                $0.name, $0.kind, SizeParser.format($0.sizeBytes), $0.writable ? "rw" : "ro", $0.format ?? "-",
                $0.problem.map { "unavailable: \($0)" } ?? "ok",
            ]
        })
}

struct VolumeFlatten: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flatten",
        abstract: "Copy everything a volume still reads from its base image into the pool, then drop the base.",
        discussion: "I/O to the volume continues meanwhile. An interrupted flatten resumes when the daemon starts, or when run again.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Option(help: "Copy at most this many bytes a second (K/M/G suffixes), leaving the disk to the volume's clients.")
    var rate: String?

    func validate() throws {
        if let rate, try parseSize(rate, option: "--rate") == 0 { throw ValidationError("--rate must be positive") }
    }

    func run() throws {
        let bytes = try self.rate.map { try parseSize($0, option: "--rate") }
        _ = try self.options.execute(.flattenVolume(name: self.name, rate: bytes), progressLabel: "flatten \(self.name)")
        print("flattened volume \(self.name): it no longer needs its base image")
    }
}

struct VolumeRebase: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebase",
        abstract: "Point a volume at another base image file that reads identically wherever the volume reads its base.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var name: String
    @Option(help: "The new base image file (raw or qcow2).") var base: String

    func run() throws {
        let path = absolutePath(self.base)
        _ = try self.options.execute(.rebaseVolume(name: self.name, base: path))
        print("rebased volume \(self.name) onto \(path)")
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
            ["NAME", "SIZE", "ALLOCATED", "SNAPSHOTS", "ORIGIN", "BASE", "CREATED"],
            volumes.map { volume in
                [
                    volume.name, SizeParser.format(volume.sizeBytes), SizeParser.format(volume.allocatedBytes),
                    "\(volume.snapshots)", volume.origin ?? "-",
                    volume.base.map { volume.baseProblem == nil ? $0 : "\($0) (unavailable)" } ?? "-", volume.createdAt,
                ]
            })
        for volume in volumes {
            if let problem = volume.baseProblem { printError(problem) }
        }
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
