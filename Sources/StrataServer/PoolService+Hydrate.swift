// Hydrate and status requests (docs/OBJECTSTORE.md "Background hydration"): in the daemon a
// hydration runs in the background (`Hydrator`); a CLI that opened the pool itself runs it in
// the foreground, or, for `volume create --from --hydrate lazy`, only marks the volume so the
// daemon runs it when it opens the pool.

import Foundation
import StrataCore
import StrataObjectStore

extension PoolService {
    func hydrate(
        _ name: String, rate: UInt64?, mode: HydrateMode, progress: (UInt64, UInt64) -> Void
    ) throws(StrataError) {
        if let rate { guard rate > 0 else { throw StrataError(.invalidArgument, "hydrate \(name): --rate must be positive") } }
        guard Hydrator.hasRemoteBase(self.pool, name) else {
            if try self.pool.base(of: name) == nil, self.hydrator?.hydration(of: name)?.state == .done { return }
            throw StrataError(
                .invalidArgument,
                "hydrate \(name): the volume has no remote base; only a volume created with --from hydrates (`strata volume flatten` copies an image file's base)"
            )
        }
        guard let hydrator = self.hydrator else {
            try self.pool.markHydrating(name)
            // Stored for the daemon that resumes it (HydrationRates.swift).
            let rates = HydrationRates(pool: self.pool)
            if let rate { try rates.set(rate, for: name) }
            guard mode != .background else { return }
            let stored = try rates.rate(of: name)
            let hydration = Hydration(pool: self.pool, volume: name, rate: rate ?? stored ?? Limits.hydrationRateDefault)
            try hydration.run(retrying: false) { done, total in progress(UInt64(done), UInt64(total)) }
            if hydration.state == .done { try rates.set(nil, for: name) }
            return
        }
        let hydration = try hydrator.start(name, rate: rate)
        guard mode == .wait else { return }
        let errorsBefore = hydration.errors
        while hydration.state != .done {
            if hydration.errors > errorsBefore, let error = hydration.lastError {
                throw StrataError(
                    error.code,
                    "\(error.message) (the daemon keeps retrying the hydration of \(name); `strata volume status \(name)` shows it)")
            }
            if hydration.isCancelled {
                throw StrataError(.busy, "hydrate \(name): the daemon is stopping; it resumes the hydration when it starts")
            }
            var status = VolumeStatus(volume: name, sizeBytes: 0)
            hydration.fill(&status)
            progress(UInt64(status.objectsFetched), UInt64(status.objectsTotal))
            usleep(100_000)
        }
    }

    /// `strata volume status NAME`: the base, the hydration mode and state, and its progress.
    /// - Throws: `.notFound` for a missing volume.
    func volumeStatus(_ name: String) throws(StrataError) -> VolumeStatus {
        guard let volume = try self.pool.listVolumes().first(where: { $0.name == name }) else {
            throw StrataError(.notFound, "status \(name): no such volume; `strata volume list` shows them")
        }
        var status = VolumeStatus(volume: name, sizeBytes: volume.sizeBytes)
        if let found = try self.pool.base(of: name) {
            let problem = found.problem
            status.base = found.descriptor.remote?.label ?? found.descriptor.path
            if let remote = found.descriptor.remote {
                status.remote = remote.remote
                status.remoteSnapshot = "\(remote.volume)@\(remote.snapshot)"
                status.hydration = try self.pool.isHydrating(name) ? "lazy" : "off"
                status.state = "idle"
                status.lastError = problem
                if problem == nil { self.countObjects(name, into: &status) }
            }
        }
        self.hydrator?.hydration(of: name)?.fill(&status)
        return status
    }

    /// Objects local and total from the engine's tree, and bytes the remote base fetched.
    private func countObjects(_ name: String, into status: inout VolumeStatus) {
        do throws(StrataError) {
            if let plan = try self.pool.hydrationPlan(name) {
                status.objectsTotal = plan.units.count
                status.objectsFetched = plan.local
            }
            if let base = try self.pool.baseImage(of: name) as? RemoteBase { status.bytesFetched = base.bytesFetched }
        } catch {
            status.lastError = error.message
        }
    }
}
