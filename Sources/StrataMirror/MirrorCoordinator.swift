// The mirrors of one pool: the `strata mirror` verbs, the legs' recovery when the daemon opens
// the pool, and the worker that runs copies, takes connected legs' periodic split points,
// retries degraded legs (auto-resync) and commits the leg pools. The daemon runs `run` as a
// service on a dedicated thread and calls `shutdown` after the front ends have drained, so a
// clean stop leaves every connected leg with a fresh split-point pair and the next start has
// nothing to copy.
//
// The verbs change the pools first and `mirrors.json` last (MirrorTable.swift explains why that
// order is safe); a verb that fails leaves both sides as they were.

import Dispatch
import Foundation
import StrataCore
import StrataReplication
import Synchronization

/// The mirrors of one pool.
public final class MirrorCoordinator: @unchecked Sendable {
    public let pool: Pool
    public let directory: String
    private let lock = NSLock()
    // Guarded by `lock`.
    private var volumes: [String: MirroredVolume] = [:]
    private let saveLock = NSLock()
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let log: @Sendable (String) -> Void
    /// The connections of remote legs; nil refuses them (`mirror add --to`).
    let links: MirrorLinks?

    private init(pool: Pool, directory: String, links: MirrorLinks?, log: @escaping @Sendable (String) -> Void) {
        self.pool = pool
        self.directory = directory
        self.links = links
        self.log = log
    }

    /// Opens the mirrors of the pool in `directory`: reopens each leg and recovers it (a
    /// connected or resyncing leg resyncs what changed since the newest split-point pair both
    /// sides hold; a leg that cannot be opened is degraded and retried). A remote leg is reopened
    /// by the worker's first pass instead, once `links` runs: a write before that finds the leg
    /// not open and makes it degraded, and the recovery then resyncs it like any degraded leg.
    /// - Throws: when `mirrors.json` is unreadable.
    public static func open(
        pool: Pool, directory: String, links: MirrorLinks? = nil, log: @escaping @Sendable (String) -> Void
    ) throws(StrataError) -> MirrorCoordinator {
        let coordinator = MirrorCoordinator(pool: pool, directory: directory, links: links, log: log)
        let table = try MirrorTable.load(directory: directory)
        for record in table.legs {
            let mirrored: MirroredVolume
            do {
                mirrored = try coordinator.mirroredVolume(record.volume)
            } catch {
                log("mirror \(record.volume) leg \(record.leg): \(error.message); the leg is kept, unused")
                continue
            }
            let runtime = LegRuntime(record: record, leg: nil)
            mirrored.addLeg(runtime)
            if record.remote != nil {
                runtime.with { $0.needsRecovery = true }
            } else {
                coordinator.recover(mirrored, runtime)
            }
        }
        try coordinator.save()
        return coordinator
    }

    /// The volume's `MirroredVolume`, made and installed as its tap when it has none.
    private func mirroredVolume(_ volume: String) throws(StrataError) -> MirroredVolume {
        try self.lock.holding { () throws(StrataError) -> MirroredVolume in
            if let existing = self.volumes[volume] { return existing }
            let mirrored = try MirroredVolume(pool: self.pool, volume: volume) { [weak self] in self?.saveLogging() }
            guard !mirrored.handle.readOnly else {
                throw StrataError(
                    .invalidArgument, "mirror \(volume): not a writable volume (a snapshot or a replica cannot be mirrored)")
            }
            self.volumes[volume] = mirrored
            self.pool.taps.install(mirrored, volumeID: mirrored.handle.id)
            return mirrored
        }
    }

    private func marker(_ record: MirrorLegRecord) -> LegMarker {
        LegMarker(sourcePool: self.pool.status().uuid, volume: record.volume, leg: record.leg)
    }

    /// Opens an existing leg: its pool, or its session on the leg daemon.
    private func reopenLeg(_ record: MirrorLegRecord, size: UInt64) throws(StrataError) -> any MirrorLeg {
        guard let remote = record.remote else {
            return try LocalPoolLeg.reopen(directory: record.poolDirectory, marker: self.marker(record))
        }
        return try self.openRemote(record, address: remote, create: false, size: size, allocatedBytes: 0)
    }

    private func openRemote(
        _ record: MirrorLegRecord, address: String, create: Bool, size: UInt64, allocatedBytes: UInt64
    ) throws(StrataError) -> RemoteLeg {
        guard let links = self.links else {
            throw StrataError(
                .unsupported, "mirror \(record.volume) leg \(record.leg): a leg on another daemon needs a running daemon (`strata serve`)")
        }
        let target = try Self.parseAddress(address, volume: record.volume)
        let open = MirrorLegOpen(
            volume: record.volume, sourcePool: self.pool.status().uuid, leg: record.leg, create: create, size: size,
            allocatedBytes: allocatedBytes)
        return try RemoteLeg.open(
            links: links, address: target, secretFile: record.secretFile ?? "", open: open, timeoutMillis: record.timeoutMillis)
    }

    /// HOST:PORT (an IPv6 host in brackets).
    static func parseAddress(_ text: String, volume: String) throws(StrataError) -> TransportAddress {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port)
        else {
            throw StrataError(.invalidArgument, "mirror add \(volume): --to \(text) is not HOST:PORT; give the leg daemon's --replication address")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else {
            throw StrataError(.invalidArgument, "mirror add \(volume): --to \(text) has no host; give HOST:PORT")
        }
        return TransportAddress(host: host, port: port)
    }

    /// Reopens a leg after a restart and starts what its state needs.
    private func recover(_ mirrored: MirroredVolume, _ runtime: LegRuntime) {
        let record = runtime.currentRecord
        do throws(StrataError) {
            let leg = try self.reopenLeg(record, size: try self.pool.size(of: mirrored.handle))
            runtime.with { $0.leg = leg }
            try mirrored.recover(runtime)
            self.log(
                "mirror \(record.volume) leg \(record.leg): \(runtime.state.rawValue) from split point \(runtime.currentRecord.generation)"
            )
        } catch {
            mirrored.fail(runtime, error)
            self.log("mirror \(record.volume) leg \(record.leg): \(error.message)")
        }
    }

    // MARK: Verbs

    /// Runs one `strata mirror` verb and returns the status of the legs it concerns.
    public func execute(_ request: MirrorRequest) throws(StrataError) -> [MirrorLegStatus] {
        switch request {
        case .add(let volume, let directory, let leg, let rate, let autoResync, let timeout):
            return [
                try self.add(
                    volume: volume, directory: directory, leg: leg, rate: rate, autoResync: autoResync,
                    timeoutMillis: timeout ?? MirrorLimits.legTimeoutMillisDefault)
            ]
        case .addRemote(let volume, let address, let secretFile, let leg, let rate, let autoResync, let timeout):
            return [
                try self.addRemote(
                    volume: volume, address: address, secretFile: secretFile, leg: leg, rate: rate, autoResync: autoResync,
                    timeoutMillis: timeout ?? MirrorLimits.legTimeoutMillisDefault)
            ]
        case .detach(let volume, let leg, let name, let writable):
            return [try self.detach(volume: volume, leg: leg, as: name, writable: writable)]
        case .attach(let volume, let leg, let full, let rate):
            return [try self.attach(volume: volume, leg: leg, full: full, rate: rate)]
        case .status(let volume):
            if let volume, self.lock.withLock({ self.volumes[volume] }) == nil {
                _ = try self.pool.handle(volume)
            }
            return self.status(volume: volume)
        case .remove(let volume, let leg):
            return try self.remove(volume: volume, leg: leg)
        }
    }

    private func add(
        volume: String, directory: String, leg: String?, rate: UInt64?, autoResync: Bool, timeoutMillis: UInt64
    ) throws(StrataError) -> MirrorLegStatus {
        let handle = try self.pool.handle(volume)
        guard !handle.readOnly else {
            throw StrataError(.invalidArgument, "mirror add \(volume): a snapshot or replica cannot be mirrored; give a volume")
        }
        let path = URL(fileURLWithPath: directory).standardizedFileURL.path
        let existing = self.lock.withLock { self.volumes.values.flatMap { $0.legs.map(\.currentRecord) } }
        let legName = leg ?? Self.freeLegName(existing.filter { $0.volume == volume }.map(\.leg))
        try Names.validate(legName, kind: "mirror leg", operation: "mirror add \(volume)")
        if let same = existing.first(where: { $0.poolDirectory == path }) {
            throw StrataError(
                .alreadyExists,
                same.volume == volume
                    ? "mirror add \(volume): already mirrored to \(path) (leg \(same.leg)); see `strata mirror status \(volume)`"
                    : "mirror add \(volume): \(path) is the leg \(same.leg) of volume \(same.volume); give another pool")
        }
        if existing.contains(where: { $0.volume == volume && $0.leg == legName }) {
            throw StrataError(
                .alreadyExists, "mirror add \(volume): it has a leg named \(legName); choose another --name")
        }
        if path == URL(fileURLWithPath: self.directory).standardizedFileURL.path {
            throw StrataError(
                .invalidArgument, "mirror add \(volume): \(path) is the volume's own pool; give a second pool, on another disk")
        }
        let size = try self.pool.size(of: handle)
        let allocated = try self.pool.listVolumes().first { $0.name == volume }?.allocatedBytes ?? size
        let record = MirrorLegRecord(
            volume: volume, leg: legName, poolDirectory: path, state: .syncing, generation: 0, splitAt: nil,
            detachedAs: nil, writable: false, rateBytesPerSecond: rate, autoResync: autoResync,
            timeoutMillis: timeoutMillis, lastError: nil)
        let legPool = try LocalPoolLeg.create(
            directory: path, volume: volume, size: size, allocatedBytes: allocated, marker: self.marker(record))
        return try self.install(record, leg: legPool) {
            LegMarker.remove(directory: path)
            try? legPool.pool.deleteVolume(volume, recursive: true)
            try? legPool.pool.flush()
            legPool.close()
        }
    }

    private func addRemote(
        volume: String, address: String, secretFile: String, leg: String?, rate: UInt64?, autoResync: Bool,
        timeoutMillis: UInt64
    ) throws(StrataError) -> MirrorLegStatus {
        let handle = try self.pool.handle(volume)
        guard !handle.readOnly else {
            throw StrataError(.invalidArgument, "mirror add \(volume): a snapshot or replica cannot be mirrored; give a volume")
        }
        let location = try Self.parseAddress(address, volume: volume).description
        let existing = self.lock.withLock { self.volumes.values.flatMap { $0.legs.map(\.currentRecord) } }
        let legName = leg ?? Self.freeLegName(existing.filter { $0.volume == volume }.map(\.leg))
        try Names.validate(legName, kind: "mirror leg", operation: "mirror add \(volume)")
        if let same = existing.first(where: { $0.volume == volume && $0.remote == location }) {
            throw StrataError(
                .alreadyExists,
                "mirror add \(volume): already mirrored to \(location) (leg \(same.leg)); see `strata mirror status \(volume)`")
        }
        if existing.contains(where: { $0.volume == volume && $0.leg == legName }) {
            throw StrataError(.alreadyExists, "mirror add \(volume): it has a leg named \(legName); choose another --name")
        }
        let size = try self.pool.size(of: handle)
        let allocated = try self.pool.listVolumes().first { $0.name == volume }?.allocatedBytes ?? size
        var record = MirrorLegRecord(
            volume: volume, leg: legName, poolDirectory: "", state: .syncing, generation: 0, splitAt: nil,
            detachedAs: nil, writable: false, rateBytesPerSecond: rate, autoResync: autoResync,
            timeoutMillis: timeoutMillis, lastError: nil)
        record.remote = location
        record.secretFile = secretFile
        let remote = try self.openRemote(record, address: location, create: true, size: size, allocatedBytes: allocated)
        return try self.install(record, leg: remote) {
            do throws(StrataError) { try remote.discard() } catch {
                self.log("mirror add \(volume): the copy on \(location) was left (\(error.message)); delete it there")
            }
            remote.close()
        }
    }

    /// Puts a new leg under the volume's mirror and starts its full copy; on failure takes it
    /// out again and runs `undo` (which deletes the leg's copy), so nothing is changed.
    private func install(_ record: MirrorLegRecord, leg: any MirrorLeg, undo: () -> Void) throws(StrataError)
        -> MirrorLegStatus
    {
        var mirroredVolume: MirroredVolume?
        let runtime = LegRuntime(record: record, leg: leg)
        runtime.with { $0.setMachine(LegStateMachine(state: .detached)) }
        do {
            let mirrored = try self.mirroredVolume(record.volume)
            mirroredVolume = mirrored
            mirrored.addLeg(runtime)
            try mirrored.startCopy(runtime, machine: LegStateMachine(state: .syncing), full: true, fresh: true)
            try self.save()
        } catch {
            if let mirroredVolume { self.forget(mirroredVolume, runtime) }
            undo()
            throw error
        }
        self.wake.signal()
        return self.status(of: runtime)
    }

    private func detach(volume: String, leg: String?, as name: String?, writable: Bool) throws(StrataError)
        -> MirrorLegStatus
    {
        let (mirrored, runtime) = try self.find(volume: volume, leg: leg, operation: "mirror detach")
        if let name { try Names.validate(name, kind: "detached copy", operation: "mirror detach \(volume)") }
        var machine = runtime.with { $0.machine }
        try machine.handle(.detach, leg: runtime.name)
        var detached = false
        try mirrored.takeSplitPoint(runtime) { runtime in
            // The leg may have failed since the check: then it stays as it is.
            guard runtime.machine.state == .connected else { return }
            runtime.setMachine(machine)
            runtime.record.splitAt = MirrorClock.timestamp()
            runtime.record.detachedAs = name
            runtime.record.writable = writable
            detached = true
        }
        guard detached else {
            throw StrataError(
                .io,
                "mirror detach \(volume) leg \(runtime.name): the leg failed while detaching (\(runtime.currentRecord.lastError ?? "?")); see `strata mirror status`"
            )
        }
        try self.save()
        // The split is done: the copy holds that instant whatever follows. A leg that cannot
        // rename or unlock its copy says so, and the copy stays under the volume's name, read-only.
        do throws(StrataError) {
            try runtime.call { leg throws(StrataError) in try leg.detach(as: name, writable: writable) }
        } catch {
            runtime.with {
                $0.record.detachedAs = nil
                $0.record.writable = false
                $0.record.lastError = error.message
            }
            try self.save()
            throw StrataError(
                error.code,
                "mirror detach \(volume) leg \(runtime.name): detached, but the copy keeps the volume's name, read-only: \(error.message)")
        }
        return self.status(of: runtime)
    }

    private func attach(volume: String, leg: String?, full: Bool, rate: UInt64?) throws(StrataError) -> MirrorLegStatus {
        let (mirrored, runtime) = try self.find(volume: volume, leg: leg, operation: "mirror attach")
        var machine = runtime.with { $0.machine }
        try machine.handle(.attach, leg: runtime.name)
        try self.reopenIfNeeded(mirrored, runtime)
        try runtime.call { leg throws(StrataError) in try leg.attach() }
        try mirrored.startCopy(runtime, machine: machine, full: full, fresh: false)
        runtime.with {
            $0.record.detachedAs = nil
            $0.record.writable = false
            if let rate { $0.record.rateBytesPerSecond = rate }
        }
        try self.save()
        self.wake.signal()
        return self.status(of: runtime)
    }

    private func remove(volume: String, leg: String?) throws(StrataError) -> [MirrorLegStatus] {
        let runtimes: [(MirroredVolume, LegRuntime)]
        if let leg {
            runtimes = [try self.find(volume: volume, leg: leg, operation: "mirror remove")]
        } else {
            guard let mirrored = self.lock.withLock({ self.volumes[volume] }), !mirrored.legs.isEmpty else {
                _ = try self.pool.handle(volume)
                throw StrataError(.notFound, "mirror remove \(volume): it has no mirror legs; see `strata mirror status`")
            }
            runtimes = mirrored.legs.map { (mirrored, $0) }
        }
        var removed: [MirrorLegStatus] = []
        for (mirrored, runtime) in runtimes {
            removed.append(self.status(of: runtime))
            self.forget(mirrored, runtime)
            if runtime.with({ $0.leg }) != nil {
                do throws(StrataError) {
                    try mirrored.dropSplitPoints(runtime, keeping: 0)
                } catch {
                    self.log("mirror remove \(volume) leg \(runtime.name): split points left on the leg: \(error.message)")
                }
            } else {
                for name in try self.pool.hiddenSnapshots(of: volume)
                where MirrorLegRecord.generation(ofSplitPoint: name, leg: runtime.name) != nil {
                    try self.pool.deleteHiddenSnapshot(volume, name)
                }
            }
            if let leg = runtime.with({ $0.leg }) {
                try? leg.flush()
                do throws(StrataError) { try leg.release() } catch {
                    self.log("mirror remove \(volume) leg \(runtime.name): the leg's copy still names this mirror: \(error.message)")
                }
                leg.close()
                runtime.with { $0.leg = nil }
            }
        }
        try self.pool.flush()
        try self.save()
        return removed
    }

    /// Takes a leg out of its volume's mirror (at one instant) and the volume's tap when it was the last.
    private func forget(_ mirrored: MirroredVolume, _ runtime: LegRuntime) {
        mirrored.quiesce.lockExclusive()
        mirrored.removeLeg(runtime)
        mirrored.quiesce.unlock()
        if mirrored.legs.isEmpty {
            self.lock.withLock {
                self.volumes[mirrored.volume] = nil
                self.pool.taps.remove(volumeID: mirrored.handle.id)
            }
        }
    }

    /// Opens a degraded leg's pool again (closing what is left of it first).
    private func reopenIfNeeded(_ mirrored: MirroredVolume, _ runtime: LegRuntime) throws(StrataError) {
        let (leg, record) = runtime.with { ($0.leg, $0.record) }
        if let leg, (try? LegCall.run(leg: record.leg, timeoutMillis: record.timeoutMillis) { () throws(StrataError) in
            _ = try leg.size()
        }) != nil, runtime.state != .degraded {
            return
        }
        leg?.close()
        runtime.with { $0.leg = nil }
        let reopened = try self.reopenLeg(record, size: try self.pool.size(of: mirrored.handle))
        runtime.with { $0.leg = reopened }
        let generation = try mirrored.newestCommonSplitPoint(runtime)
        runtime.with { $0.record.generation = generation }
    }

    private func find(volume: String, leg: String?, operation: String) throws(StrataError) -> (MirroredVolume, LegRuntime) {
        guard let mirrored = self.lock.withLock({ self.volumes[volume] }), !mirrored.legs.isEmpty else {
            _ = try self.pool.handle(volume)
            throw StrataError(.notFound, "\(operation) \(volume): it has no mirror legs; add one with `strata mirror add`")
        }
        let legs = mirrored.legs
        if let leg {
            guard let runtime = legs.first(where: { $0.name == leg }) else {
                throw StrataError(
                    .notFound,
                    "\(operation) \(volume): no leg named \(leg) (it has \(legs.map(\.name).joined(separator: ", ")))")
            }
            return (mirrored, runtime)
        }
        guard legs.count == 1 else {
            throw StrataError(
                .invalidArgument,
                "\(operation) \(volume): it has \(legs.count) legs (\(legs.map(\.name).joined(separator: ", "))); name one")
        }
        return (mirrored, legs[0])
    }

    static func freeLegName(_ taken: [String]) -> String {
        var index = 1
        while taken.contains("leg\(index)") { index += 1 }
        return "leg\(index)"
    }

    // MARK: Status

    /// Every leg's status (of one volume, or of all), sorted by volume and leg.
    public func status(volume: String? = nil) -> [MirrorLegStatus] {
        let mirrored = self.lock.withLock { Array(self.volumes.values) }
        return mirrored.filter { volume == nil || $0.volume == volume }.flatMap { mirrored in
            mirrored.legs.map { self.status(of: $0) }
        }.sorted { ($0.volume, $0.leg) < ($1.volume, $1.leg) }
    }

    private func status(of runtime: LegRuntime) -> MirrorLegStatus {
        runtime.with { runtime in
            let record = runtime.record
            var rate: UInt64 = 0
            var copySeconds: Double?
            if let started = runtime.copyStarted {
                let elapsed = (runtime.copyFinished ?? .now) - started
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                copySeconds = seconds
                if seconds > 0 { rate = UInt64(Double(runtime.copiedBytes) / seconds) }
            }
            // A remote leg the worker has not reopened since the start is not open: a write now
            // would find it so and make it degraded.
            let reconnecting = runtime.needsRecovery
            return MirrorLegStatus(
                volume: record.volume, leg: record.leg, location: record.location,
                state: reconnecting ? .degraded : runtime.machine.state, bytesToResync: runtime.pendingBytes, bytesResynced: runtime.copiedBytes,
                rateBytesPerSecond: rate, rateLimitBytesPerSecond: record.rateBytesPerSecond,
                lastError: reconnecting ? "reconnecting to \(record.location) since the daemon started" : record.lastError,
                splitAt: record.splitAt, copyName: record.detachedAs ?? record.volume, writable: record.writable,
                autoResync: record.autoResync, generation: record.generation, remote: record.remote != nil,
                copySeconds: copySeconds)
        }
    }

    // MARK: Persistence

    /// Writes `mirrors.json` from every leg's record.
    public func save() throws(StrataError) {
        try self.saveLock.holding { () throws(StrataError) in
            var table = MirrorTable()
            let mirrored = self.lock.withLock { Array(self.volumes.values) }
            table.legs = mirrored.flatMap { $0.legs.map(\.currentRecord) }.sorted { ($0.volume, $0.leg) < ($1.volume, $1.leg) }
            try table.save(directory: self.directory)
        }
    }

    private func saveLogging() {
        do throws(StrataError) { try self.save() } catch { self.log("mirrors: \(error.message)") }
    }

    // MARK: Worker

    /// Runs copies, split points, retries and leg commits until `stop`; blocks (a dedicated thread).
    public func run() {
        while !self.stopping.load(ordering: .sequentiallyConsistent) {
            var busy = false
            let legs = self.lock.withLock { self.volumes.values.flatMap { mirrored in mirrored.legs.map { (mirrored, $0) } } }
            for (mirrored, runtime) in legs where !self.stopping.load(ordering: .relaxed) {
                busy = self.tick(mirrored, runtime) || busy
            }
            if !busy { _ = self.wake.wait(timeout: .now() + .milliseconds(100)) }
        }
    }

    /// Does the background work (copies, split points due, retries) until there is none left;
    /// for tests, which drive the worker on their own thread.
    func runUntilIdle() {
        var busy = true
        while busy {
            busy = false
            let legs = self.lock.withLock { self.volumes.values.flatMap { mirrored in mirrored.legs.map { (mirrored, $0) } } }
            for (mirrored, runtime) in legs { busy = self.tick(mirrored, runtime) || busy }
        }
    }

    /// The mirrored volumes by name (tests).
    var volumesForTests: [String: MirroredVolume] { self.lock.withLock { self.volumes } }

    /// Asks `run` to return (it does within one batch).
    public func stop() {
        self.stopping.store(true, ordering: .sequentiallyConsistent)
        self.wake.signal()
    }

    /// After `run` returned: a last split point for every connected leg, the legs flushed and closed.
    public func shutdown() {
        let legs = self.lock.withLock { self.volumes.values.flatMap { mirrored in mirrored.legs.map { (mirrored, $0) } } }
        for (mirrored, runtime) in legs where runtime.state == .connected {
            do throws(StrataError) { try mirrored.takeSplitPoint(runtime) } catch { mirrored.fail(runtime, error) }
        }
        // The pool's last commit (after this) must not reach the closed legs: it would mark
        // them degraded in the table of a clean stop.
        self.lock.withLock {
            for mirrored in self.volumes.values { self.pool.taps.remove(volumeID: mirrored.handle.id) }
        }
        for (_, runtime) in legs {
            if let leg = runtime.with({ $0.leg }) {
                try? leg.flush()
                leg.close()
                runtime.with { $0.leg = nil }
            }
        }
        self.saveLogging()
    }

    /// One step of one leg's background work; true when it did work and should be called again at once.
    private func tick(_ mirrored: MirroredVolume, _ runtime: LegRuntime) -> Bool {
        if runtime.with({ runtime in defer { runtime.needsRecovery = false }; return runtime.needsRecovery }) {
            self.recover(mirrored, runtime)
            return true
        }
        let (state, record) = runtime.with { ($0.machine.state, $0.record) }
        switch state {
        case .syncing, .resyncing:
            if mirrored.copyDone(runtime) {
                mirrored.finishCopy(runtime)
                self.log("mirror \(record.volume) leg \(record.leg): \(runtime.state.rawValue)")
                return true
            }
            let copied = mirrored.copyStep(runtime)
            if let limit = record.rateBytesPerSecond, limit > 0 { self.pace(runtime, limit: limit) }
            self.commitLeg(runtime)
            self.checkpointFullCopy(mirrored, runtime)
            return copied > 0
        case .connected:
            if runtime.with({ ContinuousClock.now - $0.lastSplitPoint }) >= .seconds(MirrorLimits.splitPointSeconds) {
                do throws(StrataError) { try mirrored.takeSplitPoint(runtime) } catch { mirrored.fail(runtime, error) }
            }
        case .degraded:
            if record.autoResync,
                runtime.with({ ContinuousClock.now - $0.lastProbe }) >= .seconds(MirrorLimits.probeSeconds)
            {
                self.probe(mirrored, runtime)
            }
        case .detached:
            break
        }
        self.commitLeg(runtime)
        return false
    }

    /// Sleeps as long as the copy is ahead of its rate limit (at most a second at a time).
    private func pace(_ runtime: LegRuntime, limit: UInt64) {
        let (copied, started) = runtime.with { ($0.copiedBytes, $0.copyStarted) }
        guard let started else { return }
        let due = Duration.seconds(Double(copied) / Double(limit))
        let elapsed = ContinuousClock.now - started
        if due > elapsed { Thread.sleep(forTimeInterval: min(1, Self.seconds(due - elapsed))) }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Tries a degraded leg again; when it answers, resyncs what changed.
    private func probe(_ mirrored: MirroredVolume, _ runtime: LegRuntime) {
        runtime.with { $0.lastProbe = .now }
        do throws(StrataError) {
            try self.reopenIfNeeded(mirrored, runtime)
            var machine = runtime.with { $0.machine }
            try machine.handle(.attach, leg: runtime.name)
            try mirrored.startCopy(runtime, machine: machine, full: false, fresh: false)
            self.saveLogging()
            self.log("mirror \(mirrored.volume) leg \(runtime.name): usable again, resyncing")
        } catch {
            runtime.with { $0.record.lastError = error.message }
        }
    }

    private func commitLeg(_ runtime: LegRuntime) {
        let due = runtime.with { runtime -> Bool in
            guard ContinuousClock.now - runtime.lastCommit >= .seconds(MirrorLimits.legCommitSeconds) else { return false }
            runtime.lastCommit = .now
            return true
        }
        guard due, let leg = runtime.with({ $0.leg }) else { return }
        do throws(StrataError) { try leg.commitIfNeeded() } catch {
            runtime.with { $0.record.lastError = error.message }
        }
    }

    /// A full copy's checkpoint (every `MirrorLimits.fullCopyCheckpointSeconds`): a new
    /// split-point pair, at whose instant every chunk below the copy's next range is copied and
    /// the two copies are equal there, and `fullCopyFrom` moved to that chunk. After a crash the
    /// copy resumes with the chunks changed since that pair (a window of seconds) and the rest
    /// of the full copy, not with every chunk the copy wrote since the split.
    private func checkpointFullCopy(_ mirrored: MirroredVolume, _ runtime: LegRuntime) {
        let due = runtime.with { runtime -> Bool in
            runtime.record.fullCopyFrom != nil && runtime.machine.state == .resyncing
                && ContinuousClock.now - runtime.lastSplitPoint >= .seconds(MirrorLimits.fullCopyCheckpointSeconds)
        }
        guard due else { return }
        do throws(StrataError) {
            let chunks = (try self.pool.size(of: mirrored.handle) + mirrored.chunkSize - 1) / mirrored.chunkSize
            try mirrored.takeSplitPoint(runtime) { runtime in
                runtime.with { runtime in
                    guard runtime.record.fullCopyFrom != nil, runtime.machine.state == .resyncing else { return }
                    runtime.record.fullCopyFrom = min(runtime.pending.first?.lowerBound ?? chunks, chunks)
                }
            }
            self.saveLogging()
        } catch {
            mirrored.fail(runtime, error)
        }
    }
}

// MARK: Exports

/// A leg's copy is exported as `VOLUME@mirror-LEG` (read-only) and, once detached with `--as
/// NAME`, also as `NAME`; a copy detached with `--writable` is writable under both.
extension MirrorCoordinator: ForeignExports {
    /// The export name of a leg's copy.
    public static func exportName(volume: String, leg: String) -> String { "\(volume)@mirror-\(leg)" }

    public func foreignNames() -> [String] {
        // A remote leg's copy is exported by its own daemon.
        self.status().filter { !$0.remote }.flatMap { leg in
            [Self.exportName(volume: leg.volume, leg: leg.leg)] + (leg.copyName != leg.volume ? [leg.copyName] : [])
        }.sorted()
    }

    public func foreign(_ name: String) -> (pool: Pool, handle: VolumeHandle)? {
        let mirrored = self.lock.withLock { Array(self.volumes.values) }
        for volume in mirrored {
            for runtime in volume.legs {
                let (record, leg, state) = runtime.with { ($0.record, $0.leg, $0.machine.state) }
                guard name == Self.exportName(volume: record.volume, leg: record.leg) || name == record.detachedAs,
                    let local = leg as? LocalPoolLeg, let handle = try? local.pool.handle(record.volume)
                else { continue }
                let writable = state == .detached && record.writable
                return (local.pool, VolumeHandle(id: handle.id, name: name, readOnly: !writable))
            }
        }
        return nil
    }
}
