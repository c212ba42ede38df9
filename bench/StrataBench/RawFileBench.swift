// Goal 4: the engine against a plain file on the same filesystem, single thread, same bytes,
// durable at the end.
//
// `run-engine.sh` interleaves the three sides of each repetition: fio (psync, buffered,
// --end_fsync=1, so fio's runtime includes the final fsync), the engine, and a bare pwrite loop,
// each in its own `StrataBench rawfile-step` (engine, pwrite) or fio process, in an order that
// rotates from one repetition to the next (fio-engine-pwrite, engine-pwrite-fio,
// pwrite-fio-engine), so no side always runs first after the previous pattern's write-back.
// `StrataBench rawfile` then reads every result and reports medians and the median of the
// per-repetition ratios.
//
// Patterns, every one on a fresh target:
// - random: a target of `randomBytes` written in full first, then every 4 KiB block written once
//   in a seeded random order, then fsync / `flush()`. The file targets are prefilled with
//   64 KiB writes, because that is how the engine's pool file gets written (one pwrite per
//   chunk); fio also runs on a file prefilled with 1 MiB writes, since on the reference kernel
//   4 KiB overwrites of a file written in 1 MiB pieces ran about 4x slower (large page-cache
//   folios), which would make the engine look better than it is.
// - sequential: `sequentialBytes` in 1 MiB writes, in order, into a new sparse file or a new
//   volume of a new pool, then fsync / `flush()`.
// The pwrite loop (same offsets and sizes, fdatasync at the end) is the floor the engine's own
// overhead sits on; fio adds per-I/O work of its own (random map, latency statistics).

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

struct RawFileBench {
    enum Pattern: String { case random, sequential }

    let fioDirectory: String
    let randomBytes: UInt64
    let sequentialBytes: UInt64

    enum Side: String { case engine, pwrite }

    // MARK: One repetition of one side

    /// Runs `side` once for `pattern` and records the figure in `PATTERN-SIDE-REP.txt`.
    func step(_ pattern: Pattern, _ side: Side, repetition: Int) throws {
        let value: Double
        switch (pattern, side) {
        case (.random, .engine): value = try self.engineRandom()
        case (.random, .pwrite): value = try self.plainRandom()
        case (.sequential, .engine): value = try self.engineSequential()
        case (.sequential, .pwrite): value = try self.plainSequential()
        }
        let path = "\(self.fioDirectory)/\(pattern.rawValue)-\(side.rawValue)-\(repetition).txt"
        guard FileManager.default.createFile(atPath: path, contents: Data("\(value)\n".utf8)) else {
            throw BenchError("cannot write \(path)")
        }
    }

    private func engineRandom() throws -> Double {
        let pool = try BenchDirectory.freshPool("rawfile", size: self.randomBytes + (1 << 30))
        defer { BenchDirectory.remove("rawfile") }
        try pool.createVolume("rand", size: self.randomBytes)
        let handle = try pool.handle("rand")
        _ = try fill(pool, handle, size: self.randomBytes)
        try pool.flush()
        let order = permutation(Int(self.randomBytes / 4096), seed: 0xF10_0004)
        let buffer = patternBuffer(4096)
        defer { buffer.deallocate() }
        syncFilesystems()
        log("rawfile: engine, 4 KiB random writes")
        let start = nowNanos()
        for block in order { try pool.write(handle, at: block * 4096, UnsafeRawBufferPointer(buffer)) }
        try pool.flush()
        let rate = Double(order.count) / secondsSince(start)
        try pool.close()
        return rate
    }

    private func engineSequential() throws -> Double {
        let pool = try BenchDirectory.freshPool("rawfile", size: self.sequentialBytes + (1 << 30))
        defer { BenchDirectory.remove("rawfile") }
        try pool.createVolume("seq", size: self.sequentialBytes)
        let handle = try pool.handle("seq")
        try pool.flush()
        syncFilesystems()
        log("rawfile: engine, 1 MiB sequential writes")
        let start = nowNanos()
        _ = try fill(pool, handle, size: self.sequentialBytes)
        try pool.flush()
        let rate = Double(self.sequentialBytes) / secondsSince(start)
        try pool.close()
        return rate
    }

    private func plainRandom() throws -> Double {
        let path = try Self.plainPath("rand.dat")
        defer { BenchDirectory.remove("rawfile-plain") }
        let file = try PlainFile(path: path)
        defer { file.close() }
        let chunk = patternBuffer(64 << 10)
        defer { chunk.deallocate() }
        for offset in stride(from: UInt64(0), to: self.randomBytes, by: 64 << 10) {
            try file.write(UnsafeRawBufferPointer(chunk), at: offset)
        }
        try file.sync()
        let order = permutation(Int(self.randomBytes / 4096), seed: 0xF10_0004)
        let small = patternBuffer(4096)
        defer { small.deallocate() }
        syncFilesystems()
        log("rawfile: pwrite loop, 4 KiB random writes")
        let start = nowNanos()
        for block in order { try file.write(UnsafeRawBufferPointer(small), at: block * 4096) }
        try file.sync()
        return Double(order.count) / secondsSince(start)
    }

    private func plainSequential() throws -> Double {
        let path = try Self.plainPath("seq.dat")
        defer { BenchDirectory.remove("rawfile-plain") }
        let file = try PlainFile(path: path)
        defer { file.close() }
        let large = patternBuffer(1 << 20)
        defer { large.deallocate() }
        syncFilesystems()
        log("rawfile: pwrite loop, 1 MiB sequential writes")
        let start = nowNanos()
        for offset in stride(from: UInt64(0), to: self.sequentialBytes, by: 1 << 20) {
            try file.write(UnsafeRawBufferPointer(large), at: offset)
        }
        try file.sync()
        return Double(self.sequentialBytes) / secondsSince(start)
    }

    /// A path in a fresh `BENCH_DIR/rawfile-plain`.
    private static func plainPath(_ name: String) throws -> String {
        BenchDirectory.remove("rawfile-plain")
        let directory = BenchDirectory.root + "/rawfile-plain"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/" + name
    }

    // MARK: Report

    struct Runs {
        var fio: [Double] = []
        var engine: [Double] = []
        var pwrite: [Double] = []

        /// Median of per-repetition engine / baseline.
        func ratio(_ baseline: [Double]) -> Double {
            Stats.median(zip(self.engine, baseline).map { $0 / $1 })
        }
    }

    /// Prints the comparison from the fio reports and the recorded steps.
    func report() throws {
        var random = Runs()
        var random1M: [Double] = []
        var sequential = Runs()
        for index in 1... {
            guard let fio = try self.loadFio("random-fio-\(index).json") else { break }
            guard let fio1M = try self.loadFio("random1m-fio-\(index).json"),
                let fioSequential = try self.loadFio("sequential-fio-\(index).json")
            else {
                throw BenchError("run \(index): random1m-fio-\(index).json or sequential-fio-\(index).json missing")
            }
            for (name, run, expected) in [
                ("random", fio, self.randomBytes), ("random1m", fio1M, self.randomBytes),
                ("sequential", fioSequential, self.sequentialBytes),
            ] where run.ioBytes != expected {
                log("warning: fio \(name)-\(index) wrote \(run.ioBytes) bytes; the engine writes \(expected)")
            }
            random.fio.append(fio.iops)
            random1M.append(fio1M.iops)
            random.engine.append(try self.loadStep(.random, .engine, index))
            random.pwrite.append(try self.loadStep(.random, .pwrite, index))
            sequential.fio.append(fioSequential.bytesPerSecond / 1_048_576)
            sequential.engine.append(try self.loadStep(.sequential, .engine, index) / 1_048_576)
            sequential.pwrite.append(try self.loadStep(.sequential, .pwrite, index) / 1_048_576)
        }
        guard !random.fio.isEmpty else {
            throw BenchError(
                "no random-fio-1.json in \(self.fioDirectory); run bench/run-engine.sh, which runs fio first")
        }
        var table = Table(
            "Goal 4: engine vs plain file, 1 thread, buffered, durable at the end (medians of \(random.fio.count) interleaved runs)",
            ["workload", "file (fio)", "engine", "engine / fio", "goal", "file (pwrite loop)", "engine / pwrite loop"])
        let randomLabel = "4 KiB random write IOPS, \(self.randomBytes >> 20) MiB, fully written target"
        table.add([
            randomLabel + " (file prefilled with 64 KiB writes)", Format.count(Stats.median(random.fio)),
            Format.count(Stats.median(random.engine)), Format.ratio(random.ratio(random.fio)), "≥ 0.80",
            Format.count(Stats.median(random.pwrite)), Format.ratio(random.ratio(random.pwrite)),
        ])
        table.add([
            randomLabel + " (fio file prefilled with 1 MiB writes)", Format.count(Stats.median(random1M)),
            Format.count(Stats.median(random.engine)), Format.ratio(random.ratio(random1M)), "≥ 0.80", "–", "–",
        ])
        table.add([
            "1 MiB sequential write MiB/s, \(self.sequentialBytes >> 20) MiB, new target",
            Format.count(Stats.median(sequential.fio)), Format.count(Stats.median(sequential.engine)),
            Format.ratio(sequential.ratio(sequential.fio)), "≥ 0.90", Format.count(Stats.median(sequential.pwrite)),
            Format.ratio(sequential.ratio(sequential.pwrite)),
        ])
        func list(_ values: [Double]) -> String { values.map { Format.count($0) }.joined(separator: ", ") }
        table.notes = [
            "Ratios are medians of the per-repetition ratios; within a repetition the three sides ran seconds apart, in an order rotated each repetition. The final fsync / `flush()` is inside every timed interval.",
            "Random IOPS per run: fio \(list(random.fio)); fio (1 MiB prefill) \(list(random1M)); engine \(list(random.engine)); pwrite loop \(list(random.pwrite)).",
            "Sequential MiB/s per run: fio \(list(sequential.fio)); engine \(list(sequential.engine)); pwrite loop \(list(sequential.pwrite)).",
            "Engine random target: a new pool and volume written in full with 1 MiB engine writes (one 64 KiB pwrite per chunk) and flushed, then every 4 KiB block once in seeded random order. Engine sequential target: a new pool and volume.",
        ]
        table.print()
    }

    struct FioRun {
        let ioBytes: UInt64
        let iops: Double
        let bytesPerSecond: Double
    }

    /// Reads one fio JSON report from the fio directory; nil when the file does not exist.
    private func loadFio(_ name: String) throws -> FioRun? {
        let path = "\(self.fioDirectory)/\(name)"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        // fio may print warnings before the JSON document.
        guard let brace = data.firstIndex(of: UInt8(ascii: "{")) else { throw BenchError("\(path): no JSON") }
        let document = try JSONSerialization.jsonObject(with: data[brace...])
        guard let root = document as? [String: Any], let jobs = root["jobs"] as? [[String: Any]],
            let write = jobs.first?["write"] as? [String: Any],
            let ioBytes = (write["io_bytes"] as? NSNumber)?.uint64Value,
            let iops = (write["iops"] as? NSNumber)?.doubleValue,
            let bandwidth = (write["bw_bytes"] as? NSNumber)?.doubleValue
        else { throw BenchError("\(path): not a fio JSON report with a write section") }
        return FioRun(ioBytes: ioBytes, iops: iops, bytesPerSecond: bandwidth)
    }

    private func loadStep(_ pattern: Pattern, _ side: Side, _ index: Int) throws -> Double {
        let path = "\(self.fioDirectory)/\(pattern.rawValue)-\(side.rawValue)-\(index).txt"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BenchError(
                "\(path) missing; run `StrataBench rawfile-step \(pattern.rawValue) --side \(side.rawValue) --rep \(index)`"
            )
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let value = Double(text) else { throw BenchError("\(path): not a number") }
        return value
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
        self.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
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
