// Executes control requests against an open pool: the one place the control plane's
// behaviour lives, used by the daemon for socket requests and by the CLI when it opens the
// pool itself. Mutations commit before they return, so a command's effect is durable when it
// reports success. With a connection registry (in the daemon), deleting a volume or snapshot
// that clients are using is refused, naming them, unless forced. Replication jobs exist only
// in the daemon (`replicator`); without one the replicate verbs say to start `strata serve`.

import NIOCore
import StrataCore
import StrataFrontEnd
import StrataMirror
import StrataNBD
import StrataObjectStore
import StrataReplication

/// The control plane over one pool.
public struct PoolService: Sendable {
    public let pool: Pool
    public let registry: ConnectionRegistry?
    /// The daemon's replication jobs; nil when the CLI opened the pool itself.
    public let replicator: Replicator?
    /// The daemon's mirrors; nil when the CLI opened the pool itself.
    public let mirrors: MirrorCoordinator?
    /// The daemon's background hydrations; nil when the CLI opened the pool itself.
    public let hydrator: Hydrator?

    public init(
        pool: Pool, registry: ConnectionRegistry?, replicator: Replicator? = nil, mirrors: MirrorCoordinator? = nil,
        hydrator: Hydrator? = nil
    ) {
        self.pool = pool
        self.registry = registry
        self.replicator = replicator
        self.mirrors = mirrors
        self.hydrator = hydrator
    }

    /// Runs one request.
    /// - Parameters:
    ///   - stream: the descriptor of a `send` or `receive` stream; `.none` for every other request.
    ///   - progress: `(done, total)` of imports, exports, flattens and streams.
    /// - Throws: the engine's error, or `.invalidArgument` when a stream request has no descriptor.
    public func execute(
        _ request: ControlRequest, stream: StreamDescriptor = .none, progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) throws(StrataError) -> ControlResult {
        guard !request.needsDescriptor || stream.fd >= 0 else {
            throw StrataError(.invalidArgument, "stream: no descriptor attached")
        }
        try self.refuseIfMirrored(request)
        let result = try self.perform(request, stream: stream, progress: progress)
        if !request.isReadOnly {
            try self.pool.flush()
            // Base descriptors no record names any more go only once that change is durable.
            try self.pool.collectBases()
        }
        return result
    }

    private func perform(_ request: ControlRequest, stream: StreamDescriptor, progress: (UInt64, UInt64) -> Void)
        throws(StrataError) -> ControlResult
    {
        switch request {
        case .poolStatus:
            var status = self.pool.status()
            for volume in try self.pool.listVolumes() {
                if let problem = volume.baseProblem { status.unavailable[volume.name] = problem }
            }
            if let hydrator = self.hydrator {
                status.hydrations = try hydrator.active.map { hydration throws(StrataError) in
                    try self.volumeStatus(hydration.volume)
                }
            }
            return .status(status)
        case .createVolume(let name, let size):
            try self.pool.createVolume(name, size: size)
        case .listVolumes:
            return .volumes(try self.pool.listVolumes())
        case .resizeVolume(let name, let size, let allowShrink):
            try self.pool.resizeVolume(name, size: size, allowShrink: allowShrink)
        case .renameVolume(let name, let newName):
            try self.pool.renameVolume(name, to: newName)
        case .deleteVolume(let name, let recursive, let force):
            try self.releaseConnections(ids: try self.pool.ids(ofVolume: name), object: "volume \(name)", force: force)
            try self.pool.deleteVolume(name, recursive: recursive)
        case .createSnapshot(let volume, let snapshot):
            try self.pool.createSnapshot(volume, snapshot)
        case .listSnapshots(let volume):
            return .snapshots(try self.pool.listSnapshots(of: volume))
        case .deleteSnapshot(let volume, let snapshot, let force):
            let id = try self.pool.handle("\(volume)@\(snapshot)").id
            try self.releaseConnections(ids: [id], object: "snapshot \(volume)@\(snapshot)", force: force)
            try self.pool.deleteSnapshot(volume, snapshot)
        case .rollback(let volume, let snapshot):
            try self.pool.rollback(volume, snapshot)
        case .clone(let volume, let snapshot, let newName):
            try self.pool.clone(volume, snapshot, to: newName)
        case .importImage(let file, let volume, let create):
            return .transfer(
                try ImageTransfer.importImage(pool: self.pool, file: file, volume: volume, create: create, progress: progress))
        case .exportImage(let source, let file):
            return .transfer(try ImageTransfer.exportImage(pool: self.pool, source: source, file: file, progress: progress))
        case .diff(let from, let to):
            return .extents(try self.pool.diff(from: from, to: to))
        case .check:
            var report = self.pool.checkDurable()
            report.problems += self.pool.bases.verifyAll()
            return .check(report)
        case .createBasedVolume(let name, let size, let base):
            try self.pool.createVolume(name, size: size, basePath: base)
        case .createRemoteVolume(let name, let size, let remote, let volume, let snapshot):
            try self.createRemoteVolume(name, size: size, remote: remote, volume: volume, snapshot: snapshot)
        case .volumeLayers(let name):
            return .layers(try self.pool.layers(of: name))
        case .flattenVolume(let name, let rate):
            try self.pool.flatten(name, rateBytesPerSecond: rate, progress: progress)
        case .hydrateVolume(let name, let rate, let mode):
            try self.hydrate(name, rate: rate, mode: mode, progress: progress)
        case .volumeStatus(let name):
            return .volumeStatus(try self.volumeStatus(name))
        case .rebaseVolume(let name, let base):
            try self.pool.rebase(name, basePath: base)
        case .pushLayer(let volume, let name):
            var snapshot = name ?? ""
            if name == nil { snapshot = try self.nextLayerName(volume) }
            try self.pool.createSnapshot(volume, snapshot)
            return .created("\(volume)@\(snapshot)")
        case .remote(let request):
            return .remote(try RemoteService(pool: self.pool).execute(request, progress: progress))
        case .connections:
            return .connections(
                (self.registry?.all ?? []).map {
                    ConnectionInfo(protocolName: $0.protocolName, remote: $0.remote, export: $0.export)
                }.sorted { ($0.export ?? "", $0.remote) < ($1.export ?? "", $1.remote) })
        case .send, .receive, .abortReceive, .receiveToken, .promote:
            return try self.performStream(request, stream: stream, progress: progress)
        case .replicateStart, .replicateStop, .replicateStatus:
            return try self.performReplication(request)
        case .mirror(let request):
            guard let mirrors = self.mirrors else {
                throw StrataError(
                    .unsupported, "mirror: mirrors run in the daemon, which holds their legs open; start `strata serve` first")
            }
            return .mirror(try mirrors.execute(request))
        }
        return .done
    }

    /// Refuses what would change a mirrored volume behind its legs' backs (delete, rollback,
    /// resize, rename, receive, promote), naming the legs and the fix. The table is read from the
    /// pool's directory, so a CLI that opened the pool itself refuses the same.
    private func refuseIfMirrored(_ request: ControlRequest) throws(StrataError) {
        let target: (volume: String, operation: String)
        switch request {
        case .deleteVolume(let name, _, _): target = (name, "delete volume")
        case .rollback(let volume, _): target = (volume, "rollback")
        case .resizeVolume(let name, _, _): target = (name, "resize volume")
        case .renameVolume(let name, _): target = (name, "rename volume")
        case .receive(let volume, _): target = (volume, "receive into")
        case .promote(let volume): target = (volume, "promote")
        default: return
        }
        guard let directory = self.pool.directory else { return }
        try MirrorTable.load(directory: directory).refuseIfMirrored(target.volume, operation: target.operation)
        try MirrorLegTargets.refuseIfHeld(target.volume, operation: target.operation, pool: self.pool, directory: directory)
    }

    /// Opens `remote:volume@snapshot` and creates `name` over it.
    private func createRemoteVolume(
        _ name: String, size: UInt64?, remote: String, volume: String, snapshot: String
    ) throws(StrataError) {
        guard let directory = self.pool.directory else {
            throw StrataError(.invalidArgument, "create volume \(name): this pool has no directory to keep remotes.json in")
        }
        let config = try RemoteTable(directory: directory).remote(remote)
        let base = try RemoteBase.open(remote: config, volume: volume, snapshot: snapshot, expectedSHA256: nil)
        try self.pool.createVolume(
            name, size: size, base: base, descriptor: BaseDescriptor.recording(base, remote: base.reference))
    }

    /// `layerN` with N one past the highest layer number among the volume's snapshots.
    private func nextLayerName(_ volume: String) throws(StrataError) -> String {
        let numbers = try self.pool.listSnapshots(of: volume).compactMap { snapshot -> Int? in
            guard snapshot.name.hasPrefix("layer") else { return nil }
            return Int(snapshot.name.dropFirst("layer".count))
        }
        return "layer\((numbers.max() ?? 0) + 1)"
    }

    /// Refuses (naming them) or, with `force`, closes the connections using `ids`.
    private func releaseConnections(ids: Set<UInt64>, object: String, force: Bool) throws(StrataError) {
        guard let registry = self.registry else { return }
        let users = registry.connections(volumeIDs: ids)
        guard !users.isEmpty else { return }
        if !force {
            let names = users.prefix(5).map { "\($0.protocolName) \($0.remote) on \($0.export ?? "?")" }
            throw StrataError(
                .busy,
                "delete \(object): in use by \(users.count) connection(s) (\(names.joined(separator: ", "))); disconnect them or pass --force"
            )
        }
        for user in users {
            // Closing waits on the channel's loop from this thread-pool thread, never from a loop.
            try? user.channel.close().wait()
        }
    }
}
