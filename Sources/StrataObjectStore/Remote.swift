// Remotes: named object-store accounts a pool pushes to, kept in `remotes.json` in the pool
// directory. The file holds the credentials, so it is written with mode 0600, atomically (a
// crash leaves the old or the new table, never half of one), and no listing, error or log line
// ever carries a secret: `RemoteSummary` is what leaves this file.
//
// remotes.json: `{"version": 1, "remotes": [RemoteConfig…]}`; fields in docs/OBJECTSTORE.md.

import Foundation
import StrataCore

/// Which API a remote speaks.
public enum RemoteKind: String, Codable, Sendable {
    /// OpenStack Swift's native API with v1.0 (TempAuth) authentication.
    case swift
    /// S3 with SigV4, path-style.
    case s3
}

/// One remote as stored, secrets included. Never printed.
public struct RemoteConfig: Codable, Sendable, Equatable {
    public var name: String
    public var kind: RemoteKind
    /// Swift: the v1.0 auth URL. S3: the endpoint.
    public var endpoint: String
    /// Swift: the container. S3: the bucket.
    public var container: String
    /// Swift: the user (`account:user`). S3: the access key ID.
    public var user: String
    /// Swift: the key. S3: the secret access key.
    public var secret: String
    /// S3 only: the signing region.
    public var region: String?
    public var objectSizeBytes: UInt64

    public init(
        name: String, kind: RemoteKind, endpoint: String, container: String, user: String, secret: String,
        region: String?, objectSizeBytes: UInt64
    ) {
        self.name = name
        self.kind = kind
        self.endpoint = endpoint
        self.container = container
        self.user = user
        self.secret = secret
        self.region = region
        self.objectSizeBytes = objectSizeBytes
    }

    /// What `remote list` shows: everything but the secret.
    public var summary: RemoteSummary {
        RemoteSummary(
            name: self.name, kind: self.kind, endpoint: self.endpoint, container: self.container, user: self.user,
            region: self.region, objectSizeBytes: self.objectSizeBytes)
    }

    /// A client for this remote; shut it down when done.
    public func open() throws(StrataError) -> any ObjectStore {
        switch self.kind {
        case .swift:
            return try SwiftStore(
                remote: self.name, authURL: self.endpoint, user: self.user, key: self.secret, container: self.container)
        case .s3:
            let signer = SigV4Signer(accessKeyID: self.user, secretKey: self.secret, region: self.region ?? "us-east-1")
            return try S3Store(remote: self.name, endpoint: self.endpoint, bucket: self.container, signer: signer)
        }
    }

    /// Checks the name and object size against the pool's chunk size.
    public func validate(chunkSize: UInt64) throws(StrataError) {
        try Names.validate(self.name, kind: "remote", operation: "remote add")
        let size = self.objectSizeBytes
        guard size.nonzeroBitCount == 1, size >= Limits.objectSizeMin, size <= Limits.objectSizeMax, size % chunkSize == 0
        else {
            throw StrataError(
                .invalidArgument,
                "remote add \(self.name): object size \(size) must be a power of two from \(SizeParser.format(Limits.objectSizeMin)) to \(SizeParser.format(Limits.objectSizeMax)) and a multiple of the pool's chunk size \(SizeParser.format(chunkSize)) (default 8M)"
            )
        }
        guard !self.secret.isEmpty else {
            throw StrataError(.invalidArgument, "remote add \(self.name): the key file is empty; write the key into it")
        }
    }
}

/// A remote as listings show it: no secret.
public struct RemoteSummary: Codable, Sendable, Equatable {
    public let name: String
    public let kind: RemoteKind
    public let endpoint: String
    public let container: String
    public let user: String
    public let region: String?
    public let objectSizeBytes: UInt64
}

/// `remotes.json` in a pool directory.
public struct RemoteTable: Sendable {
    public static let fileName = "remotes.json"
    static let version = 1
    let path: String

    private struct File: Codable {
        var version: Int
        var remotes: [RemoteConfig]
    }

    public init(directory: String) {
        self.path = directory + "/" + Self.fileName
    }

    /// Every remote, by name; empty when the file does not exist.
    public func load() throws(StrataError) -> [RemoteConfig] {
        guard let data = FileManager.default.contents(atPath: self.path) else { return [] }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw StrataError(.corrupt, "read \(self.path): not a remotes table (\(error)); restore it or remove it and add the remotes again")
        }
        guard file.version <= Self.version else {
            throw StrataError(
                .unsupported, "read \(self.path): version \(file.version) is newer than this strata's \(Self.version); upgrade strata")
        }
        return file.remotes
    }

    /// The remote called `name`.
    public func remote(_ name: String) throws(StrataError) -> RemoteConfig {
        guard let remote = try self.load().first(where: { $0.name == name }) else {
            throw StrataError(.notFound, "remote \(name): no such remote; `strata remote list` shows them, `strata remote add` adds one")
        }
        return remote
    }

    /// Adds `remote`, refusing a name in use.
    public func add(_ remote: RemoteConfig) throws(StrataError) {
        var remotes = try self.load()
        guard !remotes.contains(where: { $0.name == remote.name }) else {
            throw StrataError(.alreadyExists, "remote add \(remote.name): a remote with this name exists; remove it first")
        }
        remotes.append(remote)
        try self.save(remotes.sorted { $0.name < $1.name })
    }

    /// Removes the remote called `name`.
    public func remove(_ name: String) throws(StrataError) {
        var remotes = try self.load()
        guard let index = remotes.firstIndex(where: { $0.name == name }) else {
            throw StrataError(.notFound, "remote remove \(name): no such remote")
        }
        remotes.remove(at: index)
        try self.save(remotes)
    }

    private func save(_ remotes: [RemoteConfig]) throws(StrataError) {
        try AtomicFile.writeJSON(File(version: Self.version, remotes: remotes), to: self.path, operation: "write remotes")
    }
}
