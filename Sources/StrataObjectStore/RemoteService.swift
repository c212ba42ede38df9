// The remote verbs of the control plane: what `strata remote …` and `strata push` ask, run
// against one pool. `PoolService` hands `ControlRequest.remote` here, in the daemon (on a
// thread-pool thread) and in the CLI when it opens the pool itself, so both behave the same.
// Nothing here changes the pool: pushes only read snapshots. `remote add` and `remote remove`
// change remotes.json; everything else changes only the remote.

import Crypto
import Foundation
import NIOCore
import StrataCore

/// A remote verb, as the control socket carries it.
public enum RemoteRequest: Codable, Sendable, Equatable {
    /// Adds a remote after checking it (creating the container first with `create`).
    case add(RemoteConfig, create: Bool)
    case list
    case remove(name: String)
    case check(name: String)
    case push(volume: String, snapshot: String, remote: String)
    case ls(remote: String, volume: String?)
    case delete(remote: String, volume: String, snapshot: String)
    case gc(remote: String, dryRun: Bool)
}

/// What a remote verb produced.
public enum RemoteResult: Codable, Sendable {
    case done
    case remotes([RemoteSummary])
    case check(RemoteCheckReport)
    case push(PushSummary)
    case snapshots([RemoteSnapshotInfo])
    case gc(GCReport)
}

/// `remote check`: each step's latency.
public struct RemoteCheckReport: Codable, Sendable, Equatable {
    public let remote: String
    /// Authenticating (Swift) and finding the container or bucket.
    public let connectMilliseconds: Double
    public let putMilliseconds: Double
    public let getMilliseconds: Double
    public let deleteMilliseconds: Double
    public let probeBytes: Int
}

/// Runs remote verbs for one pool.
public struct RemoteService {
    let pool: Pool
    let directory: String

    /// - Throws: `.invalidArgument` for a pool without a directory (remotes live in it).
    public init(pool: Pool) throws(StrataError) {
        guard let directory = pool.directory else {
            throw StrataError(.invalidArgument, "remote: this pool has no directory to keep remotes.json in")
        }
        self.pool = pool
        self.directory = directory
    }

    var table: RemoteTable { RemoteTable(directory: self.directory) }

    /// Runs one request. `progress(done, total)` reports a push's objects.
    public func execute(_ request: RemoteRequest, progress: (UInt64, UInt64) -> Void) throws(StrataError) -> RemoteResult {
        switch request {
        case .add(let remote, let create):
            try remote.validate(chunkSize: self.pool.chunkSize)
            guard try !self.table.load().contains(where: { $0.name == remote.name }) else {
                throw StrataError(.alreadyExists, "remote add \(remote.name): a remote with this name exists; remove it first")
            }
            try Blocking.withStore(remote) { store throws(StrataError) in
                try Blocking.run { () throws(StrataError) in
                    if create { try await store.createContainer() }
                    try await store.checkContainer()
                }
            }
            try self.table.add(remote)
        case .list:
            return .remotes(try self.table.load().map(\.summary))
        case .remove(let name):
            try self.table.remove(name)
        case .check(let name):
            let remote = try self.table.remote(name)
            return .check(try Blocking.withStore(remote) { store throws(StrataError) in try Self.check(remote, store) })
        case .push(let volume, let snapshot, let name):
            let remote = try self.table.remote(name)
            return .push(
                try Blocking.withStore(remote) { store throws(StrataError) in
                    try Pusher(pool: self.pool, remote: remote, store: store, owner: Lease.owner(directory: self.directory))
                        .push(volume: volume, snapshot: snapshot, progress: progress)
                })
        case .ls(let name, let volume):
            let remote = try self.table.remote(name)
            return .snapshots(try Blocking.withStore(remote) { store throws(StrataError) in try RemoteCatalog(store: store).list(volume: volume) })
        case .delete(let name, let volume, let snapshot):
            let remote = try self.table.remote(name)
            try Blocking.withStore(remote) { store throws(StrataError) in
                try RemoteCatalog(store: store).delete(volume: volume, snapshot: snapshot)
            }
        case .gc(let name, let dryRun):
            let remote = try self.table.remote(name)
            return .gc(
                try Blocking.withStore(remote) { store throws(StrataError) in
                    try RemoteCatalog(store: store).collect(dryRun: dryRun, owner: Lease.owner(directory: self.directory))
                })
        }
        return .done
    }

    /// Authenticates, writes, reads back and deletes a probe object, timing each step.
    private static func check(_ remote: RemoteConfig, _ store: any ObjectStore) throws(StrataError) -> RemoteCheckReport {
        let probe = "probe/\(UUID().uuidString.lowercased())"
        let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let body = ByteBuffer(bytes: bytes)
        let sha = SigV4Signer.hex(SHA256.hash(data: bytes))
        let times = try Blocking.run { () throws(StrataError) -> [Double] in
            var times: [Double] = []
            let clock = ContinuousClock()
            var mark = clock.now
            func lap() {
                let now = clock.now
                let elapsed = now - mark
                times.append(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
                mark = now
            }
            try await store.checkContainer()
            lap()
            try await store.put(probe, body: body, sha256: sha)
            lap()
            let back = try await store.get(probe, range: nil)
            lap()
            try await store.delete(probe)
            lap()
            guard back == body else {
                throw StrataError(
                    .corrupt, "check \(store.label): probe \(probe) read back \(back.readableBytes) bytes that differ from those written")
            }
            return times
        }
        return RemoteCheckReport(
            remote: remote.name, connectMilliseconds: times[0], putMilliseconds: times[1], getMilliseconds: times[2],
            deleteMilliseconds: times[3], probeBytes: bytes.count)
    }
}
