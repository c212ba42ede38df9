// Split points taken at once by two callers (a detach and the worker's periodic split point, as
// bench/run-mirror.sh met them): each takes its own generation, and none deletes a newer pair
// than its own, so the newest generation the leg records always exists on both sides. Before
// the fix a detach failed with "split point ..split.leg1.N is missing".

import Dispatch
import Foundation
import StrataCore
@testable import StrataMirror
import StrataTesting
import Synchronization
import Testing

@Suite struct MirrorSplitPointRaceTests {
    @Test func concurrentSplitPointsKeepTheNewestPairOnBothSides() throws {
        let tests = MirrorCoordinatorTests()
        let (pair, coordinator) = try tests.connected()
        let mirrored = try #require(coordinator.mirroredVolumeForTests("vm1"))
        let runtime = try #require(mirrored.legs.first)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            for _ in 0..<25 {
                do throws(StrataError) {
                    try mirrored.takeSplitPoint(runtime)
                } catch {
                    failures.withLock { $0.append(error.message) }
                }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        let (leg, generation) = runtime.with { ($0.record.leg, $0.record.generation) }
        let newest = MirrorLegRecord.splitPointName(leg: leg, generation: generation)
        #expect(try pair.pool.hiddenSnapshots(of: "vm1").contains(newest))
        #expect(try tests.leg(coordinator).pool.hiddenSnapshots(of: "vm1").contains(newest))
        // Changes are tracked from it: a detach and an attach work.
        _ = try coordinator.execute(.detach(volume: "vm1", leg: nil, as: nil, writable: false))
        _ = try coordinator.execute(.attach(volume: "vm1", leg: nil, full: false, rate: nil))
        coordinator.runUntilIdle()
        #expect(try tests.status(coordinator).state == .connected)
    }
}
