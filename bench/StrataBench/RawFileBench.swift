// Goal 4: the engine against a plain file on the same filesystem, single thread, same bytes,
// durable at the end.
//
// `run-engine.sh` runs fio first and leaves its JSON reports in a directory (rand-N.json for
// 4 KiB random writes into a fully written file, seq-N.json for 1 MiB sequential writes into a
// new file; psync, buffered, --end_fsync=1, so fio's runtime includes the final fsync). This
// file does the same with the engine: 4 KiB writes, every block once in a seeded random order,
// into a fully written volume, then `flush()`; and 1 MiB writes in order into a new volume, then
// `flush()`. Each side's figure is the median over its repetitions; the ratio is engine / file.
//
// fio spends time of its own per I/O (random map, latency statistics), so a third column does
// the same pattern as a bare pwrite loop on a plain file from this process, with fdatasync at
// the end: the floor the engine's own overhead sits on.

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

struct RawFileBench {
    let fioDirectory: String
    let randomBytes: UInt64
    let sequentialBytes: UInt64
    let repetitions: Int

    struct FioRun {
        let ioBytes: UInt64
        let iops: Double
        let bytesPerSecond: Double
    }

    func run() throws {
        let fioRandom = try self.loadFio(prefix: "rand")
        let fioSequential = try self.loadFio(prefix: "seq")
        for run in fioRandom where run.ioBytes != self.randomBytes {
            log("warning: fio random run wrote \(run.ioBytes) bytes, engine writes \(self.randomBytes)")
        }
        for run in fioSequential where run.ioBytes != self.sequentialBytes {
            log("warning: fio sequential run wrote \(run.ioBytes) bytes, engine writes \(self.sequentialBytes)")
        }

        let pool = try BenchDirectory.freshPool(
            "rawfile", size: self.randomBytes + self.sequentialBytes + (1 << 30))
        defer { BenchDirectory.remove("rawfile") }
        let (random, fillSeconds) = try self.randomWrites(pool)
        let sequential = try self.sequentialWrites(pool)
        try pool.close()
        let (plainRandom, plainSequential) = try self.plainFileWrites()

        let fileIOPS = Stats.median(fioRandom.map(\.iops))
        let engineIOPS = Stats.median(random)
        let fileRate = Stats.median(fioSequential.map(\.bytesPerSecond)) / 1_048_576
        let engineRate = Stats.median(sequential) / 1_048_576
        let plainIOPS = Stats.median(plainRandom)
        let plainRate = Stats.median(plainSequential) / 1_048_576
        var table = Table(
            "Goal 4: engine vs plain file (fio psync), 1 thread, buffered, durable at the end",
            ["workload", "file (fio)", "engine", "engine / fio", "goal", "file (pwrite loop)", "engine / pwrite loop"])
        table.add([
            "4 KiB random write IOPS, \(self.randomBytes >> 20) MiB, fully written target", Format.count(fileIOPS),
            Format.count(engineIOPS), Format.ratio(engineIOPS / fileIOPS), "≥ 0.80", Format.count(plainIOPS),
            Format.ratio(engineIOPS / plainIOPS),
        ])
        table.add([
            "1 MiB sequential write MiB/s, \(self.sequentialBytes >> 20) MiB, new target", Format.count(fileRate),
            Format.count(engineRate), Format.ratio(engineRate / fileRate), "≥ 0.90", Format.count(plainRate),
            Format.ratio(engineRate / plainRate),
        ])
        func list(_ values: [Double]) -> String { values.map { Format.count($0) }.joined(separator: ", ") }
        table.notes = [
            "Medians of \(self.repetitions) runs each; the final fsync / `flush()` is inside the timed interval on both sides.",
            "fio random IOPS per run: \(list(fioRandom.map(\.iops))); engine: \(list(random)).",
            "fio sequential MiB/s per run: \(list(fioSequential.map { $0.bytesPerSecond / 1_048_576 })); engine: \(list(sequential.map { $0 / 1_048_576 })).",
            "pwrite loop: the same offsets and sizes with pwrite(2) on a plain file in BENCH_DIR, fdatasync at the end (random: file written with 1 MiB writes and synced first; sequential: a new sparse file per run). IOPS per run: \(list(plainRandom)); MiB/s per run: \(list(plainSequential.map { $0 / 1_048_576 })).",
            "Engine random target: a \(self.randomBytes >> 20) MiB volume filled with 1 MiB writes and flushed first (\(Format.seconds(fillSeconds)) s); every 4 KiB block written once in seeded random order. Engine sequential target: a new volume per run, deleted and committed afterwards.",
        ]
        table.print()
    }

    private func randomWrites(_ pool: Pool) throws -> ([Double], Double) {
        try pool.createVolume("rand", size: self.randomBytes)
        let handle = try pool.handle("rand")
        log("rawfile: filling the random-write volume")
        let fillStart = nowNanos()
        _ = try fill(pool, handle, size: self.randomBytes)
        try pool.flush()
        let fillSeconds = secondsSince(fillStart)
        let order = permutation(Int(self.randomBytes / 4096), seed: 0xF10_0004)
        let buffer = patternBuffer(4096)
        defer { buffer.deallocate() }
        var rates: [Double] = []
        for repetition in 0..<self.repetitions {
            syncFilesystems()
            log("rawfile: engine 4 KiB random writes, run \(repetition + 1)")
            let start = nowNanos()
            for block in order { try pool.write(handle, at: block * 4096, UnsafeRawBufferPointer(buffer)) }
            try pool.flush()
            rates.append(Double(order.count) / secondsSince(start))
        }
        return (rates, fillSeconds)
    }

    private func sequentialWrites(_ pool: Pool) throws -> [Double] {
        var rates: [Double] = []
        for repetition in 0..<self.repetitions {
            try pool.createVolume("seq", size: self.sequentialBytes)
            let handle = try pool.handle("seq")
            try pool.flush()
            syncFilesystems()
            log("rawfile: engine 1 MiB sequential writes, run \(repetition + 1)")
            let start = nowNanos()
            _ = try fill(pool, handle, size: self.sequentialBytes)
            try pool.flush()
            rates.append(Double(self.sequentialBytes) / secondsSince(start))
            try pool.deleteVolume("seq")
            try pool.flush()
        }
        return rates
    }

    /// The same two patterns with bare pwrite(2) and a final fdatasync on plain files.
    private func plainFileWrites() throws -> ([Double], [Double]) {
        let directory = BenchDirectory.root + "/rawfile-plain"
        BenchDirectory.remove("rawfile-plain")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { BenchDirectory.remove("rawfile-plain") }
        let large = patternBuffer(1 << 20)
        defer { large.deallocate() }
        let small = patternBuffer(4096)
        defer { small.deallocate() }

        let randomPath = directory + "/rand.dat"
        let randomFile = try PlainFile(path: randomPath)
        for offset in stride(from: UInt64(0), to: self.randomBytes, by: 1 << 20) {
            try randomFile.write(UnsafeRawBufferPointer(large), at: offset)
        }
        try randomFile.sync()
        let order = permutation(Int(self.randomBytes / 4096), seed: 0xF10_0004)
        var random: [Double] = []
        for repetition in 0..<self.repetitions {
            syncFilesystems()
            log("rawfile: pwrite loop 4 KiB random writes, run \(repetition + 1)")
            let start = nowNanos()
            for block in order { try randomFile.write(UnsafeRawBufferPointer(small), at: block * 4096) }
            try randomFile.sync()
            random.append(Double(order.count) / secondsSince(start))
        }
        randomFile.close()
        unlink(randomPath)

        var sequential: [Double] = []
        for repetition in 0..<self.repetitions {
            let path = directory + "/seq.dat"
            unlink(path)
            let file = try PlainFile(path: path)
            syncFilesystems()
            log("rawfile: pwrite loop 1 MiB sequential writes, run \(repetition + 1)")
            let start = nowNanos()
            for offset in stride(from: UInt64(0), to: self.sequentialBytes, by: 1 << 20) {
                try file.write(UnsafeRawBufferPointer(large), at: offset)
            }
            try file.sync()
            sequential.append(Double(self.sequentialBytes) / secondsSince(start))
            file.close()
            unlink(path)
        }
        return (random, sequential)
    }

    /// Reads `prefix-N.json` fio reports (N = 1...) from the fio directory.
    private func loadFio(prefix: String) throws -> [FioRun] {
        var runs: [FioRun] = []
        for index in 1... {
            let path = "\(self.fioDirectory)/\(prefix)-\(index).json"
            guard let data = FileManager.default.contents(atPath: path) else { break }
            // fio may print warnings before the JSON document.
            guard let brace = data.firstIndex(of: UInt8(ascii: "{")) else { throw BenchError("\(path): no JSON") }
            let document = try JSONSerialization.jsonObject(with: data[brace...])
            guard let root = document as? [String: Any], let jobs = root["jobs"] as? [[String: Any]],
                let write = jobs.first?["write"] as? [String: Any],
                let ioBytes = (write["io_bytes"] as? NSNumber)?.uint64Value,
                let iops = (write["iops"] as? NSNumber)?.doubleValue,
                let bandwidth = (write["bw_bytes"] as? NSNumber)?.doubleValue
            else { throw BenchError("\(path): not a fio JSON report with a write section") }
            runs.append(FioRun(ioBytes: ioBytes, iops: iops, bytesPerSecond: bandwidth))
        }
        guard !runs.isEmpty else {
            throw BenchError("no \(prefix)-1.json in \(self.fioDirectory); run bench/run-engine.sh, which runs fio first")
        }
        return runs
    }
}

/// A benchmark setup problem (missing input, bad arguments).
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A plain file for the pwrite baseline.
final class PlainFile {
    let fd: Int32
    let path: String

    init(path: String) throws {
        self.path = path
        self.fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if self.fd < 0 { throw BenchError("open \(path): \(String(cString: strerror(errno)))") }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let written = pwrite(self.fd, bytes.baseAddress, bytes.count, off_t(offset))
        if written != bytes.count { throw BenchError("pwrite \(self.path): \(String(cString: strerror(errno)))") }
    }

    func sync() throws {
        if fdatasync(self.fd) != 0 { throw BenchError("fdatasync \(self.path): \(String(cString: strerror(errno)))") }
    }

    func close() { Glibc.close(self.fd) }
}
