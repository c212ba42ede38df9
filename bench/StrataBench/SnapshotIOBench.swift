// Goal 1: 4 KiB random overwrite and read IOPS on a fully written volume with 0, 1, 10, 100 and
// 1000 snapshots taken after the fill.
//
// One pool, one volume, filled once with 1 MiB writes. Each round deletes the previous round's
// snapshots (and commits, so their chunks are free again), then takes N snapshots back to back:
// every chunk of the volume is then shared, as right after a fill. The last round repeats
// N = 0 (after deleting the 1000), so the table shows how far two identical configurations
// differ on this machine: the noise band for every other ratio. Per round:
// 1. First touch: one 4 KiB write at a random 4 KiB slot of every chunk, chunks in a seeded
//    random order, so every write (N > 0) copies its 64 KiB chunk. The first half of the chunks
//    runs on 1 thread, the second half on 4. With N = 0 these writes go in place.
// 2. Commit, then steady state (every chunk now owned by the volume alone): random 4 KiB
//    overwrites, then random 4 KiB reads, each for `seconds` on 1 and on 4 threads. The figure
//    is the median of the per-second IOPS samples. Offsets come from a PRNG seeded per thread
//    with the same seeds every round, so each round issues the same offsets.
// A commit and a kernel sync run before every timed phase, so no phase pays for an earlier
// phase's write-back, and then `prime` reads the whole volume twice (see there for why).

import StrataCore

struct SnapshotIOBench {
    let volumeSize: UInt64
    let snapshotCounts: [Int]
    let threadCounts: [Int]
    let seconds: Int
    let ioSize = 4096
    let chunkSize: UInt64 = 64 << 10

    struct Round {
        var snapshots = 0
        var repeated = false
        var label: String { self.repeated ? "\(self.snapshots) (repeat)" : "\(self.snapshots)" }
        var createSeconds = 0.0
        var firstTouch: [Int: Double] = [:]
        var steadyWrite: [Int: Double] = [:]
        var steadyRead: [Int: Double] = [:]
    }

    func run() throws {
        // Live data plus one full copy held by the snapshots, plus room for the maps.
        let pool = try BenchDirectory.freshPool("snapshot-io", size: self.volumeSize * 2 + (2 << 30))
        defer { BenchDirectory.remove("snapshot-io") }
        try pool.createVolume("vol", size: self.volumeSize)
        let handle = try pool.handle("vol")
        log("snapshot-io: filling \(self.volumeSize >> 20) MiB")
        let fillSeconds = try fill(pool, handle, size: self.volumeSize)
        let flushStart = nowNanos()
        try pool.flush()
        let fillFlushSeconds = secondsSince(flushStart)

        var rounds: [Round] = []
        var existing = 0
        for count in self.snapshotCounts {
            for index in 0..<existing { try pool.deleteSnapshot("vol", "s\(index)") }
            try pool.flush()
            var round = Round(snapshots: count, repeated: rounds.contains { $0.snapshots == count })
            let createStart = nowNanos()
            for index in 0..<count { try pool.createSnapshot("vol", "s\(index)") }
            try pool.flush()
            round.createSeconds = secondsSince(createStart)
            existing = count
            try self.measure(pool, handle, &round)
            rounds.append(round)
        }
        try pool.close()
        self.report(rounds, fillSeconds: fillSeconds, fillFlushSeconds: fillFlushSeconds)
    }

    private func measure(_ pool: Pool, _ handle: VolumeHandle, _ round: inout Round) throws {
        let chunks = Int(self.volumeSize / self.chunkSize)
        let order = permutation(chunks, seed: 0x5EED_0001)
        let slotsPerChunk = self.chunkSize / UInt64(self.ioSize)
        let offsets = order.map { chunk in
            var rng = SplitMix64(seed: chunk ^ 0xC0FF_EE00)
            return chunk * self.chunkSize + rng.next(below: slotsPerChunk) * UInt64(self.ioSize)
        }
        // First touch: halves of the permutation, so each thread count copies different chunks.
        let halves = [Array(offsets[0..<(chunks / 2)]), Array(offsets[(chunks / 2)...])]
        for (half, threads) in zip(halves, [1, 4]) where self.threadCounts.contains(threads) {
            syncFilesystems()
            try prime(pool, handle, size: self.volumeSize)
            log("snapshot-io: \(round.snapshots) snapshots, first touch, \(threads) thread(s)")
            let seconds = try fixedRun(threads: threads, items: half) { _, slice in
                let buffer = patternBuffer(self.ioSize)
                defer { buffer.deallocate() }
                for offset in slice { try pool.write(handle, at: offset, UnsafeRawBufferPointer(buffer)) }
            }
            round.firstTouch[threads] = Double(half.count) / seconds
        }
        // Any chunk a missing thread count left shared gets copied here, untimed.
        let buffer = patternBuffer(self.ioSize)
        defer { buffer.deallocate() }
        for (half, threads) in zip(halves, [1, 4]) where !self.threadCounts.contains(threads) {
            for offset in half { try pool.write(handle, at: offset, UnsafeRawBufferPointer(buffer)) }
        }
        try pool.flush()

        let blocks = self.volumeSize / UInt64(self.ioSize)
        let ioSize = self.ioSize
        for threads in self.threadCounts {
            try pool.flush()
            syncFilesystems()
            try prime(pool, handle, size: self.volumeSize)
            log("snapshot-io: \(round.snapshots) snapshots, steady overwrite, \(threads) thread(s)")
            let rates = try timedRun(threads: threads, intervals: self.seconds) { index, control in
                var rng = SplitMix64(seed: 0xABCD_0000 + UInt64(index))
                let buffer = patternBuffer(ioSize, seed: UInt8(index))
                defer { buffer.deallocate() }
                while !control.shouldStop {
                    let offset = rng.next(below: blocks) * UInt64(ioSize)
                    try pool.write(handle, at: offset, UnsafeRawBufferPointer(buffer))
                    control.completed()
                }
            }
            log("  per-second IOPS: \(rates.map { Format.count($0) }.joined(separator: " "))")
            round.steadyWrite[threads] = Stats.median(rates)
        }
        try pool.flush()
        for threads in self.threadCounts {
            syncFilesystems()
            try prime(pool, handle, size: self.volumeSize)
            log("snapshot-io: \(round.snapshots) snapshots, random read, \(threads) thread(s)")
            let rates = try timedRun(threads: threads, intervals: self.seconds) { index, control in
                var rng = SplitMix64(seed: 0xBEEF_0000 + UInt64(index))
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ioSize, alignment: 4096)
                defer { buffer.deallocate() }
                while !control.shouldStop {
                    let offset = rng.next(below: blocks) * UInt64(ioSize)
                    try pool.read(handle, at: offset, into: buffer)
                    control.completed()
                }
            }
            log("  per-second IOPS: \(rates.map { Format.count($0) }.joined(separator: " "))")
            round.steadyRead[threads] = Stats.median(rates)
        }
    }

    private func report(_ rounds: [Round], fillSeconds: Double, fillFlushSeconds: Double) {
        let size = "\(self.volumeSize >> 30) GiB"
        var header = ["snapshots", "create all + flush (s)"]
        for threads in [1, 4] where self.threadCounts.contains(threads) { header.append("first-touch write \(threads)T") }
        for threads in self.threadCounts { header.append("steady write \(threads)T") }
        for threads in self.threadCounts { header.append("read \(threads)T") }
        var table = Table("Goal 1: 4 KiB random IOPS on a fully written \(size) volume (64 KiB chunks) vs snapshot count", header)
        for round in rounds {
            var row = [round.label, Format.seconds(round.createSeconds)]
            for threads in [1, 4] where self.threadCounts.contains(threads) {
                row.append(Format.count(round.firstTouch[threads] ?? 0))
            }
            for threads in self.threadCounts { row.append(Format.count(round.steadyWrite[threads] ?? 0)) }
            for threads in self.threadCounts { row.append(Format.count(round.steadyRead[threads] ?? 0)) }
            table.add(row)
        }
        table.notes = [
            "Fill: \(size) with 1 MiB writes in \(Format.seconds(fillSeconds)) s (\(Format.mibPerSecond(Double(self.volumeSize), fillSeconds)) MiB/s), then flush \(Format.seconds(fillFlushSeconds)) s.",
            "first-touch: one 4 KiB write into each chunk once, chunks in random order (half the chunks on 1 thread, the other half on 4); with snapshots every such write copies its 64 KiB chunk (with 0 snapshots it writes in place). IOPS over the whole pass.",
            "steady write / read: random 4 KiB offsets (seeded PRNG), \(self.seconds) s each after the first-touch pass and a commit; median of 1-second IOPS samples.",
        ]
        table.print()

        guard let base = rounds.first(where: { $0.snapshots == 0 }) else { return }
        var ratioHeader = ["snapshots"]
        for threads in self.threadCounts { ratioHeader.append("steady write \(threads)T / 0 snaps") }
        for threads in self.threadCounts { ratioHeader.append("read \(threads)T / 0 snaps") }
        var ratios = Table("Goal 1: ratios to the first 0-snapshot round (goal: steady write at 1000 snapshots ≥ 0.90; reads ≈ 1.00)", ratioHeader)
        for round in rounds {
            var row = [round.label]
            for threads in self.threadCounts {
                row.append(Format.ratio((round.steadyWrite[threads] ?? 0) / (base.steadyWrite[threads] ?? 1)))
            }
            for threads in self.threadCounts {
                row.append(Format.ratio((round.steadyRead[threads] ?? 0) / (base.steadyRead[threads] ?? 1)))
            }
            ratios.add(row)
        }
        ratios.print()
    }
}
