// Goal 2: snapshot create latency, p50/p99, on a fully written volume with 0 to `count` existing
// snapshots, in memory (`createSnapshot`) and durable (`createSnapshot` then `flush`).
//
// The volume is filled with 1 MiB writes and committed (both timed and reported). Before each
// create, a few random 4 KiB writes change the volume (so consecutive snapshots differ, and each
// create follows copied chunks and shadowed tree paths, as in real use) and are committed
// (that commit is timed separately, as the disk's commit cost at the moment). Then the create
// is timed alone, and then the flush that makes it durable; the durable latency is their sum.
// Latencies are grouped by how many snapshots existed before.

import StrataCore

struct SnapshotCreateBench {
    let volumeSize: UInt64
    let poolSize: UInt64
    let count: Int
    let writesBetween: Int
    let buckets: [Range<Int>]

    func run() throws {
        let pool = try BenchDirectory.freshPool("snapshot-create", size: self.poolSize)
        defer { BenchDirectory.remove("snapshot-create") }
        try pool.createVolume("vol", size: self.volumeSize)
        let handle = try pool.handle("vol")
        log("snapshot-create: filling \(self.volumeSize >> 20) MiB")
        let fillSeconds = try fill(pool, handle, size: self.volumeSize)
        let flushStart = nowNanos()
        try pool.flush()
        let flushSeconds = secondsSince(flushStart)
        syncFilesystems()

        var createSeconds: [Double] = []
        var durableSeconds: [Double] = []
        var writesFlushSeconds: [Double] = []
        var rng = SplitMix64(seed: 0x5A45_0002)
        let buffer = patternBuffer(4096)
        defer { buffer.deallocate() }
        log("snapshot-create: \(self.count) creates")
        for index in 0..<self.count {
            for _ in 0..<self.writesBetween {
                let offset = rng.next(below: self.volumeSize / 4096) * 4096
                try pool.write(handle, at: offset, UnsafeRawBufferPointer(buffer))
            }
            let writesFlushStart = nowNanos()
            try pool.flush()
            writesFlushSeconds.append(secondsSince(writesFlushStart))
            let start = nowNanos()
            try pool.createSnapshot("vol", "s\(index)")
            let created = nowNanos()
            try pool.flush()
            let durable = nowNanos()
            createSeconds.append(Double(created - start) / 1e9)
            durableSeconds.append(Double(durable - start) / 1e9)
        }
        let listed = try pool.listSnapshots(of: "vol").count
        try pool.close()

        var table = Table(
            "Goal 2: snapshot create latency on a fully written \(Format.size(self.volumeSize)) volume (64 KiB chunks)",
            [
                "existing snapshots", "creates", "create p50 (µs)", "create p99 (µs)", "create max (µs)",
                "create+flush p50 (ms)", "create+flush p99 (ms)", "create+flush max (ms)",
                "flush of the writes before, p50 (ms)",
            ])
        for bucket in self.buckets + [0..<self.count] where bucket.upperBound <= self.count {
            let create = Array(createSeconds[bucket])
            let durable = Array(durableSeconds[bucket])
            table.add([
                bucket == 0..<self.count
                    ? "all (\(bucket.lowerBound)–\(bucket.upperBound - 1))"
                    : "\(bucket.lowerBound)–\(bucket.upperBound - 1)",
                "\(bucket.count)",
                Format.micros(Stats.quantile(create, 0.5)), Format.micros(Stats.quantile(create, 0.99)),
                Format.micros(create.max()!),
                Format.millis(Stats.quantile(durable, 0.5)), Format.millis(Stats.quantile(durable, 0.99)),
                Format.millis(durable.max()!), Format.millis(Stats.quantile(Array(writesFlushSeconds[bucket]), 0.5)),
            ])
        }
        let first = Stats.median(Array(createSeconds[self.buckets.first!]))
        let last = Stats.median(Array(createSeconds[self.buckets.last!]))
        table.notes = [
            "Fill: \(Format.size(self.volumeSize)) with 1 MiB writes in \(Format.seconds(fillSeconds)) s (\(Format.mibPerSecond(Double(self.volumeSize), fillSeconds)) MiB/s), then flush \(Format.seconds(flushSeconds)) s (\(Format.mibPerSecond(Double(self.volumeSize), fillSeconds + flushSeconds)) MiB/s including the flush).",
            "Before each create: \(self.writesBetween) random 4 KiB writes (each copies a chunk the previous snapshot shares) and a flush, outside the create's timing; that flush's own latency is the last column, for scale: it shows what a commit costs on the disk at that moment. create = `createSnapshot` alone; create+flush = `createSnapshot` then `flush()` (durable).",
            "Median create in the last bucket / first bucket: \(Format.ratio(last / first)). Snapshots listed at the end: \(listed).",
        ]
        table.print()
    }
}
