// `strata remote …` and `strata push`: parse, send a `RemoteRequest` through the control plane
// (daemon or the pool opened here), print. Secrets are read from the files named on the
// command line and go only into remotes.json; nothing here prints them.

import ArgumentParser
import Foundation
import StrataCore
import StrataObjectStore
import StrataServer

extension PoolOptions {
    /// Runs a remote verb through the control plane.
    func execute(_ request: RemoteRequest, progressLabel: String? = nil) throws -> RemoteResult {
        guard case .remote(let result) = try self.execute(.remote(request), progressLabel: progressLabel) else {
            printError("the daemon answered a remote request with another kind of result; is it the same strata version?")
            throw ExitCode(1)
        }
        return result
    }
}

struct RemoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remote",
        abstract: "Object-store remotes (OpenStack Swift or S3): add, list, check, browse, delete, collect garbage.",
        discussion: """
            A remote is a container (Swift) or bucket (S3) that `strata push` stores snapshots in, \
            as fixed-size content-addressed objects plus one manifest per snapshot \
            (docs/OBJECTSTORE.md). Credentials live in remotes.json in the pool directory (0600). \
            Keystone authentication is not supported; Swift remotes use v1.0 (TempAuth) auth.
            """,
        subcommands: [
            RemoteAdd.self, RemoteList.self, RemoteRemove.self, RemoteCheck.self, RemoteLs.self, RemoteDelete.self,
            RemoteGC.self,
        ])
}

struct RemoteAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a remote after checking its credentials and container.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Remote name.") var name: String
    @Option(help: "Swift v1.0 auth URL (http://HOST:PORT/auth/v1.0).") var swift: String?
    @Option(help: "Swift user (account:user).") var user: String?
    @Option(help: "File holding the Swift key.") var keyFile: String?
    @Option(help: "Swift container.") var container: String = "strata"
    @Option(help: "S3 endpoint (http://HOST:PORT), path-style.") var s3: String?
    @Option(help: "S3 bucket.") var bucket: String?
    @Option(help: "S3 signing region.") var region: String = "us-east-1"
    @Option(help: "S3 access key ID.") var accessKeyId: String?
    @Option(help: "File holding the S3 secret access key.") var secretKeyFile: String?
    @Option(help: "Object size: a power of two, a multiple of the pool's chunk size.") var objectSize: String = "8M"
    @Flag(help: "Create the container or bucket if it does not exist.") var create = false

    func validate() throws {
        switch (self.swift, self.s3) {
        case (.some, nil):
            guard self.user != nil, self.keyFile != nil else {
                throw ValidationError("--swift needs --user and --key-file")
            }
            guard self.bucket == nil, self.accessKeyId == nil, self.secretKeyFile == nil else {
                throw ValidationError("--bucket, --access-key-id and --secret-key-file belong to --s3, not --swift")
            }
        case (nil, .some):
            guard self.bucket != nil, self.accessKeyId != nil, self.secretKeyFile != nil else {
                throw ValidationError("--s3 needs --bucket, --access-key-id and --secret-key-file")
            }
            guard self.user == nil, self.keyFile == nil else {
                throw ValidationError("--user and --key-file belong to --swift, not --s3")
            }
        default:
            throw ValidationError("give exactly one of --swift AUTH_URL or --s3 ENDPOINT")
        }
        _ = try parseSize(self.objectSize, option: "--object-size")
    }

    func run() throws {
        let objectSize = try parseSize(self.objectSize, option: "--object-size")
        let remote: RemoteConfig
        if let swift = self.swift, let user = self.user, let keyFile = self.keyFile {
            remote = RemoteConfig(
                name: self.name, kind: .swift, endpoint: swift, container: self.container, user: user,
                secret: try readSecret(keyFile), region: nil, objectSizeBytes: objectSize)
        } else if let s3 = self.s3, let bucket = self.bucket, let keyID = self.accessKeyId, let secretFile = self.secretKeyFile {
            remote = RemoteConfig(
                name: self.name, kind: .s3, endpoint: s3, container: bucket, user: keyID,
                secret: try readSecret(secretFile), region: self.region, objectSizeBytes: objectSize)
        } else {
            throw ValidationError("give exactly one of --swift AUTH_URL or --s3 ENDPOINT")
        }
        _ = try self.options.execute(.add(remote, create: self.create))
        print("added remote \(self.name) (\(remote.kind.rawValue) \(remote.endpoint) \(remote.container))")
    }
}

/// The secret in `path`, without a trailing newline.
func readSecret(_ path: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
        printError("read \(path): cannot read the key file; check its path and permissions")
        throw ExitCode(1)
    }
    return text.trimmingCharacters(in: .whitespacesAndNewlines)
}

struct RemoteList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List remotes (never their secrets).")
    @OptionGroup var options: PoolOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .remotes(let remotes) = try self.options.execute(RemoteRequest.list) else { return }
        if self.json { return printJSON(remotes) }
        printTable(
            ["NAME", "API", "ENDPOINT", "CONTAINER", "USER", "OBJECT SIZE"],
            remotes.map {
                [$0.name, $0.kind.rawValue, $0.endpoint, $0.container, $0.user, SizeParser.format($0.objectSizeBytes)]
            })
    }
}

struct RemoteRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Forget a remote (its objects stay in the store).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Remote name.") var name: String

    func run() throws {
        _ = try self.options.execute(RemoteRequest.remove(name: self.name))
        print("removed remote \(self.name)")
    }
}

struct RemoteCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Authenticate, write, read back and delete a probe object; report latencies.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Remote name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .check(let report) = try self.options.execute(RemoteRequest.check(name: self.name)) else { return }
        if self.json { return printJSON(report) }
        func ms(_ value: Double) -> String { String(format: "%.1f ms", value) }
        print(
            "remote \(report.remote) ok: connect \(ms(report.connectMilliseconds)), put \(ms(report.putMilliseconds)), get \(ms(report.getMilliseconds)), delete \(ms(report.deleteMilliseconds)) (probe of \(report.probeBytes) bytes)"
        )
    }
}

struct RemoteLs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the snapshots in a remote, with bytes stored and unique to each.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Remote name.") var remote: String
    @Argument(help: "Only this volume.") var volume: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .snapshots(let snapshots) = try self.options.execute(RemoteRequest.ls(remote: self.remote, volume: self.volume))
        else { return }
        if self.json { return printJSON(snapshots) }
        printTable(
            ["NAME", "SIZE", "STORED", "UNIQUE", "OBJECTS", "PARENT", "CREATED"],
            snapshots.map {
                [
                    "\($0.volume)@\($0.snapshot)", SizeParser.format($0.sizeBytes), SizeParser.format($0.storedBytes),
                    SizeParser.format($0.uniqueBytes), "\($0.objects)", $0.parent ?? "-", $0.createdAt,
                ]
            })
    }
}

struct RemoteDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a snapshot's manifest from a remote; `remote gc` frees its objects.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Remote name.") var remote: String
    @Argument(help: "VOLUME@SNAPSHOT") var target: String

    func validate() throws { _ = try splitSnapshot(self.target) }

    func run() throws {
        let (volume, snapshot) = try splitSnapshot(self.target)
        _ = try self.options.execute(RemoteRequest.delete(remote: self.remote, volume: volume, snapshot: snapshot))
        print("deleted \(self.target) from remote \(self.remote); `strata remote gc \(self.remote)` frees its objects")
    }
}

struct RemoteGC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Delete the objects no manifest references (refused while a push runs).")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Remote name.") var remote: String
    @Flag(help: "Only list what would be deleted.") var dryRun = false
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .gc(let report) = try self.options.execute(RemoteRequest.gc(remote: self.remote, dryRun: self.dryRun))
        else { return }
        if self.json { return printJSON(report) }
        for key in report.objects { print(key) }
        let verb = report.dryRun ? "would delete" : "deleted"
        print(
            "\(verb) \(report.objects.count) objects (\(SizeParser.format(report.bytes))); kept \(report.objectsKept) objects named by \(report.manifests) manifests"
        )
    }
}

struct PushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Upload a snapshot to a remote: only the objects changed since the last snapshot there, then its manifest.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "VOLUME@SNAPSHOT") var source: String
    @Argument(help: "Remote name.") var remote: String
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws { _ = try splitSnapshot(self.source) }

    func run() throws {
        let (volume, snapshot) = try splitSnapshot(self.source)
        let label = self.json ? nil : "push \(self.source)"
        guard
            case .push(let summary) = try self.options.execute(
                RemoteRequest.push(volume: volume, snapshot: snapshot, remote: self.remote), progressLabel: label)
        else { return }
        if self.json { return printJSON(summary) }
        if summary.upToDate {
            print("\(self.source) is already in remote \(self.remote); nothing uploaded")
            return
        }
        let from = summary.parent.map { "incremental from \($0)" } ?? "full"
        print(
            "pushed \(self.source) to \(self.remote) (\(from)): uploaded \(summary.objectsUploaded) objects (\(SizeParser.format(summary.bytesUploaded))), skipped \(summary.objectsSkipped) already stored, \(summary.objectsUnchanged) unchanged, \(summary.holes) holes, in \(String(format: "%.1f", summary.seconds)) s"
        )
    }
}
