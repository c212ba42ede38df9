// Goal 3: diff between a snapshot and the live volume after 100 MiB of changes (1600 random
// 64 KiB chunk writes), in a small and in a large thin volume.
//
// Each volume gets the same base data, 1 GiB: in the 1 GiB volume that is every chunk; in the
// 64 GiB volume one chunk every 4 MiB (chunk index × 64), so the base is spread over the whole
// address space. Then a snapshot `base`, then 1600 distinct chunks chosen with a seeded PRNG
// over the whole volume are written whole, then a commit. `diff(from: "vol@base", to: "vol")` is
// timed: warm (tree nodes in the engine's cache; one untimed run first) and after reopening the
// pool (engine cache empty; the kernel's page cache still warm). Every result is checked: the
// data extents must add up to exactly the bytes written.

import StrataCore

struct DiffBench {
    struct Case {
        let label: String
        let volumeSize: UInt64
        let poolSize: UInt64
    }

    let cases: [Case]
    let baseBytes: UInt64
    let changedChunks: Int
    let warmRuns: Int
    let reopenRuns: Int
    let chunkSize: UInt64 = 64 << 10

    struct Result {
        var label = ""
        var warm: [Double] = []
        var reopened: [Double] = []
        var extents = 0
        var dataBytes: UInt64 = 0
    }

    func run() throws {
        var results: [Result] = []
        for item in self.cases { results.append(try self.measure(item)) }
        var table = Table(
            "Goal 3: diff vol@base → vol after \((UInt64(self.changedChunks) * self.chunkSize) >> 20) MiB of changes (\(self.changedChunks) random 64 KiB chunks)",
            [
                "volume", "extents", "changed MiB", "warm median (ms)", "warm min (ms)", "warm max (ms)",
                "after reopen median (ms)", "vs smallest (warm median)",
            ])
        let base = Stats.median(results[0].warm)
        for result in results {
            table.add([
                result.label, "\(result.extents)", "\(result.dataBytes >> 20)",
                Format.millis(Stats.median(result.warm)), Format.millis(result.warm.min()!),
                Format.millis(result.warm.max()!), Format.millis(Stats.median(result.reopened)),
                Format.ratio(Stats.median(result.warm) / base),
            ])
        }
        table.notes = [
            "Base data \(self.baseBytes >> 20) MiB per volume (all of the 1 GiB volume; one 64 KiB chunk per 4 MiB of the 64 GiB volume), snapshot, then the changes, then a commit.",
            "warm: \(self.warmRuns) timed runs after one untimed run; after reopen: first diff after `close()` + `Pool.open`, \(self.reopenRuns) times.",
            "Goal: the two within 2x of each other and under 50 ms.",
        ]
        table.print()
    }

    private func measure(_ item: Case) throws -> Result {
        let name = "diff-\(item.volumeSize >> 30)g"
        var pool: Pool! = try BenchDirectory.freshPool(name, size: item.poolSize)
        defer { BenchDirectory.remove(name) }
        var result = Result(label: item.label)
        try pool.createVolume("vol", size: item.volumeSize)
        let handle = try pool.handle("vol")
        let chunks = item.volumeSize / self.chunkSize
        let baseChunks = self.baseBytes / self.chunkSize
        let stride = chunks / baseChunks
        let buffer = patternBuffer(Int(self.chunkSize))
        defer { buffer.deallocate() }
        log("diff: \(item.label): base data")
        for index in 0..<baseChunks {
            try pool.write(handle, at: index * stride * self.chunkSize, UnsafeRawBufferPointer(buffer))
        }
        try pool.flush()
        try pool.createSnapshot("vol", "base")
        try pool.flush()
        let changed = permutation(Int(chunks), seed: 0xD1FF_0003).prefix(self.changedChunks)
        let changeBuffer = patternBuffer(Int(self.chunkSize), seed: 0x3C)
        defer { changeBuffer.deallocate() }
        for chunk in changed {
            try pool.write(handle, at: chunk * self.chunkSize, UnsafeRawBufferPointer(changeBuffer))
        }
        try pool.flush()

        log("diff: \(item.label): timing")
        _ = try self.timedDiff(pool, item, &result)
        for _ in 0..<self.warmRuns { result.warm.append(try self.timedDiff(pool, item, &result)) }
        for _ in 0..<self.reopenRuns {
            try pool.close()
            // The old object holds the directory's lock until it is freed.
            pool = nil
            pool = try Pool.open(directory: BenchDirectory.root + "/" + name)
            result.reopened.append(try self.timedDiff(pool, item, &result))
        }
        try pool.close()
        return result
    }

    private func timedDiff(_ pool: Pool, _ item: Case, _ result: inout Result) throws -> Double {
        let start = nowNanos()
        let extents = try pool.diff(from: "vol@base", to: "vol")
        let seconds = secondsSince(start)
        let dataBytes = extents.filter { $0.kind == .data }.reduce(UInt64(0)) { $0 + $1.length }
        let expected = UInt64(self.changedChunks) * self.chunkSize
        // A wrong answer is an engine bug: report it instead of timing it.
        guard dataBytes == expected, !extents.contains(where: { $0.kind == .zero }) else {
            throw BenchError(
                "diff \(item.label): data extents cover \(dataBytes) bytes (expected \(expected)), zero extents \(extents.filter { $0.kind == .zero }.count) (expected 0)"
            )
        }
        result.extents = extents.count
        result.dataBytes = dataBytes
        return seconds
    }
}
