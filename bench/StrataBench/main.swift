// StrataBench: engine benchmarks for the goals in bench/README.md. Release builds only
// (`bench/run-engine.sh` builds and runs it). Prints markdown tables on stdout, progress on
// stderr; reports medians and ratios and never fails on a timing.
//
// Usage: StrataBench [snapshot-io] [snapshot-create] [diff] [rawfile] [options]
//   (no benchmark names = all; rawfile needs --fio)
//   --seconds N       seconds per timed IOPS measurement (default 5)
//   --fio DIR         directory of fio JSON reports (rand-N.json, seq-N.json) for rawfile
//   --rand-mib N      bytes of the 4 KiB random-write comparison, in MiB (default 1024)
//   --seq-mib N       bytes of the 1 MiB sequential-write comparison, in MiB (default 2048)
//   --reps N          repetitions of each rawfile run (default 3)
//   --quick           small sizes, for checking the harness (numbers not comparable)
// Pools go under $BENCH_DIR (default /work/bench-tmp) and are deleted afterwards.

import Foundation
import StrataCore

struct Options {
    var benchmarks: [String] = []
    var seconds = 5
    var fioDirectory: String?
    var randomMiB: UInt64 = 1024
    var sequentialMiB: UInt64 = 2048
    var repetitions = 3
    var quick = false

    static let known = ["snapshot-io", "snapshot-create", "diff", "rawfile"]

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        func value(_ flag: String) throws -> String {
            guard let next = iterator.next() else { throw BenchError("\(flag) needs a value") }
            return next
        }
        func number(_ flag: String) throws -> Int {
            let text = try value(flag)
            guard let number = Int(text), number > 0 else { throw BenchError("\(flag): not a positive number: \(text)") }
            return number
        }
        while let argument = iterator.next() {
            switch argument {
            case "--seconds": options.seconds = try number(argument)
            case "--fio": options.fioDirectory = try value(argument)
            case "--rand-mib": options.randomMiB = UInt64(try number(argument))
            case "--seq-mib": options.sequentialMiB = UInt64(try number(argument))
            case "--reps": options.repetitions = try number(argument)
            case "--quick": options.quick = true
            case _ where Self.known.contains(argument): options.benchmarks.append(argument)
            default:
                throw BenchError("unknown argument \(argument); benchmarks: \(Self.known.joined(separator: ", "))")
            }
        }
        if options.benchmarks.isEmpty {
            options.benchmarks = Self.known.filter { $0 != "rawfile" || options.fioDirectory != nil }
        }
        return options
    }
}

let gib: UInt64 = 1 << 30
let mib: UInt64 = 1 << 20

func runBenchmarks(_ options: Options) throws {
    let quick = options.quick
    for name in options.benchmarks {
        let start = nowNanos()
        switch name {
        case "snapshot-io":
            try SnapshotIOBench(
                volumeSize: quick ? 256 * mib : 4 * gib, snapshotCounts: [0, 1, 10, 100, 1000, 0], threadCounts: [1, 4],
                seconds: quick ? 1 : options.seconds
            ).run()
        case "snapshot-create":
            try SnapshotCreateBench(
                volumeSize: quick ? 1 * gib : 16 * gib, poolSize: quick ? 8 * gib : 20 * gib, count: 1000,
                writesBetween: 4, buckets: [0..<100, 100..<500, 500..<1000]
            ).run()
        case "diff":
            try DiffBench(
                cases: [
                    .init(label: "1 GiB", volumeSize: 1 * gib, poolSize: 16 * gib),
                    .init(label: "64 GiB", volumeSize: 64 * gib, poolSize: 16 * gib),
                ],
                baseBytes: 1 * gib, changedChunks: 1600, warmRuns: quick ? 3 : 11, reopenRuns: 3
            ).run()
        case "rawfile":
            guard let directory = options.fioDirectory else { throw BenchError("rawfile needs --fio DIR") }
            try RawFileBench(
                fioDirectory: directory, randomBytes: options.randomMiB * mib, sequentialBytes: options.sequentialMiB * mib,
                repetitions: options.repetitions
            ).run()
        default:
            preconditionFailure("unknown benchmark \(name)")
        }
        log("\(name): done in \(Format.seconds(secondsSince(start))) s")
    }
}

do {
    let options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
    try runBenchmarks(options)
} catch {
    log("error: \(error)")
    exit(1)
}
