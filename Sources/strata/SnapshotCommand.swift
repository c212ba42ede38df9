import ArgumentParser
import Foundation
import StrataCore
import StrataServer

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Create, list, delete and roll back snapshots.",
        subcommands: [SnapshotCreate.self, SnapshotList.self, SnapshotDelete.self, SnapshotRollback.self])
}

/// Splits `VOLUME@SNAPSHOT`, refusing anything else with a usage error.
func splitSnapshot(_ target: String) throws -> (String, String) {
    let (volume, snapshot) = Names.split(target)
    guard let snapshot, !volume.isEmpty, !snapshot.isEmpty else {
        throw ValidationError("'\(target)' is not a snapshot name; write VOLUME@SNAPSHOT, such as vm1@before-upgrade")
    }
    return (volume, snapshot)
}

struct SnapshotCreate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Take a snapshot in O(1).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@SNAPSHOT") var target: String

    func validate() throws { _ = try splitSnapshot(self.target) }

    func run() throws {
        let (volume, snapshot) = try splitSnapshot(self.target)
        _ = try self.options.execute(.createSnapshot(volume: volume, snapshot: snapshot))
        print("created snapshot \(self.target)")
    }
}

struct SnapshotList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List snapshots, with the bytes each holds exclusively.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Only this volume's snapshots.") var volume: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .snapshots(let snapshots) = try self.options.execute(.listSnapshots(volume: self.volume)) else { return }
        if self.json { return printJSON(snapshots) }
        printTable(
            ["NAME", "SIZE", "EXCLUSIVE", "CREATED"],
            snapshots.map {
                ["\($0.volume)@\($0.name)", SizeParser.format($0.sizeBytes), SizeParser.format($0.exclusiveBytes), $0.createdAt]
            })
    }
}

struct SnapshotDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a snapshot and free what only it referenced.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@SNAPSHOT") var target: String
    @Flag(help: "Disconnect clients using the snapshot first.") var force = false

    func validate() throws { _ = try splitSnapshot(self.target) }

    func run() throws {
        let (volume, snapshot) = try splitSnapshot(self.target)
        _ = try self.options.execute(.deleteSnapshot(volume: volume, snapshot: snapshot, force: self.force))
        print("deleted snapshot \(self.target)")
    }
}

struct SnapshotRollback: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback", abstract: "Make a volume's content its snapshot's, in O(1).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@SNAPSHOT") var target: String

    func validate() throws { _ = try splitSnapshot(self.target) }

    func run() throws {
        let (volume, snapshot) = try splitSnapshot(self.target)
        _ = try self.options.execute(.rollback(volume: volume, snapshot: snapshot))
        print("rolled back \(volume) to \(self.target)")
    }
}

struct CloneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone", abstract: "Create a writable volume sharing every chunk with a snapshot.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@SNAPSHOT") var source: String
    @Argument(help: "New volume name.") var name: String

    func validate() throws { _ = try splitSnapshot(self.source) }

    func run() throws {
        let (volume, snapshot) = try splitSnapshot(self.source)
        _ = try self.options.execute(.clone(volume: volume, snapshot: snapshot, newName: self.name))
        print("cloned \(self.source) to \(self.name)")
    }
}

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "List the extents that differ between a snapshot and a later snapshot or the live volume.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@FROM") var source: String
    @Argument(help: "VOLUME@TO or VOLUME") var target: String
    @Flag(help: "Print JSON.") var json = false

    func validate() throws { _ = try splitSnapshot(self.source) }

    func run() throws {
        guard case .extents(let extents) = try self.options.execute(.diff(from: self.source, to: self.target)) else {
            return
        }
        if self.json { return printJSON(extents) }
        printTable(["OFFSET", "LENGTH", "KIND"], extents.map { ["\($0.offset)", "\($0.length)", $0.kind.rawValue] })
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Verify checksums, tree invariants, reference counts and free space; exit 1 if damaged or failed.")
    @OptionGroup var options: PoolOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .check(let report) = try self.options.execute(.check) else { return }
        if self.json {
            printJSON(report)
        } else {
            if let failure = report.failure { print("failed: \(failure)") }
            for problem in report.problems { print("damaged: \(problem)") }
            let verdict = report.failure != nil ? "FAILED" : report.clean ? "clean" : "DAMAGED"
            print(
                "\(verdict): generation \(report.generation), \(report.volumes) volumes, \(report.snapshots) snapshots, \(report.treePages) tree pages, \(report.dataChunks) data chunks, \(report.problems.count) problems"
            )
        }
        if !report.clean { throw ExitCode(1) }
    }
}

struct ConnectionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connections", abstract: "List the clients connected to the running daemon.")
    @OptionGroup var options: PoolOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .connections(let connections) = try self.options.execute(.connections) else { return }
        if self.json { return printJSON(connections) }
        printTable(
            ["PROTOCOL", "CLIENT", "EXPORT"], connections.map { [$0.protocolName, $0.remote, $0.export ?? "-"] })
    }
}
