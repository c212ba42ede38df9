// A front end's lane runs its requests in a `TapScope`: a mirrored write may return before its
// leg holds it, but the scope does not end (and so no reply goes out) before every leg holds
// every write of the lane; overlapping writes from lanes running at once still land in the same
// order on the volume and on the leg.

import Dispatch
import StrataCore
@testable import StrataMirror
import StrataTesting
import Synchronization
import Testing

@Suite struct MirrorDeferredTests {
    let degraded = MirrorDegradedTests()

    func legBytes(_ legPool: Pool, at offset: UInt64) throws -> [UInt8] {
        try legPool.read(try legPool.handle("vm1"), at: offset, count: MirrorDegradedTests.block)
    }

    @Test func aScopeEndsOnlyOnceItsLegsHoldItsWrites() throws {
        let (pool, legPool, _, runtime, leg) = try self.degraded.connected(timeoutMillis: 0)
        let handle = try pool.handle("vm1")
        // A deadline makes the leg's writes run on a worker, so the writer need not wait for them.
        runtime.with { $0.record.timeoutMillis = 60_000 }
        leg.fault.withLock { $0 = .block }
        let offsets = [3, 4, 200].map { UInt64($0 * MirrorDegradedTests.block) }
        try TapScope.run { () throws in
            for (index, offset) in offsets.enumerated() { try pool.write(handle, at: offset, self.degraded.bytes(index)) }
            // Every write returned while the leg held none of them.
            for (index, offset) in offsets.enumerated() {
                #expect(try self.legBytes(legPool, at: offset) != self.degraded.bytes(index))
            }
            leg.fault.withLock { $0 = .none }
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) {
                for _ in offsets { leg.released.signal() }
            }
        }
        // The scope waited for the leg.
        for (index, offset) in offsets.enumerated() {
            #expect(try self.legBytes(legPool, at: offset) == self.degraded.bytes(index))
        }
        #expect(runtime.state == .connected)
    }

    @Test func overlappingWritesOfLanesAtOnceLandInOneOrderOnBothCopies() throws {
        let (pool, legPool, _, runtime, _) = try self.degraded.connected(timeoutMillis: 0)
        runtime.with { $0.record.timeoutMillis = 60_000 }
        let handle = try pool.handle("vm1")
        let blocks = Int(MirrorDegradedTests.size) / MirrorDegradedTests.block
        let failures = Mutex<[String]>([])
        // Four lanes, each batch eight writes at random places (overlapping its own and the
        // others' often: 256 blocks in 16 chunks), some of them flushed with FUA.
        DispatchQueue.concurrentPerform(iterations: 4) { lane in
            var random = SystemRandomNumberGenerator()
            for batch in 0..<100 {
                do throws(StrataError) {
                    try TapScope.run { () throws(StrataError) in
                        for write in 0..<8 {
                            let block = Int.random(in: 0..<blocks, using: &random)
                            let length = MirrorDegradedTests.block * Int.random(in: 1...3, using: &random)
                            let seed = lane &* 100_000 &+ batch &* 10 &+ write
                            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &+ seed) }
                            let offset = UInt64(min(block, blocks - 3) * MirrorDegradedTests.block)
                            try pool.write(handle, at: offset, bytes, fua: write == 7 && batch % 10 == 0)
                        }
                    }
                } catch {
                    failures.withLock { $0.append(error.message) }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(runtime.state == .connected)
        let size = Int(MirrorDegradedTests.size)
        #expect(
            try pool.read(handle, at: 0, count: size) == legPool.read(try legPool.handle("vm1"), at: 0, count: size),
            "the leg differs from the volume")
    }
}
